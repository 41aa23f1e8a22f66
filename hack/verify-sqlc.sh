#!/usr/bin/env bash
# Fails when the committed sqlc output (internal/store/{postgres,sqlite}/db)
# differs from what the queries and migrations in sql/ generate: someone
# edited SQL without regenerating, or edited generated code by hand.
#
# It generates into a scratch copy of the tree, so the work tree is never
# touched, and compares whole directories, so a stale file left behind by a
# removed query file is caught too.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/hack/tools.sh" sqlc >/dev/null
sqlc="$root/bin/sqlc"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cp -R "$root/sql" "$tmp/sql"
outs=(internal/store/postgres/db internal/store/sqlite/db)
for d in "${outs[@]}"; do mkdir -p "$tmp/$d"; done

(cd "$tmp/sql" && "$sqlc" generate)

status=0
for d in "${outs[@]}"; do
  if ! diff -ru "$root/$d" "$tmp/$d"; then
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo >&2
  echo "hack/verify-sqlc.sh: generated sqlc code is out of date (diff above)." >&2
  echo "Regenerate with: (cd sql && ../bin/sqlc generate)" >&2
  exit 1
fi
echo "sqlc output is up to date"
