#!/usr/bin/env bash
# Fails if the committed deepcopy, CRD or RBAC differ from what
# hack/generate-k8s.sh makes of the current sources. It generates into a
# temporary copy of the tree, so the work tree is never modified.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$root/bin/controller-gen" ] || "$root/hack/tools.sh" controller-gen

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Only what generation reads and writes; bin/ is linked, not copied.
cp -a "$root/go.mod" "$root/go.sum" "$tmp/"
mkdir -p "$tmp/hack"
cp -a "$root/hack/boilerplate.go.txt" "$root/hack/generate-k8s.sh" "$tmp/hack/"
for d in api controllers server internal config; do
  [ -e "$root/$d" ] && cp -a "$root/$d" "$tmp/$d"
done
ln -s "$root/bin" "$tmp/bin"

(cd "$tmp" && bash hack/generate-k8s.sh)

status=0
for f in api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml; do
  if ! diff -ruN "$root/$f" "$tmp/$f" >"$tmp/diff.txt" 2>&1; then
    echo "hack/verify-k8s.sh: $f is out of date with the Go sources:" >&2
    sed -n '1,60p' "$tmp/diff.txt" >&2
    status=1
  fi
done
if [ $status -ne 0 ]; then
  echo "hack/verify-k8s.sh: run hack/generate-k8s.sh (or make generate manifests) and commit the result." >&2
  exit 1
fi
echo "hack/verify-k8s.sh: deepcopy, CRD and RBAC are up to date."
