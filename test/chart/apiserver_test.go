package chart

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tokenstore/tokenstore/internal/testutil"
)

func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver", "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		// The chart's own copy of the CRD: it must install.
		CRDDirectoryPaths:     []string{filepath.Join(chartDir(), "crds")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every object the chart renders, with its defaults and with every feature
// on, is created on a real kube-apiserver, which validates it (schema,
// defaulting, field checks such as the preStop sleep action). Objects whose
// CRDs belong to the Prometheus Operator are checked as YAML only. The
// chart's sample TokenProvider and Secret (README) are created too, through
// the CRD's own validation.
func TestRenderedObjectsAcceptedByAPIServer(t *testing.T) {
	c := startAPIServer(t)
	ctx := context.Background()

	type install struct {
		ns   string
		args []string
		dir  string
	}
	for _, in := range []install{
		{ns: namespace, dir: withMonitoringFiles(t), args: []string{"-f", filepath.Join(chartDir(), "ci", "full-values.yaml")}},
		{ns: "tokenstore-defaults", dir: chartDir()},
	} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.ns}}); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := runHelm(t, append([]string{"template", release, in.dir, "--namespace", in.ns}, in.args...)...)
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, stderr)
		}
		created := 0
		for _, o := range decode(t, out) {
			if o.GetAPIVersion() == "monitoring.coreos.com/v1" {
				if spec, ok := o.Object["spec"].(map[string]any); !ok || len(spec) == 0 {
					t.Errorf("%s has no spec", o.GetKind())
				}
				continue
			}
			if err := c.Create(ctx, o, client.FieldOwner("chart-test")); err != nil {
				t.Errorf("the API server refused %s %s/%s: %v", o.GetKind(), in.ns, o.GetName(), err)
				continue
			}
			created++
		}
		t.Logf("namespace %s: the API server accepted all %d rendered objects", in.ns, created)
	}

	// The sample in the chart README.
	samples := readmeYAML(t)
	if len(samples) < 2 {
		t.Fatalf("README has no sample TokenProvider and Secret (found %d objects)", len(samples))
	}
	for _, o := range samples {
		o.SetNamespace(namespace)
		if err := c.Create(ctx, o); err != nil {
			t.Errorf("README sample %s %s refused: %v", o.GetKind(), o.GetName(), err)
		}
	}

	checkAccess(t, c)
}

// readmeYAML returns the objects in the README's yaml code blocks.
func readmeYAML(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(filepath.Join(chartDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```yaml":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	var objs []*unstructured.Unstructured
	for _, b := range blocks {
		objs = append(objs, decode(t, b)...)
	}
	return objs
}

// checkAccess asks the API server's RBAC authorizer what the chart's
// ServiceAccount may do: what the server needs, in its namespace only, and
// nothing else.
func checkAccess(t *testing.T, c client.Client) {
	t.Helper()
	user := "system:serviceaccount:" + namespace + ":" + release
	type q struct {
		ns, group, resource, sub, verb string
		allowed                        bool
	}
	for _, a := range []q{
		{namespace, "tokenstore.io", "tokenproviders", "", "watch", true},
		{namespace, "tokenstore.io", "tokenproviders", "status", "patch", true},
		{namespace, "", "secrets", "", "list", true},
		{namespace, "", "events", "", "create", true},
		{namespace, "coordination.k8s.io", "leases", "", "update", true},
		{"", "authentication.k8s.io", "tokenreviews", "", "create", true},
		{"some-workload-ns", "", "serviceaccounts", "", "get", true},
		// least rights
		{"default", "", "secrets", "", "get", false},
		{"", "", "secrets", "", "list", false},
		{namespace, "", "secrets", "", "update", false},
		{namespace, "tokenstore.io", "tokenproviders", "", "update", false},
		{"default", "tokenstore.io", "tokenproviders", "", "list", false},
		{"default", "coordination.k8s.io", "leases", "", "create", false},
		{namespace, "", "pods", "", "list", false},
	} {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: a.ns, Group: a.group, Resource: a.resource, Subresource: a.sub, Verb: a.verb,
			},
		}}
		if err := c.Create(context.Background(), sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != a.allowed {
			t.Errorf("%s %s %q/%s/%s in %q: allowed=%v, want %v (%s)", user, a.verb, a.group, a.resource, a.sub, a.ns, sar.Status.Allowed, a.allowed, sar.Status.Reason)
		}
	}
}
