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
#       org.opencontainers.image.ref.name); --name REF names it instead, and
#       is required when the archive holds only a tag or no name.
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
[ -z "$name" ] || [[ "${name##*/}" == *:* ]] ||
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

# Decide each image's name before importing, and write it into index.json as
# io.containerd.image.name, the one name `ctr images import` takes as it is.
# (Left to ctr, a bare tag becomes "import-DATE:TAG", and such names, once
# deleted, linger in the CRI plugin's image list in containerd 1.6.) An
# index.json that is itself a multi-arch index (one entry per platform, as
# go-containerregistry's layout.Write of an index makes it) becomes a blob with
# a one-entry index.json naming it: imported as it is, ctr would give the name
# to every platform's entry in turn, and the last one listed would keep it.
# Prints the archive to import, then its image names; a changed archive is
# written to $tmp/named.tar.
plan=$(python3 - "$archive" "$tmp/named.tar" "$name" <<'EOF'
import hashlib, io, json, sys, tarfile
src, out_path, want = sys.argv[1:4]
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
t = tarfile.open(src)
names = {m.name.removeprefix("./"): m.name for m in t.getmembers()}
if "index.json" not in names:
    if "manifest.json" not in names:
        sys.exit(f"{src}: neither an OCI archive (index.json) nor a docker save archive (manifest.json)")
    if want:
        sys.exit(f"{src}: --name is not supported for docker save archives (docker tag the image before saving)")
    print(src)
    for m in json.load(t.extractfile(names["manifest.json"])):
        for tag in m.get("RepoTags") or []:
            print(tag)
    sys.exit()
idx = json.load(t.extractfile(names["index.json"]))

def name_of(m):
    a = m.get("annotations") or {}
    n = a.get("io.containerd.image.name") or a.get("org.opencontainers.image.ref.name") or ""
    return n if any(c in n for c in "/:@") else ""  # a bare tag ("0.1.0") names nothing

extra = []
ms = idx.get("manifests") or []
if len(ms) > 1 and all("platform" in m for m in ms):
    shared = {name_of(m) for m in ms}
    idx.setdefault("mediaType", OCI_INDEX)
    blob = json.dumps(idx).encode()
    dig = "sha256:" + hashlib.sha256(blob).hexdigest()
    extra.append(("blobs/sha256/" + dig[7:], blob))
    ms = [{"mediaType": idx["mediaType"], "digest": dig, "size": len(blob),
           "annotations": {"io.containerd.image.name": shared.pop() if len(shared) == 1 else ""}}]
if want:
    if len(ms) != 1:
        sys.exit(f"{src}: --name needs an archive with one image; it has {len(ms)}")
changed = bool(extra)
for m in ms:
    n = want or name_of(m)
    if not n:
        sys.exit(f"{src}: an image in it ({m['digest']}) has only a tag or no name: give it one with --name REPO:TAG")
    if (m.get("annotations") or {}).get("io.containerd.image.name") != n:
        m.setdefault("annotations", {})["io.containerd.image.name"] = n
        changed = True
if changed:
    top = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms}).encode()
    with tarfile.open(out_path, "w") as out:
        for m in t.getmembers():
            if m.name != names["index.json"]:
                out.addfile(m, t.extractfile(m) if m.isfile() else None)
        for fname, data in extra + [("index.json", top)]:
            ti = tarfile.TarInfo(fname)
            ti.size, ti.mode = len(data), 0o644
            out.addfile(ti, io.BytesIO(data))
print(out_path if changed else src)
for m in ms:
    print(m["annotations"]["io.containerd.image.name"])
EOF
) || die "cannot import $archive (see above)"
import_from=$(head -n1 <<<"$plan")
mapfile -t refs < <(tail -n +2 <<<"$plan")
[ ${#refs[@]} -gt 0 ] || die "$archive names no image (a docker save archive without RepoTags?)"

# --platform: fetch and unpack this machine's manifest and layers only.
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
ctr -a "$CLUSTER_SOCK" -n k8s.io images import --platform "linux/$arch" "$import_from" >&2 ||
  die "ctr images import $archive failed (see above)"
# What matters is that the kubelet can use it: ask CRI, as the kubelet does.
for ref in "${refs[@]}"; do
  "$CLUSTER_STATE/bin/crictl" inspecti "$ref" >/dev/null 2>&1 ||
    die "$ref was imported but CRI does not see it (crictl inspecti $ref)"
  echo "loaded $ref (linux/$arch)"
done
