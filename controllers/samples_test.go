package controllers_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// TestSamplesAreAdmitted: every manifest in config/samples passes the
// CRD's schema and CEL rules.
func TestSamplesAreAdmitted(t *testing.T) {
	ns := newNamespace(t, "samples")
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "tokenstore_*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("samples not found: %v %v", files, err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			u.SetNamespace(ns)
			if err := k8sClient.Create(context.Background(), &u); err != nil {
				t.Fatalf("%s: %s %s refused: %v", f, u.GetKind(), u.GetName(), err)
			}
			kinds[u.GetKind()]++
		}
	}
	if kinds["TokenProvider"] < 3 || kinds["Secret"] < 3 {
		t.Fatalf("samples hold %v, want 3 TokenProviders and their Secrets", kinds)
	}
}
