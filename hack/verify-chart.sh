#!/usr/bin/env bash
# Fails when the chart has drifted from what it is generated from: the CRDs in
# charts/tokenstore/files/crds/ against config/crd/bases/, and the chart README
# against values.yaml. Fix with hack/chart-sync-crd.sh and hack/chart-docs.sh.
# Also fails when a crds/ folder is back in the chart: templates/crds.yaml
# installs the CRD, and Helm would try to create it from both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
fail=0
for f in config/crd/bases/*.yaml; do
  copy="charts/tokenstore/files/crds/$(basename "$f")"
  if ! cmp -s "$f" "$copy"; then
    echo "verify-chart: $copy differs from $f; run hack/chart-sync-crd.sh" >&2
    fail=1
  fi
done
for copy in charts/tokenstore/files/crds/*.yaml; do
  [ -e "config/crd/bases/$(basename "$copy")" ] || { echo "verify-chart: $copy has no source in config/crd/bases; run hack/chart-sync-crd.sh" >&2; fail=1; }
done
if [ -e charts/tokenstore/crds ]; then
  echo "verify-chart: charts/tokenstore/crds/ exists, but the CRDs are templates (templates/crds.yaml from files/crds/); remove it" >&2
  fail=1
fi
if ! hack/chart-docs.sh -check; then
  fail=1
fi
exit $fail
