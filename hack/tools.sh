#!/usr/bin/env bash
# Installs the pinned code generators and linters into bin/ (git-ignored),
# built from the Go module proxy. Binaries are also kept in a per-user cache
# outside the work tree ($TOKENSTORE_TOOLS_CACHE, default
# ~/.cache/tokenstore-tools) so a fresh clone on the same machine reuses them.
#
# usage: hack/tools.sh [tool ...]     (default: all)
# tools: controller-gen sqlc staticcheck helm goose
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TOKENSTORE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenstore-tools}"
mkdir -p "$root/bin" "$cache"

declare -A pkg=(
  [controller-gen]="sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"
  [sqlc]="github.com/sqlc-dev/sqlc/cmd/sqlc@v1.31.1"
  [staticcheck]="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
  [helm]="helm.sh/helm/v3/cmd/helm@v3.22.0"
)

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(controller-gen sqlc staticcheck)

for t in "${tools[@]}"; do
  spec="${pkg[$t]:-}"
  if [ -z "$spec" ]; then echo "hack/tools.sh: unknown tool $t (known: ${!pkg[*]})" >&2; exit 2; fi
  version="${spec##*@}"
  cached="$cache/$t-$version"
  if [ ! -x "$cached" ]; then
    echo ">> building $t $version" >&2
    tmp="$(mktemp -d)"
    cgo=0; [ "$t" = sqlc ] && cgo=1   # sqlc's parser needs cgo (gcc is on the machine)
    GOBIN="$tmp" CGO_ENABLED=$cgo GOFLAGS= go install -trimpath "$spec"
    mv "$tmp/$t" "$cached"; rm -rf "$tmp"
  fi
  # a version-stamped copy, so a pin change in this file is picked up
  if ! cmp -s "$cached" "$root/bin/$t"; then cp "$cached" "$root/bin/$t"; fi
done
