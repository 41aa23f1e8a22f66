#!/usr/bin/env bash
# Copies the controller-gen CRDs (config/crd/bases, generated from api/) into
# the chart's crds/ folder, which Helm installs before the templates. Run after
# hack/generate-k8s.sh; hack/verify-chart.sh fails when the copies drift.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/charts/tokenstore/crds"
mkdir -p "$dest"
rm -f "$dest"/*.yaml
cp "$root"/config/crd/bases/*.yaml "$dest"/
