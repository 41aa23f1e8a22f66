#!/usr/bin/env bash
# Copies the controller-gen CRDs (config/crd/bases, generated from api/) into
# the chart's files/crds/, from which templates/crds.yaml renders them (with
# the chart's labels and the keep annotation), so `helm upgrade` upgrades
# them. Run after hack/generate-k8s.sh; hack/verify-chart.sh and test/chart
# fail when the copies drift.
#
# The chart has no crds/ folder on purpose: Helm installs that folder once and
# never upgrades it, and a CRD in both places would be created twice.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/charts/tokenstore/files/crds"
mkdir -p "$dest"
rm -f "$dest"/*.yaml
cp "$root"/config/crd/bases/*.yaml "$dest"/
