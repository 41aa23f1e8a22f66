#!/usr/bin/env bash
# The cluster suite (test/cluster), as `make e2e-cluster` runs it:
#   1. the images: tokenstore from `make image` (bin/image/tokenstore.oci.tar,
#      imported under its own tag and an upgrade tag), and three test images
#      made of one static binary each (the dev identity provider, the client
#      example, a steady load client);
#   2. the local single-node cluster (hack/cluster/up.sh), unless
#      E2E_EXISTING_CLUSTER=1 says to use the cluster KUBECONFIG points at
#      (images already pushed where it pulls from: docs/install.md);
#   3. go test -tags cluster ./test/cluster/;
#   4. the cluster stopped again (hack/cluster/down.sh), unless E2E_KEEP=1.
# Needs root for the local cluster (it creates bridges, mounts and iptables rules).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="/usr/local/go/bin:$PATH"
step() { printf '>> [%4ds] %s\n' "$SECONDS" "$*"; }

upgrade_tag=${E2E_UPGRADE_TAG:-0.1.0-e2e.2}
export E2E_UPGRADE_TAG=$upgrade_tag
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/tokenstore/Chart.yaml)
export E2E_IMAGE_TAG=${E2E_IMAGE_TAG:-$app_version}
archive=${IMAGE_DIR:-bin/image}/tokenstore.oci.tar
[ -f "$archive" ] || { echo "hack/e2e-cluster.sh: $archive missing: run make image first" >&2; exit 1; }

step "building the test images' binaries (dev identity provider, client example, load client)"
hack/tools.sh helm
mkdir -p bin/e2e
CGO_ENABLED=0 go build -trimpath -tags dev -o bin/e2e/testidp ./test/cluster/testidp
CGO_ENABLED=0 go build -trimpath -o bin/e2e/example ./client/example
CGO_ENABLED=0 go build -trimpath -o bin/e2e/loadclient ./test/cluster/loadclient

if [ "${E2E_EXISTING_CLUSTER:-}" != 1 ]; then
  step "starting the local cluster"
  hack/cluster/up.sh
  if [ "${E2E_KEEP:-}" != 1 ]; then
    trap 'step "stopping the local cluster"; hack/cluster/down.sh || true' EXIT
  fi
  source hack/cluster/env.sh
  export PATH="$root/bin:$PATH"   # helm
  step "importing the images into the node's containerd"
  hack/cluster/load-image.sh "$archive" >/dev/null
  # The upgrade is to another tag of the same image: what a new release
  # changes in the pod template, without building twice.
  ctr images tag --force "ghcr.io/tokenstore/tokenstore:$E2E_IMAGE_TAG" "ghcr.io/tokenstore/tokenstore:$upgrade_tag" >/dev/null
  hack/cluster/load-image.sh --binary bin/e2e/testidp --name localhost/tokenstore-e2e/testidp:1 >/dev/null
  hack/cluster/load-image.sh --binary bin/e2e/example --name localhost/tokenstore-e2e/example:1 >/dev/null
  hack/cluster/load-image.sh --binary bin/e2e/loadclient --name localhost/tokenstore-e2e/loadclient:1 >/dev/null
else
  export PATH="$root/bin:$PATH"
fi

step "running test/cluster"
go test -tags cluster -count=1 -timeout 30m -v ./test/cluster/ 2>&1 | tee bin/e2e/cluster-test.log
step "cluster suite passed"
