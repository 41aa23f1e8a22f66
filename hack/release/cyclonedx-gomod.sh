#!/usr/bin/env bash
# Prints the path of cyclonedx-gomod, building it on first use from the Go
# module proxy into the per-user tool cache, as hack/tools.sh does for the
# other tools (kept here so the release tool stays out of go.mod and of
# that script's list).
set -euo pipefail

spec="github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0"
cache="${TOKENSTORE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenstore-tools}"
bin="$cache/cyclonedx-gomod-${spec##*@}"
if [ ! -x "$bin" ]; then
	echo ">> building cyclonedx-gomod ${spec##*@}" >&2
	mkdir -p "$cache"
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS= go install -trimpath "$spec"
	mv "$tmp/cyclonedx-gomod" "$bin"
fi
echo "$bin"
