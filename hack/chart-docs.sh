#!/usr/bin/env bash
# Regenerates charts/tokenstore/README.md from the "# --" comments in
# charts/tokenstore/values.yaml (helm-docs is not reachable from the module
# proxy; hack/chart-docs is a small generator of our own).
# usage: hack/chart-docs.sh [-check]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
go run ./hack/chart-docs -chart charts/tokenstore "$@"
