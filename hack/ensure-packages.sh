#!/usr/bin/env bash
# Installs the Debian packages the tests use, with one apt-get run, when any
# is missing (test tools' own downloads are not reachable from this kind of
# machine; Debian's packages are):
#   chromium   the page's browser tests (test/e2e drives /usr/bin/chromium)
#   skopeo     test/image copies and inspects the image as a registry would
#   containerd, runc, containernetworking-plugins, conntrack, iptables
#              the local single-node cluster of the cluster suite
#              (hack/cluster/up.sh checks them again)
set -euo pipefail

declare -A pkg_of=(
  [/usr/bin/chromium]=chromium
  [/usr/bin/skopeo]=skopeo
  [/usr/bin/containerd]=containerd
  [/usr/sbin/runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/sbin/conntrack]=conntrack
  [/usr/sbin/iptables]=iptables
)
missing=()
for f in "${!pkg_of[@]}"; do
  [ -x "$f" ] || missing+=("${pkg_of[$f]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo ">> installing ${missing[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
