#!/usr/bin/env bash
# Builds the envtest control plane (etcd, kube-apiserver, kubectl) from their Go
# modules through the module proxy. Prebuilt downloads (setup-envtest, GitHub
# releases) cannot be reached from the machines this project is built on.
#
# The binaries land in bin/k8s/<kube-version>/ (git-ignored). They are also kept
# in a per-user cache outside the work tree ($TOKENSTORE_TOOLS_CACHE, default
# ~/.cache/tokenstore-tools) so that a fresh clone on the same machine (CI)
# reuses them instead of spending ten minutes rebuilding.
#
# Prints the asset directory on its last line, for KUBEBUILDER_ASSETS.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TOKENSTORE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenstore-tools}"
dest="$root/bin/k8s/$KUBE_VERSION"
cached="$cache/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$dest" "$cached"

have() { [ -x "$1/etcd" ] && [ -x "$1/kube-apiserver" ] && [ -x "$1/kubectl" ]; }

if have "$dest"; then echo "$dest"; exit 0; fi
if have "$cached"; then
  cp "$cached"/etcd "$cached"/kube-apiserver "$cached"/kubectl "$dest"/
  echo "$dest"; exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-mod=mod" CGO_ENABLED=0

if [ ! -x "$cached/etcd" ]; then
  echo ">> building etcd $ETCD_VERSION (about 2 minutes cold)" >&2
  mkdir -p "$work/etcd"
  cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work/etcd" && go mod init envtest/etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 \
    && go mod tidy >&2 \
    && go build -trimpath -ldflags='-s -w' -o "$cached/etcd" .)
fi

if [ ! -x "$cached/kube-apiserver" ] || [ ! -x "$cached/kubectl" ]; then
  echo ">> building kube-apiserver and kubectl $KUBE_VERSION (about 9 minutes cold)" >&2
  mkdir -p "$work/kube"
  cd "$work/kube"
  go mod init envtest/kube >/dev/null 2>&1
  # k8s.io/kubernetes replaces its staging modules with ./staging/...; a module
  # that depends on it must pin each of them to the matching published version.
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
  if [ ! -f "$modfile" ]; then
    go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
  fi
  staging_version="v0.${KUBE_VERSION#v1.}"
  grep -E '^\s*k8s.io/[^ ]+ => ./staging/' "$modfile" | awk '{print $1}' | while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  echo 'package tools' > doc.go
  go mod tidy -e >&2 || true
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  go build -tags tools -trimpath -ldflags "$ldflags" -o "$cached/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -tags tools -trimpath -ldflags "$ldflags" -o "$cached/kubectl" k8s.io/kubernetes/cmd/kubectl
fi

cp "$cached"/etcd "$cached"/kube-apiserver "$cached"/kubectl "$dest"/
echo "$dest"
