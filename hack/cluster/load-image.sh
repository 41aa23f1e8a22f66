#!/usr/bin/env bash
# Puts an image into the running local cluster's containerd (namespace k8s.io,
# where the kubelet looks), without any registry.
#
#   load-image.sh ARCHIVE.tar [--name REF]
#       An OCI archive (single image or multi-arch index, e.g. `make image`'s
#       bin/image/tokenstore.oci.tar) or a `docker save` archive. Only this
#       machine's platform is imported (the other platforms' layers are not
#       needed to run here). The image keeps the name the archive gives it
#       (annotation io.containerd.image.name, or a full reference in
#       org.opencontainers.image.ref.name); --name REF sets or adds one, and
#       is required when the archive only holds a tag.
#   load-image.sh --binary FILE --name REF [--entrypoint /PATH] [--user UID:GID]
#       Wraps one static binary (CGO_ENABLED=0) into a single-layer image with
#       mkimage.py and imports that. --user defaults to 65532:65532 (non-root).
#
# Pods then use `image: REF` with imagePullPolicy IfNotPresent or Never, and
# never a :latest tag (that means pull Always, and there is nothing to pull from).
# A name without a registry is docker.io's: `local/x:1` is docker.io/local/x:1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
die() { echo "load-image.sh: $*" >&2; exit 1; }
usage() { sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2; }

archive="" binary="" name="" entrypoint="" user=65532:65532
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --entrypoint) entrypoint=${2:?}; shift 2 ;;
    --user) user=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "load-image.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$archive" ] || usage; archive=$1; shift ;;
  esac
done
{ [ -n "$archive" ] && [ -z "$binary" ]; } || { [ -z "$archive" ] && [ -n "$binary" ]; } || usage
[ -S "$CLUSTER_SOCK" ] && ctr -a "$CLUSTER_SOCK" version >/dev/null 2>&1 ||
  die "the cluster's containerd ($CLUSTER_SOCK) is not running: make cluster-up"
[ -z "$name" ] || [[ "${name##*/}" == *:* || "$name" == *@* ]] ||
  die "--name $name has no tag: use REPO:TAG (an untagged name means :latest, which pods always try to pull)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$binary" ]; then
  [ -n "$name" ] || die "--binary needs --name REPO:TAG"
  [ -f "$binary" ] || die "$binary: no such file"
  entrypoint=${entrypoint:-/$(basename "$binary")}
  python3 "$here/mkimage.py" --name "$name" --out "$tmp/image.tar" --entrypoint "$entrypoint" --user "$user" "$binary:$entrypoint" >&2
  archive=$tmp/image.tar
fi
[ -f "$archive" ] || die "$archive: no such file (for the tokenstore image: make image)"

# The archive's images: "DIGEST NAME" per entry of index.json (NAME "-" when it
# has none that ctr would use), or "docker" for a `docker save` archive.
entries=$(python3 - "$archive" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
names = set(t.getnames())
if "index.json" not in names and "./index.json" not in names:
    print("docker" if "manifest.json" in names or "./manifest.json" in names else "unknown")
    sys.exit()
idx = json.load(t.extractfile("index.json" if "index.json" in names else "./index.json"))
for m in idx.get("manifests", []):
    a = m.get("annotations") or {}
    n = a.get("io.containerd.image.name") or a.get("org.opencontainers.image.ref.name") or ""
    # a bare tag ("0.1.0") is no image name: ctr would file it as import-DATE:0.1.0
    print(m["digest"], n if any(c in n for c in "/:@") else "-")
EOF
) || die "$archive: cannot read it as a tar archive"
[ "$entries" != unknown ] || die "$archive: neither an OCI archive (index.json) nor a docker save archive (manifest.json)"

if [ "$entries" = docker ]; then
  [ -z "$name" ] || die "--name is not supported for docker save archives (docker tag the image before saving)"
else
  count=$(wc -l <<<"$entries")
  [ -z "$name" ] || [ "$count" = 1 ] || die "--name needs an archive with exactly one image; $archive has $count"
  [ -n "$name" ] || ! grep -q ' -$' <<<"$entries" ||
    die "$archive has an image with only a tag or no name at all: give it one with --name REPO:TAG"
fi

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
before=$(ctr -a "$CLUSTER_SOCK" -n k8s.io images ls -q)
# --digests: every entry also gets a DIGEST-named image, so an unnamed one can be tagged below.
# --platform: fetch and unpack this machine's manifest and layers, not every platform's.
ctr -a "$CLUSTER_SOCK" -n k8s.io images import --digests --platform "linux/$arch" "$archive" >&2 ||
  die "ctr images import $archive failed (see above)"
after=$(ctr -a "$CLUSTER_SOCK" -n k8s.io images ls -q)
new_refs=$(comm -13 <(sort <<<"$before") <(sort <<<"$after"))

# ref_of DIGEST: an image ctr just created for the entry with that digest.
# (awk reads to the end: an early exit would kill ctr with SIGPIPE under pipefail.)
ref_of() { ctr -a "$CLUSTER_SOCK" -n k8s.io images ls | awk -v d="$1" '$3 == d && !found {print $1; found = 1}'; }
in_loaded() { local l; for l in "${loaded[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }
loaded=()
if [ "$entries" = docker ]; then
  mapfile -t loaded < <(grep -v '^import-' <<<"$new_refs" | grep -v '^sha256:' || true)
else
  while read -r digest ref; do
    [ -z "$name" ] || ref=$name
    src=$(ref_of "$digest")
    [ -n "$src" ] || die "ctr imported no image for $digest"
    [ "$src" = "$ref" ] || ctr -a "$CLUSTER_SOCK" -n k8s.io images tag --force "$src" "$ref" >/dev/null
    loaded+=("$ref")
  done <<<"$entries"
fi
# ctr's helper names (import-DATE@sha256:..., import-DATE:TAG) are not wanted;
# the sha256:... names belong to CRI (its image ids) and stay.
for r in $new_refs; do
  [[ "$r" == import-* ]] || continue
  in_loaded "$r" || ctr -a "$CLUSTER_SOCK" -n k8s.io images rm "$r" >/dev/null
done
# What matters is that the kubelet can use it: ask CRI, as the kubelet does.
for ref in "${loaded[@]}"; do
  "$CLUSTER_STATE/bin/crictl" inspecti "$ref" >/dev/null 2>&1 ||
    die "$ref was imported but CRI does not see it (crictl inspecti $ref)"
  echo "loaded $ref (linux/$arch)"
done
