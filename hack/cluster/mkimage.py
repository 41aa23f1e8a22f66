#!/usr/bin/env python3
"""Build an OCI image archive from static binaries, offline, with the Python
standard library only (no registry, no daemon, no buildah on these machines).

usage: mkimage.py --name REF --out OUT.tar --entrypoint /app [--cmd ARG ...]
                  [--user UID:GID] [--env K=V ...]
                  [--platform OS/ARCH=SRC ...] SRC[:DEST] [SRC[:DEST] ...]

Each image has one uncompressed layer holding the files (plus /tmp). Without
--platform the archive's index.json points at a single manifest for this
machine's platform. With --platform (repeatable) it points at an image index
with one manifest per platform, like a multi-arch `make image` archive; for
each extra platform, SRC replaces the first file's source (a binary built for
that architecture).

index.json names the image twice: io.containerd.image.name (the full
reference, what `ctr images import` uses) and org.opencontainers.image.ref.name
(the tag only, as the OCI image-layout spec has it).
"""
import argparse, hashlib, io, json, os, platform, tarfile

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def host_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def add(tf, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    tf.addfile(ti, io.BytesIO(data))


def blob(tf, data, written):
    d = hashlib.sha256(data).hexdigest()
    if d not in written:  # the same config or layer may serve two platforms
        written.add(d)
        add(tf, "blobs/sha256/" + d, data)
    return {"digest": "sha256:" + d, "size": len(data)}


def layer(files):
    """An uncompressed layer tar of [(src, dest)], parent directories and /tmp included."""
    buf, dirs = io.BytesIO(), set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as lt:
        for src, dest in files:
            parts = dest.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dn = "/".join(parts[:i])
                if dn not in dirs:
                    dirs.add(dn)
                    ti = tarfile.TarInfo(dn)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    lt.addfile(ti)
            with open(src, "rb") as f:
                data = f.read()
            add(lt, dest, data, 0o755 if os.access(src, os.X_OK) else 0o644)
        ti = tarfile.TarInfo("tmp")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o1777
        lt.addfile(ti)
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="full reference, e.g. ghcr.io/tokenstore/smoke:1")
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", nargs="+", required=True)
    p.add_argument("--cmd", nargs="*", default=None)
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--platform", action="append", default=[], metavar="OS/ARCH=SRC")
    p.add_argument("files", nargs="+", metavar="SRC[:DEST]")
    a = p.parse_args()
    if ":" in a.name.rsplit("/", 1)[-1]:
        tag = a.name.rsplit(":", 1)[1]
    else:
        p.error("--name needs a tag (REPO:TAG): an untagged name means :latest, which pods always try to pull")

    files = []
    for spec in a.files:
        src, _, dest = spec.partition(":")
        files.append((src, (dest or "/" + os.path.basename(src)).lstrip("/")))
    variants = [("linux", host_arch(), files)]
    for spec in a.platform:
        plat, _, src = spec.partition("=")
        os_, _, arch = plat.partition("/")
        if not (os_ and arch and src):
            p.error("--platform takes OS/ARCH=SRC, e.g. linux/arm64=bin/smoke-arm64")
        if arch == host_arch():
            continue  # the positional files already are this machine's variant
        variants.append((os_, arch, [(src, files[0][1])] + files[1:]))

    written = set()
    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as tf:
        manifests = []
        for os_, arch, fs in variants:
            lay = layer(fs)
            cfg = {"architecture": arch, "os": os_,
                   "config": {"Entrypoint": a.entrypoint, "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + a.env},
                   "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(lay).hexdigest()]},
                   "history": [{"created_by": "hack/cluster/mkimage.py"}]}
            if a.cmd is not None:
                cfg["config"]["Cmd"] = a.cmd
            if a.user:
                cfg["config"]["User"] = a.user
            man = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": dict(mediaType="application/vnd.oci.image.config.v1+json",
                                  **blob(tf, json.dumps(cfg).encode(), written)),
                   "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **blob(tf, lay, written))]}
            manifests.append(dict(mediaType=OCI_MANIFEST, **blob(tf, json.dumps(man).encode(), written),
                                  platform={"architecture": arch, "os": os_}))
        if len(manifests) == 1:
            top = manifests[0]
        else:
            idx = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                   "manifests": manifests}
            top = dict(mediaType=OCI_INDEX, **blob(tf, json.dumps(idx).encode(), written))
        top["annotations"] = {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag}
        add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tf, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}).encode())
    kind = "index of " + ", ".join(f"{o}/{ar}" for o, ar, _ in variants) if len(variants) > 1 else "manifest"
    print(f"{a.out}: {a.name} ({kind} {top['digest']})")


if __name__ == "__main__":
    main()
