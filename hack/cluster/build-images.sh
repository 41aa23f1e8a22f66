#!/usr/bin/env bash
# Builds the two images the cluster itself runs, as OCI archives that up.sh
# imports into containerd (no registry can be reached from these machines):
#
#   pause    the pod sandbox (containerd's sandbox_image), from pause/main.go
#   coredns  cluster DNS, a minimal CoreDNS (coredns/main.go, version in go.mod)
#
# Both are cached in $CLUSTER_IMAGES (~/.cache/tokenstore-tools/cluster-images)
# under a name holding the version and a hash of their sources, so they are
# rebuilt only when go.mod/go.sum or a main.go changes (CoreDNS: about
# 3-4 minutes cold on 2 cores; pause: seconds).
#
# usage: hack/cluster/build-images.sh    prints "pause=ARCHIVE" and "coredns=ARCHIVE"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0 GOFLAGS=-mod=readonly
command -v go >/dev/null || { echo "build-images.sh: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "build-images.sh: python3 not found (apt-get install python3)" >&2; exit 1; }
mkdir -p "$CLUSTER_IMAGES"

# Two up.sh at once (two test runs) must not build into the same file.
exec 9>"$CLUSTER_IMAGES/.lock"
flock 9

sum() { (cd "$here" && cat "$@" | sha256sum | cut -c1-12); }
coredns_version=$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/coredns/coredns") {print $(i + 1); exit}}' "$here/go.mod")
[ -n "$coredns_version" ] || { echo "build-images.sh: no github.com/coredns/coredns line in $here/go.mod" >&2; exit 1; }
pause_tar=$CLUSTER_IMAGES/pause-${CLUSTER_PAUSE_IMAGE##*:}-$(sum go.mod pause/main.go).tar
coredns_tar=$CLUSTER_IMAGES/coredns-$coredns_version-$(sum go.mod go.sum coredns/main.go).tar

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build() { # build NAME IMAGE ARCHIVE USER: go build ./NAME, wrap it with mkimage.py
  local name=$1 image=$2 out=$3 user=$4 t0=$SECONDS
  [ -f "$out" ] && return 0
  echo ">> building $image (cached as $out)" >&2
  (cd "$here" && go build -trimpath -ldflags='-s -w' -o "$tmp/$name" "./$name") ||
    { echo "build-images.sh: go build ./$name failed (the module proxy must be reachable on a cold cache)" >&2; return 1; }
  python3 "$here/mkimage.py" --name "$image" --out "$tmp/image.tar" --entrypoint "/$name" --user "$user" "$tmp/$name:/$name" >&2
  mv "$tmp/image.tar" "$out.new" && mv "$out.new" "$out"  # never a half-written archive under the cached name
  # older versions of the same image are of no further use
  find "$CLUSTER_IMAGES" -maxdepth 1 -name "$name-*.tar" ! -path "$out" -delete
  echo ">> $image built in $((SECONDS - t0)) s" >&2
}
# 65535 is the conventional pause user; CoreDNS listens on 1053 so it needs no root.
build pause "$CLUSTER_PAUSE_IMAGE" "$pause_tar" 65535:65535
build coredns "$CLUSTER_COREDNS_IMAGE_REPO:$coredns_version" "$coredns_tar" 65532:65532
echo "pause=$pause_tar"
echo "coredns=$coredns_tar"
