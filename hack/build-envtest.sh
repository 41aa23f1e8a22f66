#!/usr/bin/env bash
# The envtest control plane (etcd, kube-apiserver, kubectl): the same
# Kubernetes build the real single-node cluster uses (hack/build-k8s.sh, from
# the Go module proxy; prebuilt downloads cannot be reached here), copied
# into bin/k8s/<kube-version>/ (git-ignored).
#
# Prints the asset directory on its last line, for KUBEBUILDER_ASSETS.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
KUBE_VERSION="$(sed -n 's/^KUBE_VERSION="\${KUBE_VERSION:-\(v[0-9.]*\)}"$/\1/p' "$root/hack/build-k8s.sh")"
dest="$root/bin/k8s/$KUBE_VERSION"
mkdir -p "$dest"

have() { [ -x "$1/etcd" ] && [ -x "$1/kube-apiserver" ] && [ -x "$1/kubectl" ]; }
if have "$dest"; then echo "$dest"; exit 0; fi

built="$("$root/hack/build-k8s.sh" | tail -n1)"
for b in etcd kube-apiserver kubectl; do cp "$built/$b" "$dest/$b.tmp" && mv "$dest/$b.tmp" "$dest/$b"; done
echo "$dest"
