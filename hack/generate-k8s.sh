#!/usr/bin/env bash
# Generates the Kubernetes artefacts from the Go sources: deepcopy methods of
# api/v1alpha1, the TokenProvider CRD (config/crd/bases) and the manager's
# ClusterRole (config/rbac/role.yaml, from the +kubebuilder:rbac markers on
# the reconcilers). Needs bin/controller-gen (hack/tools.sh controller-gen).
# hack/verify-k8s.sh checks that the committed output is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/controller-gen ] || hack/tools.sh controller-gen

bin/controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...
bin/controller-gen rbac:roleName=tokenstore-manager crd paths=./api/... paths=./controllers/... output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
