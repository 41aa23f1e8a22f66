package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KubeVersion is the control plane hack/build-envtest.sh copies out of
// hack/build-k8s.sh's build (the version the real cluster runs).
const KubeVersion = "v1.35.8"

// EnvtestAssets finds the envtest binaries named (etcd, kube-apiserver,
// kubectl...): KUBEBUILDER_ASSETS, else bin/k8s/<KubeVersion> in the
// module, as hack/build-envtest.sh leaves them. The error says how to build
// them (about ten minutes, too long to do in a test); tests fail on it,
// never skip.
func EnvtestAssets(binaries ...string) (string, error) {
	have := func(dir string) bool {
		for _, b := range binaries {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if !have(dir) {
			return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s lacks one of %s; run hack/build-envtest.sh and point KUBEBUILDER_ASSETS at the directory it prints",
				dir, strings.Join(binaries, ", "))
		}
		return dir, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin", "k8s", KubeVersion)
	if !have(dir) {
		return "", fmt.Errorf("no envtest binaries (%s) in %s and KUBEBUILDER_ASSETS is unset: run hack/build-envtest.sh "+
			"(KUBEBUILDER_ASSETS=\"$(hack/build-envtest.sh | tail -n1)\")", strings.Join(binaries, ", "), dir)
	}
	return dir, nil
}

// moduleRoot is the nearest directory above the working directory (a test's
// package folder) holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
