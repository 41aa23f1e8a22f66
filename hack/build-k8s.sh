#!/usr/bin/env bash
# Builds every Kubernetes binary the tests need, once, from the Go module
# proxy: the control plane for envtest (etcd, kube-apiserver, kubectl) and the
# rest of a real single-node cluster (kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, crictl). Prebuilt downloads (setup-envtest, GitHub
# releases) cannot be reached from the machines this project is built on.
#
# One Kubernetes version serves both: v1.35 is the newest whose kubelet runs on
# cgroup v1 with containerd 1.6 (Debian 12), and building all six commands in
# one `go build` compiles the shared packages once (a cold build is the single
# largest cost of a fresh `make test`).
#
# The binaries are kept in a per-user cache outside the work tree
# ($TOKENSTORE_TOOLS_CACHE, default ~/.cache/tokenstore-tools) so a fresh clone
# on the same machine (CI) reuses them; a version change in this file builds
# into a new directory.
#
# usage: hack/build-k8s.sh     prints the directory holding the binaries on its last line
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.35.8}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.17}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
cache="${TOKENSTORE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenstore-tools}"
out="$cache/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$out"
export PATH="/usr/local/go/bin:$PATH"

kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
have() { for b in "$@"; do [ -x "$out/$b" ] || return 1; done; }
if have etcd crictl "${kube_cmds[@]}"; then echo "$out"; exit 0; fi

# One builder at a time: a second `make test` (or a benchmark script) waits
# for the first instead of compiling Kubernetes twice on two cores.
exec 9>"$out.lock"
if ! flock -n 9; then
  echo ">> another hack/build-k8s.sh is building $out; waiting for it" >&2
  flock 9
fi
if have etcd crictl "${kube_cmds[@]}"; then echo "$out"; exit 0; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-mod=mod" CGO_ENABLED=0
started=$SECONDS

# etcd and crictl refuse `go install` (replace directives in their go.mod): a
# wrapper module that imports their main package builds them.
wrapper() { # wrapper DIR MODULE VERSION IMPORT
  mkdir -p "$1"
  (cd "$1" && go mod init "local/$(basename "$1")" >/dev/null 2>&1 && go get "$2@$3" >&2)
}

if ! have etcd; then
  echo ">> building etcd $ETCD_VERSION (about 2 minutes cold)" >&2
  wrapper "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work/etcd" && go mod tidy >&2 && go build -trimpath -ldflags='-s -w' -o "$out/etcd.new" . && mv "$out/etcd.new" "$out/etcd")
fi

if ! have crictl; then
  echo ">> building crictl $CRICTL_VERSION (about 3 minutes cold)" >&2
  wrapper "$work/crictl" sigs.k8s.io/cri-tools "$CRICTL_VERSION"
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/cri-tools/cmd/crictl"\n' >"$work/crictl/tools.go"
  (cd "$work/crictl" && go mod tidy -e >&2 || true
   cd "$work/crictl" && go build -trimpath -ldflags='-s -w' -o "$out/crictl.new" sigs.k8s.io/cri-tools/cmd/crictl && mv "$out/crictl.new" "$out/crictl")
fi

if ! have "${kube_cmds[@]}"; then
  echo ">> building ${kube_cmds[*]} $KUBE_VERSION (about 16 minutes cold on 2 cores, with etcd and crictl)" >&2
  mkdir -p "$work/kube"
  cd "$work/kube"
  go mod init local/kube >/dev/null 2>&1
  # k8s.io/kubernetes replaces its staging modules with ./staging/...; a module
  # that depends on it must pin each of them to the matching published version.
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
  [ -f "$modfile" ] || go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
  staging_version="v0.${KUBE_VERSION#v1.}"
  grep -E '^\s*k8s.io/[^ ]+ => ./staging/' "$modfile" | awk '{print $1}' | while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${kube_cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >tools.go
  echo 'package tools' >doc.go
  go mod tidy -e >&2 || true
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  mkdir -p "$work/bin"
  pkgs=(); for c in "${kube_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  go build -tags tools -trimpath -ldflags "$ldflags" -o "$work/bin/" "${pkgs[@]}"
  for c in "${kube_cmds[@]}"; do mv "$work/bin/$c" "$out/$c"; done
fi

echo ">> Kubernetes binaries built in $((SECONDS - started)) s into $out" >&2
echo "$out"
