#!/usr/bin/env bash
# Copies the API reference page's files (Swagger UI, the version pinned in
# server/apidocs/package.json and package-lock.json) from npm into
# server/apidocs/dist/, where they are committed and embedded in the binary:
# the page loads nothing from a CDN, and `go build` needs no npm.
#
#   hack/apidocs.sh          update dist/ (after changing the pinned version)
#   hack/apidocs.sh -check   fail when dist/ differs from the pinned package
#                            (make verify runs this; it needs npm)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/server/apidocs"
command -v npm >/dev/null || { echo "apidocs: npm is needed (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$src/package.json" "$src/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
pkg="$work/node_modules/swagger-ui-dist"
files=(swagger-ui-bundle.js swagger-ui.css LICENSE)
version="$(node -p "require('$pkg/package.json').version")"
if [[ "${1:-}" == "-check" ]]; then
  fail=0
  for f in "${files[@]}"; do
    cmp -s "$pkg/$f" "$src/dist/$f" || { echo "apidocs: server/apidocs/dist/$f differs from swagger-ui-dist $version; run hack/apidocs.sh" >&2; fail=1; }
  done
  [[ "$(cat "$src/dist/VERSION" 2>/dev/null)" == "$version" ]] || { echo "apidocs: server/apidocs/dist/VERSION is not $version; run hack/apidocs.sh" >&2; fail=1; }
  exit $fail
fi
mkdir -p "$src/dist"
for f in "${files[@]}"; do cp "$pkg/$f" "$src/dist/$f"; done
echo "$version" > "$src/dist/VERSION"
echo "apidocs: swagger-ui-dist $version in server/apidocs/dist/"
