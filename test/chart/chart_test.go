// Package chart tests the Helm chart in charts/tokenstore with real tools:
// helm (built by hack/tools.sh) lints and renders it, and a real
// kube-apiserver (envtest, built by hack/build-envtest.sh) validates every
// rendered object by creating it.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/internal/testutil"
)

const (
	release   = "tokenstore"
	namespace = "tokenstore"
)

func repoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func chartDir() string { return filepath.Join(repoRoot(), "charts", "tokenstore") }

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm returns the pinned helm binary, building it on first use (about a
// minute, then cached outside the work tree by hack/tools.sh).
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		p := filepath.Join(repoRoot(), "bin", "helm")
		if _, err := os.Stat(p); err != nil {
			cmd := exec.Command(filepath.Join(repoRoot(), "hack", "tools.sh"), "helm")
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				helmErr = errors.New("hack/tools.sh helm failed: " + err.Error() + "\n" + string(out))
				return
			}
		}
		helmPath = p
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func runHelm(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	if len(args) > 0 && (args[0] == "template" || args[0] == "lint") {
		// helm built with `go install` assumes Kubernetes 1.20 when no
		// cluster is asked; the chart needs 1.30 (preStop sleep). Render for
		// the version envtest runs.
		args = append(args, "--kube-version", testutil.KubeVersion)
	}
	cmd := exec.Command(helm(t), args...)
	// A private helm home: no repositories or plugins of the machine's user.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// withMonitoringFiles copies the chart to a temporary folder and adds the
// dashboard and alert files if the chart has none yet (another part of the
// project writes them), so the templates that include them are exercised.
func withMonitoringFiles(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "tokenstore")
	err := filepath.Walk(chartDir(), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir(), p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	stubs := map[string]string{
		"files/grafana-dashboard.json": `{"title": "tokenstore", "panels": []}`,
		"files/alerts.yaml":            "groups:\n  - name: tokenstore\n    rules:\n      - alert: TokenstoreDown\n        expr: up{job=\"tokenstore\"} == 0\n        for: 5m\n",
	}
	for name, content := range stubs {
		p := filepath.Join(dst, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// render runs helm template and returns the objects it produced.
func render(t *testing.T, chart string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, stderr, err := runHelm(t, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr)
	}
	return decode(t, out)
}

func decode(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufioReader(manifests))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

func kinds(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[o.GetKind()] = o
	}
	return m
}

func into(t *testing.T, o *unstructured.Unstructured, v any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s: %v", o.GetKind(), err)
	}
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{
		{"lint", "--strict", chartDir()},
		{"lint", "--strict", withMonitoringFiles(t), "-f", filepath.Join(chartDir(), "ci", "full-values.yaml")},
	} {
		out, stderr, err := runHelm(t, args...)
		if err != nil {
			t.Fatalf("helm %v: %v\n%s\n%s", args, err, out, stderr)
		}
	}
}

var alwaysKinds = []string{"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "PodDisruptionBudget"}
var optionalKinds = []string{"Ingress", "ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy", "HorizontalPodAutoscaler"}

func TestTemplateDefaults(t *testing.T) {
	objs := render(t, chartDir())
	k := kinds(objs)
	for _, want := range alwaysKinds {
		if k[want] == nil {
			t.Errorf("default render lacks a %s", want)
		}
	}
	for _, off := range optionalKinds {
		if k[off] != nil {
			t.Errorf("default render has a %s, which should be off by default", off)
		}
	}
	checkLabels(t, objs)
}

func TestTemplateEverythingOn(t *testing.T) {
	objs := render(t, withMonitoringFiles(t), "-f", filepath.Join(chartDir(), "ci", "full-values.yaml"))
	k := kinds(objs)
	for _, want := range append(append([]string{}, alwaysKinds...), optionalKinds...) {
		if k[want] == nil {
			t.Errorf("full render lacks a %s", want)
		}
	}
	checkLabels(t, objs)
	var d appsv1.Deployment
	into(t, k["Deployment"], &d)
	if d.Spec.Replicas != nil {
		t.Error("with autoscaling on, the Deployment must leave replicas to the HPA")
	}
	cm := k["ConfigMap"]
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap lacks the sidecar label: %v", cm.GetLabels())
	}
	if groups, _, _ := unstructured.NestedSlice(k["PrometheusRule"].Object, "spec", "groups"); len(groups) == 0 {
		t.Error("PrometheusRule has no rule groups from files/alerts.yaml")
	}
}

// Without files/alerts.yaml and files/grafana-dashboard.json, turning their
// features on renders nothing rather than an empty or broken object.
func TestMonitoringFilesAbsent(t *testing.T) {
	dir := withMonitoringFiles(t)
	os.Remove(filepath.Join(dir, "files", "alerts.yaml"))
	os.Remove(filepath.Join(dir, "files", "grafana-dashboard.json"))
	k := kinds(render(t, dir, "--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true"))
	if k["PrometheusRule"] != nil || k["ConfigMap"] != nil {
		t.Error("a PrometheusRule or dashboard ConfigMap was rendered without its file")
	}
}

func checkLabels(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		l := o.GetLabels()
		for _, key := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[key] == "" {
				t.Errorf("%s %s lacks label %s", o.GetKind(), o.GetName(), key)
			}
		}
	}
}

// values.schema.json refuses wrong values before anything is rendered, with
// a message that names the value.
func TestSchemaRefusesWrongValues(t *testing.T) {
	cases := []struct{ set, mention string }{
		{"replicaCount=0", "replicaCount"},
		{"replicaCount=two", "replicaCount"},
		{"config.logLevel=loud", "logLevel"},
		{"config.externalURL=tokenstore.example.com", "externalURL"},
		{"terminationGracePeriodSeconds=5", "terminationGracePeriodSeconds"},
		{"existingSecret=", "existingSecret"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"service.port=70000", "port"},
		{"replicaCont=2", "replicaCont"},
		{"ingress.enabeld=true", "enabeld"},
		{"autoscaling.targetCPUUtilizationPercentage=150", "targetCPUUtilizationPercentage"},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			_, stderr, err := runHelm(t, "template", release, chartDir(), "--namespace", namespace, "--set", c.set)
			if err == nil {
				t.Fatalf("helm template accepted --set %s", c.set)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") || !strings.Contains(stderr, c.mention) {
				t.Fatalf("refusal does not name %s:\n%s", c.mention, stderr)
			}
		})
	}
}

func deployment(t *testing.T, args ...string) appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	into(t, kinds(render(t, chartDir(), args...))["Deployment"], &d)
	return d
}

func TestDeploymentHardening(t *testing.T) {
	d := deployment(t)
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("the default install should run more than one replica")
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Error("a rolling update must not take serving replicas away before new ones are ready")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context: %+v", psc)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds < 30 {
		t.Error("terminationGracePeriodSeconds < 30")
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
			len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container %s security context is not restricted: %+v", c.Name, sc)
		}
	}
	if len(spec.InitContainers) != 1 || strings.Join(spec.InitContainers[0].Args, " ") != "migrate up" {
		t.Fatalf("want one init container running `migrate up`, got %+v", spec.InitContainers)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if strings.Join(c.Args, " ") != "serve" {
		t.Errorf("args %v", c.Args)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe: %+v", p)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe: %+v", p)
	}
	if l := c.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Sleep == nil || l.PreStop.Sleep.Seconds <= 0 ||
		l.PreStop.Sleep.Seconds >= int64(*spec.TerminationGracePeriodSeconds) {
		t.Errorf("preStop must sleep for less than the grace period: %+v", l)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["TOKENSTORE_WATCH_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Error("WATCH_NAMESPACE must come from the pod's namespace")
	}
	if env["TOKENSTORE_LEADER_ELECTION"].Value != "true" {
		t.Error("leader election must be on")
	}
	for name, key := range map[string]string{"TOKENSTORE_DATABASE_URL": "DATABASE_URL", "TOKENSTORE_CRYPTOKEY": "CRYPTOKEY", "TOKENSTORE_OIDC_CLIENT_SECRET": "OIDC_CLIENT_SECRET"} {
		e := env[name]
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "tokenstore-settings" || e.ValueFrom.SecretKeyRef.Key != key {
			t.Errorf("%s must come from existingSecret key %s: %+v", name, key, e)
		}
	}
	// the existing Secret's name and keys follow the values
	d2 := deployment(t, "--set", "existingSecret=other,existingSecretKeys.databaseURL=db")
	for _, e := range d2.Spec.Template.Spec.InitContainers[0].Env {
		if e.Name == "TOKENSTORE_DATABASE_URL" && (e.ValueFrom.SecretKeyRef.Name != "other" || e.ValueFrom.SecretKeyRef.Key != "db") {
			t.Errorf("init container DATABASE_URL: %+v", e.ValueFrom.SecretKeyRef)
		}
	}
	// one replica: no PodDisruptionBudget that would block node drains
	if k := kinds(render(t, chartDir(), "--set", "replicaCount=1")); k["PodDisruptionBudget"] != nil {
		t.Error("a PodDisruptionBudget over a single replica blocks drains")
	}
}

type rule struct{ group, resource, verb string }

func rulesOf(t *testing.T, objs []*unstructured.Unstructured, kind string) map[rule]bool {
	t.Helper()
	set := map[rule]bool{}
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch kind {
		case "Role":
			var r rbacv1.Role
			into(t, o, &r)
			rules = r.Rules
		case "ClusterRole":
			var r rbacv1.ClusterRole
			into(t, o, &r)
			rules = r.Rules
		}
		for _, pr := range rules {
			for _, g := range pr.APIGroups {
				for _, res := range pr.Resources {
					for _, v := range pr.Verbs {
						set[rule{g, res, v}] = true
					}
				}
			}
		}
	}
	return set
}

func readRules(t *testing.T, path, kind string) map[rule]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return rulesOf(t, decode(t, string(b)), kind)
}

// The chart grants at least what the controller's RBAC markers ask for
// (config/rbac, generated by controller-gen), and no more than it needs:
// Secrets only through the namespaced Role, nothing cluster-wide but
// TokenReview and ServiceAccount reads.
func TestRBACCoversController(t *testing.T) {
	objs := render(t, chartDir())
	role, cluster := rulesOf(t, objs, "Role"), rulesOf(t, objs, "ClusterRole")
	need := readRules(t, filepath.Join(repoRoot(), "config", "rbac", "role.yaml"), "ClusterRole")
	for r := range readRules(t, filepath.Join(repoRoot(), "config", "rbac", "leader_election_role.yaml"), "Role") {
		need[r] = true
	}
	if len(need) < 10 {
		t.Fatalf("config/rbac yielded only %d rules; is it still generated?", len(need))
	}
	for r := range need {
		if !role[r] && !cluster[r] {
			t.Errorf("the chart does not grant %s %q/%s that config/rbac/ requires", r.verb, r.group, r.resource)
		}
	}
	wantCluster := map[rule]bool{{"authentication.k8s.io", "tokenreviews", "create"}: true, {"", "serviceaccounts", "get"}: true}
	for r := range cluster {
		if !wantCluster[r] {
			t.Errorf("cluster-wide grant %s %q/%s is more than workload authentication needs", r.verb, r.group, r.resource)
		}
	}
	for r := range wantCluster {
		if !cluster[r] {
			t.Errorf("ClusterRole lacks %s %q/%s (workload authentication)", r.verb, r.group, r.resource)
		}
	}
	for r := range role {
		if r.verb == "*" || r.resource == "*" || r.group == "*" {
			t.Errorf("wildcard grant %+v", r)
		}
		if r.resource == "secrets" && r.verb != "get" && r.verb != "list" && r.verb != "watch" {
			t.Errorf("Secrets may only be read: %+v", r)
		}
	}
}

// The CRD in crds/ is the generated one (hack/verify-chart.sh checks the
// same in CI without Go).
func TestCRDInSync(t *testing.T) {
	src, err := filepath.Glob(filepath.Join(repoRoot(), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(src) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	for _, s := range src {
		a, _ := os.ReadFile(s)
		b, err := os.ReadFile(filepath.Join(chartDir(), "crds", filepath.Base(s)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/tokenstore/crds/%s differs from config/crd/bases; run hack/chart-sync-crd.sh", filepath.Base(s))
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
