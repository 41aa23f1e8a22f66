#!/usr/bin/env bash
# make release: every artifact of a tokenstore release, into RELEASE_DIR
# (default bin/release; docs/release.md says what each is and how to publish
# it):
#
#   tokenstore-image/            OCI image layout: the linux/amd64+arm64 image, tag VERSION
#   tokenstore-image.oci.tar     the same as an OCI archive
#   tokenstore-linux-amd64       the static binaries (the very files inside the image)
#   tokenstore-linux-arm64
#   tokenstore-VERSION.tgz       the Helm chart, version and appVersion VERSION
#   tokenstore-linux-*.cdx.json  CycloneDX SBOMs of the binaries (cyclonedx-gomod)
#   tokenstore-image.cdx.json    CycloneDX SBOM of the image (both binaries + Debian packages)
#   SHA256SUMS                   sha256sum -c checks every file above but the layout
#
# Environment (the Makefile passes them): VERSION (semver; a leading v is
# dropped), COMMIT, LDFLAGS, RELEASE_DIR; ALLOW_DIRTY=1 releases from a work
# tree with uncommitted changes (for tests; the binaries would name a commit
# they do not match).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

version="${VERSION:-}"
version="${version#v}"
commit="${COMMIT:?COMMIT is not set: run make release}"
ldflags="${LDFLAGS:?LDFLAGS is not set: run make release}"
out="${RELEASE_DIR:-bin/release}"

# semver.org's grammar, in POSIX ERE.
num='(0|[1-9][0-9]*)'
ident='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)'
semver="^$num\.$num\.$num(-$ident(\.$ident)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?\$"
if ! [[ $version =~ $semver ]]; then
	echo "make release: VERSION=${VERSION:-} is not a semantic version; give one such as VERSION=0.1.0 or VERSION=v0.1.0-rc.1" >&2
	exit 2
fi

if [ -n "$(git status --porcelain)" ] && [ "${ALLOW_DIRTY:-}" != 1 ]; then
	echo "make release: the work tree has uncommitted changes (git status); the release would not be commit $commit." >&2
	echo "  Commit or stash them, or set ALLOW_DIRTY=1 for a trial release." >&2
	exit 2
fi
if ! git tag --points-at HEAD | grep -qxF "v$version"; then
	echo "note: HEAD is not tagged v$version; the SBOMs will give the module a pseudo-version (docs/release.md: tag first)" >&2
fi

# The output directory is emptied, but only when it is one this script
# wrote (its marker file), so RELEASE_DIR=. cannot wipe a checkout.
marker=.tokenstore-release
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
	if [ ! -e "$out/$marker" ]; then
		echo "make release: $out is not empty and was not written by make release; remove it or choose another RELEASE_DIR" >&2
		exit 2
	fi
	rm -rf "$out"
fi
mkdir -p "$out"
echo "$version $commit" >"$out/$marker"

steps=5
t0=$SECONDS
step() { printf '>> [%d/%d] %s (%ds)\n' "$1" "$steps" "$2" $((SECONDS - t0)) >&2; }

step 1 "image and static binaries for linux/amd64 and linux/arm64 (the first arm64 build compiles every dependency: minutes)"
go run ./hack/image -version "$version" -commit "$commit" -ldflags "$ldflags" \
	-out "$out/tokenstore-image" -archive "$out/tokenstore-image.oci.tar" -bindir "$out"
if [ "$(uname -m)" = x86_64 ]; then
	# The binaries were built by the command above; this is what a user's
	# first look at them shows.
	got="$("$out/tokenstore-linux-amd64" version)"
	case "$got" in
	"tokenstore $version (commit $commit,"*) ;;
	*) echo "make release: tokenstore-linux-amd64 version printed: $got" >&2; exit 1 ;;
	esac
fi

step 2 "Helm chart $version"
hack/tools.sh helm
bin/helm package charts/tokenstore --version "$version" --app-version "$version" --destination "$out" >&2

step 3 "SBOMs (CycloneDX: cyclonedx-gomod for the binaries, plus Debian packages for the image)"
cdx="$(hack/release/cyclonedx-gomod.sh)"
for arch in amd64 arm64; do
	log="$(mktemp)"
	# The environment of the binary's build: the SBOM lists the modules and
	# the standard library that build links.
	if ! GOOS=linux GOARCH=$arch CGO_ENABLED=0 GOFLAGS= "$cdx" app -json -licenses -std \
		-main cmd/tokenstore -output "$out/tokenstore-linux-$arch.cdx.json" . 2>"$log"; then
		cat "$log" >&2
		rm -f "$log"
		echo "make release: cyclonedx-gomod failed for linux/$arch" >&2
		exit 1
	fi
	rm -f "$log"
	echo "   tokenstore-linux-$arch.cdx.json" >&2
done
go run ./hack/release/imagesbom -version "$version" -layout "$out/tokenstore-image" \
	-out "$out/tokenstore-image.cdx.json" "$out/tokenstore-linux-amd64.cdx.json" "$out/tokenstore-linux-arm64.cdx.json"
echo "   tokenstore-image.cdx.json" >&2

step 4 "SHA256SUMS"
(
	cd "$out"
	find . -maxdepth 1 -type f ! -name SHA256SUMS ! -name "$marker" -printf '%f\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS
	sha256sum --quiet -c SHA256SUMS
)

step 5 "done"
(cd "$out" && ls -lh --time-style=+ | sed 1d | awk '{printf "   %-8s %s\n", $5, $NF}') >&2
digest="$(grep -m1 -o 'sha256:[0-9a-f]\{64\}' "$out/tokenstore-image/index.json")"
echo "release $version of commit $commit in $out; image ghcr.io/tokenstore/tokenstore:$version $digest" >&2
echo "publish it as docs/release.md says" >&2
