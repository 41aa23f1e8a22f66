package controllers

// The API server (not a reconciler) needs these rights too; the markers live
// here so that `make manifests` puts them in the one generated Role, and the
// Helm chart is checked against it:
//   - TokenReview, to verify the projected ServiceAccount tokens workloads
//     present at the token-exchange endpoint (internal/workload/kubeauth);
//   - ServiceAccounts get, to refuse a grant to a ServiceAccount that does
//     not exist.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get
