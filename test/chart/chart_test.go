// Package chart tests the Helm chart in charts/tokenstore with real tools:
// helm (built by hack/tools.sh) lints and renders it, and a real
// kube-apiserver (envtest, built by hack/build-envtest.sh) validates every
// rendered object by creating it, and takes real `helm install`, `upgrade`
// and `uninstall` runs (apiserver_test.go).
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

const (
	release   = "tokenstore"
	namespace = "tokenstore"
	// appVersion is the first release's, which the image build tags too.
	appVersion = "0.1.0"
	image      = "ghcr.io/tokenstore/tokenstore"
)

func repoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func chartDir() string { return filepath.Join(repoRoot(), "charts", "tokenstore") }

func minimalValues() string { return filepath.Join(chartDir(), "ci", "minimal-values.yaml") }
func fullValues() string    { return filepath.Join(chartDir(), "ci", "full-values.yaml") }

// monitoringAPIs tell helm template that the cluster serves the Prometheus
// Operator's kinds, as .Capabilities.APIVersions would in such a cluster.
var monitoringAPIs = []string{"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"}

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
		cmd := exec.Command(filepath.Join(repoRoot(), "hack", "tools.sh"), "helm")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			helmErr = errors.New("hack/tools.sh helm failed: " + err.Error() + "\n" + string(out))
			return
		}
		helmPath = filepath.Join(repoRoot(), "bin", "helm")
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// runHelm runs helm with a private home (no repositories or plugins of the
// machine's user) and the extra environment given.
func runHelm(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	if len(args) > 0 && (args[0] == "template" || args[0] == "lint") {
		// helm built with `go install` assumes Kubernetes 1.20 when no
		// cluster is asked; the chart needs 1.30 (preStop sleep). Render for
		// the version envtest runs.
		args = append(args, "--kube-version", testutil.KubeVersion)
	}
	cmd := exec.Command(helm(t), args...)
	home := t.TempDir()
	cmd.Env = append(append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// withMonitoringFiles copies the chart to a temporary folder and adds the
// dashboard and alert files if the chart has none, so the templates that
// include them are exercised either way.
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
		"files/alerts.yaml":            "groups:\n  - name: tokenstore\n    rules:\n      - alert: TokenstoreDown\n        expr: absent(up{job=\"tokenstore\"} == 1)\n        for: 5m\n",
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
	return renderIn(t, namespace, chart, args...)
}

func renderIn(t *testing.T, ns, chart string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, stderr, err := runHelm(t, nil, append([]string{"template", release, chart, "--namespace", ns}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr)
	}
	return decode(t, out)
}

// renderDefaults renders with only the values an install cannot do without.
func renderDefaults(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	return render(t, chartDir(), append([]string{"-f", minimalValues()}, args...)...)
}

// renderFull renders every feature, in a cluster with the Prometheus
// Operator's kinds.
func renderFull(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	return render(t, withMonitoringFiles(t), append(append([]string{"-f", fullValues()}, monitoringAPIs...), args...)...)
}

func decode(t *testing.T, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
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

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func into(t *testing.T, o *unstructured.Unstructured, v any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s: %v", o.GetKind(), err)
	}
}

// podSpecs returns the pod template of every object that runs pods.
func podSpecs(t *testing.T, objs []*unstructured.Unstructured) map[string]corev1.PodTemplateSpec {
	t.Helper()
	specs := map[string]corev1.PodTemplateSpec{}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetName()
		switch o.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			into(t, o, &d)
			specs[key] = d.Spec.Template
		case "Job":
			var j batchv1.Job
			into(t, o, &j)
			specs[key] = j.Spec.Template
		case "Pod":
			var p corev1.Pod
			into(t, o, &p)
			specs[key] = corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
		}
	}
	return specs
}

func allContainers(s corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, s.InitContainers...), s.Containers...)
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	return env
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{
		{"lint", "--strict", chartDir(), "-f", minimalValues()},
		{"lint", "--strict", withMonitoringFiles(t), "-f", fullValues()},
	} {
		out, stderr, err := runHelm(t, nil, args...)
		if err != nil {
			t.Fatalf("helm %v: %v\n%s\n%s", args, err, out, stderr)
		}
	}
}

var alwaysKinds = []string{"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "PodDisruptionBudget", "CustomResourceDefinition", "Pod"}
var optionalKinds = []string{"Ingress", "ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy", "HorizontalPodAutoscaler", "Job"}

func TestTemplateDefaults(t *testing.T) {
	objs := renderDefaults(t)
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
	checkLabels(t, objs, nil)
}

func TestTemplateEverythingOn(t *testing.T) {
	objs := renderFull(t)
	k := kinds(objs)
	for _, want := range append(append([]string{}, alwaysKinds...), optionalKinds...) {
		if k[want] == nil {
			t.Errorf("full render lacks a %s", want)
		}
	}
	var d appsv1.Deployment
	into(t, k["Deployment"], &d)
	if d.Spec.Replicas != nil {
		t.Error("with autoscaling on, the Deployment must leave replicas to the HPA")
	}
	cm := find(t, objs, "ConfigMap", "tokenstore-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap lacks the sidecar label: %v", cm.GetLabels())
	}
	if groups, _, _ := unstructured.NestedSlice(k["PrometheusRule"].Object, "spec", "groups"); len(groups) == 0 {
		t.Error("PrometheusRule has no rule groups from files/alerts.yaml")
	}
}

// ci/full-values.yaml is the render "with every feature on": a value added
// to values.yaml but not set there would go untested.
func TestFullValuesSetEveryValue(t *testing.T) {
	read := func(p string) map[string]any {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	var missing []string
	var walk func(prefix string, def, full map[string]any)
	walk = func(prefix string, def, full map[string]any) {
		for k, v := range def {
			fv, ok := full[k]
			if !ok {
				missing = append(missing, prefix+k)
				continue
			}
			if dm, isMap := v.(map[string]any); isMap && len(dm) > 0 {
				if fm, ok := fv.(map[string]any); ok {
					walk(prefix+k+".", dm, fm)
				}
			}
		}
	}
	walk("", read(filepath.Join(chartDir(), "values.yaml")), read(fullValues()))
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("ci/full-values.yaml does not set %s", strings.Join(missing, ", "))
	}
}

// Without files/alerts.yaml and files/grafana-dashboard.json, turning their
// features on renders nothing rather than an empty or broken object.
func TestMonitoringFilesAbsent(t *testing.T) {
	dir := withMonitoringFiles(t)
	os.Remove(filepath.Join(dir, "files", "alerts.yaml"))
	os.Remove(filepath.Join(dir, "files", "grafana-dashboard.json"))
	k := kinds(render(t, dir, append([]string{"-f", minimalValues(), "--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true"}, monitoringAPIs...)...))
	if k["PrometheusRule"] != nil || k["ConfigMap"] != nil {
		t.Error("a PrometheusRule or dashboard ConfigMap was rendered without its file")
	}
}

// checkLabels: the recommended labels, and the extra ones of commonLabels,
// on every object and on every pod template.
func checkLabels(t *testing.T, objs []*unstructured.Unstructured, extra map[string]string) {
	t.Helper()
	for _, o := range objs {
		l := o.GetLabels()
		for _, key := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[key] == "" {
				t.Errorf("%s %s lacks label %s", o.GetKind(), o.GetName(), key)
			}
		}
		for k, v := range extra {
			if l[k] != v {
				t.Errorf("%s %s lacks commonLabels %s=%s", o.GetKind(), o.GetName(), k, v)
			}
		}
	}
	for name, p := range podSpecs(t, objs) {
		for k, v := range extra {
			if p.Labels[k] != v {
				t.Errorf("pods of %s lack commonLabels %s=%s", name, k, v)
			}
		}
	}
}

func TestCommonLabelsOnEveryObject(t *testing.T) {
	objs := renderFull(t)
	// The user's own extraObjects keep the labels they were given.
	var chartObjs []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "tokenstore-settings-file" {
			continue
		}
		chartObjs = append(chartObjs, o)
	}
	checkLabels(t, chartObjs, map[string]string{"example.com/cost-center": "platform"})
}

// values.schema.json refuses wrong values before anything is rendered, with
// a message that names the value.
func TestSchemaRefusesWrongValues(t *testing.T) {
	cases := []struct{ set, mention string }{
		{"replicaCount=0", "replicaCount"},
		{"replicaCount=two", "replicaCount"},
		{"config.logLevel=loud", "logLevel"},
		{"config.externalURL=tokenstore.example.com", "externalURL"},
		{"config.oidcDiscoveryURL=auth.example.com", "oidcDiscoveryURL"},
		{"terminationGracePeriodSeconds=5", "terminationGracePeriodSeconds"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"image.digest=0.1.0", "digest"},
		{"service.port=70000", "port"},
		{"metrics.port=0", "/metrics/port"},
		{"replicaCont=2", "replicaCont"},
		{"ingress.enabeld=true", "enabeld"},
		{"autoscaling.targetCPUUtilizationPercentage=150", "targetCPUUtilizationPercentage"},
		{"watchNamespace=Token_Providers", "watchNamespace"},
		{"serviceMonitor.renderMode=sometimes", "renderMode"},
		{"database.urlSecretRef.name=Bad_Name", "name"},
		{"commonLabels.app\\.kubernetes\\.io/component=x", "app.kubernetes.io/component"},
		{"keysRotateJob.batchSize=0", "batchSize"},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			_, stderr, err := runHelm(t, nil, "template", release, chartDir(), "--namespace", namespace, "-f", minimalValues(), "--set", c.set)
			if err == nil {
				t.Fatalf("helm template accepted --set %s", c.set)
			}
			if !strings.Contains(stderr, "values don't meet the specifications of the schema") || !strings.Contains(stderr, c.mention) {
				t.Fatalf("refusal does not name %s:\n%s", c.mention, stderr)
			}
		})
	}
}

// Values with which no pod could start, or that would expose /metrics, are
// refused at install time with a message saying what to set, rather than
// giving pods that crash-loop or wait forever.
func TestRefusesInstallThatCannotStart(t *testing.T) {
	const oidcURL = "config.oidcDiscoveryURL=https://auth.example.com/.well-known/openid-configuration"
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no values", nil, []string{
			"config.oidcDiscoveryURL is not set", "--set config.oidcDiscoveryURL=https://",
			"config.oidcClientID is not set", "--set config.oidcClientID=",
		}},
		{"no client id", []string{"--set", oidcURL}, []string{"config.oidcClientID is not set"}},
		{"no settings Secret", []string{"-f", minimalValues(), "--set", "existingSecret="}, []string{
			"existingSecret is empty", "DATABASE_URL and CRYPTOKEY", "--set existingSecret=tokenstore-settings",
		}},
		{"ingress / prefix", []string{"-f", minimalValues(), "--set", "ingress.enabled=true,ingress.hosts[0].host=a.example.com,ingress.hosts[0].paths[0].path=/,ingress.hosts[0].paths[0].pathType=Prefix"},
			[]string{`ingress path "/" (Prefix) on host "a.example.com" would route /metrics through the Ingress`, "/api and /ui (Prefix) and / (Exact)"}},
		{"ingress /metrics", []string{"-f", minimalValues(), "--set", "ingress.enabled=true,ingress.paths[0].path=/metrics,ingress.paths[0].pathType=Exact"},
			[]string{`ingress path "/metrics" (Exact)`}},
		{"ServiceMonitor without the operator", []string{"-f", minimalValues(), "--set", "serviceMonitor.enabled=true,serviceMonitor.renderMode=failIfMissing"},
			[]string{"serviceMonitor.enabled is true but the cluster has no ServiceMonitor kind", "serviceMonitor.renderMode=skipIfMissing"}},
		{"PrometheusRule without the operator", []string{"-f", minimalValues(), "--set", "prometheusRule.enabled=true,prometheusRule.renderMode=failIfMissing"},
			[]string{"prometheusRule.enabled is true but the cluster has no PrometheusRule kind"}},
		{"ServiceMonitor without metrics Service", []string{"-f", minimalValues(), "--set", "serviceMonitor.enabled=true,metrics.service.enabled=false"},
			[]string{"serviceMonitor.enabled needs metrics.service.enabled"}},
		{"metrics on the API's port", []string{"-f", minimalValues(), "--set", "metrics.port=8080"},
			[]string{"metrics.port is 8080, the API's port", "--set metrics.port=9090"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := chartDir()
			if strings.Contains(c.name, "PrometheusRule") {
				dir = withMonitoringFiles(t)
			}
			_, stderr, err := runHelm(t, nil, append([]string{"template", release, dir, "--namespace", namespace}, c.args...)...)
			if err == nil {
				t.Fatalf("helm template %v was accepted", c.args)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
	// The login settings may come from extraEnv instead (e.g. from a Secret).
	renderDefaults(t, "--set", "config.oidcDiscoveryURL=,config.oidcClientID=",
		"--set", "extraEnv[0].name=TOKENSTORE_OIDC_DISCOVERY_URL,extraEnv[0].value=https://auth.example.com/.well-known/openid-configuration",
		"--set", "extraEnv[1].name=TOKENSTORE_OIDC_CLIENT_ID,extraEnv[1].valueFrom.secretKeyRef.name=login,extraEnv[1].valueFrom.secretKeyRef.key=id")
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	into(t, kinds(objs)["Deployment"], &d)
	return d
}

func TestDeploymentHardening(t *testing.T) {
	d := deployment(t, renderDefaults(t))
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
	if p := c.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.PeriodSeconds*p.FailureThreshold < 60 {
		t.Errorf("startup probe must give a start at least a minute on /healthz: %+v", p)
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
	env := envOf(c)
	if e := env["TOKENSTORE_WATCH_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Error("WATCH_NAMESPACE must come from the pod's namespace")
	}
	if env["TOKENSTORE_LEADER_ELECTION"].Value != "true" {
		t.Error("leader election must be on")
	}
	if d.Spec.RevisionHistoryLimit == nil || *d.Spec.RevisionHistoryLimit != 10 {
		t.Errorf("revisionHistoryLimit: %v", d.Spec.RevisionHistoryLimit)
	}
	// one replica: no PodDisruptionBudget that would block node drains
	if k := kinds(renderDefaults(t, "--set", "replicaCount=1")); k["PodDisruptionBudget"] != nil {
		t.Error("a PodDisruptionBudget over a single replica blocks drains")
	}
}

// Every container of every pod the chart runs (server, init, Jobs, test)
// meets the restricted Pod Security Standard.
func TestEveryContainerRestricted(t *testing.T) {
	for name, p := range podSpecs(t, renderFull(t)) {
		for _, c := range allContainers(p.Spec) {
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
				len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s container %s security context is not restricted: %+v", name, c.Name, sc)
			}
		}
	}
}

// The sensitive settings reach every container only by reference to a
// Secret, never as a value in a manifest; each per-value Secret reference
// falls back to the settings Secret.
func TestSecretsOnlyByReference(t *testing.T) {
	type ref struct{ name, key string }
	check := func(t *testing.T, objs []*unstructured.Unstructured, want map[string]ref) {
		t.Helper()
		seen := map[string]bool{}
		for podName, p := range podSpecs(t, objs) {
			for _, c := range allContainers(p.Spec) {
				for _, e := range c.Env {
					w, sensitive := want[e.Name]
					if !sensitive {
						continue
					}
					seen[e.Name] = true
					if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
						t.Errorf("%s/%s: %s is not a secretKeyRef", podName, c.Name, e.Name)
						continue
					}
					if got := (ref{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key}); got != w {
						t.Errorf("%s/%s: %s comes from %+v, want %+v", podName, c.Name, e.Name, got, w)
					}
				}
			}
		}
		for name := range want {
			if !seen[name] {
				t.Errorf("no container reads %s", name)
			}
		}
	}
	t.Run("defaults", func(t *testing.T) {
		check(t, renderDefaults(t, "--set", "importJob.enabled=true"), map[string]ref{
			"TOKENSTORE_DATABASE_URL":       {"tokenstore-settings", "DATABASE_URL"},
			"TOKENSTORE_CRYPTOKEY":          {"tokenstore-settings", "CRYPTOKEY"},
			"TOKENSTORE_OIDC_CLIENT_SECRET": {"tokenstore-settings", "OIDC_CLIENT_SECRET"},
			"TOKENSTORE_IMPORT_FROM":        {"tokenstore-settings", "IMPORT_FROM"},
			"TOKENSTORE_OLD_CRYPTOKEY":      {"tokenstore-settings", "OLD_CRYPTOKEY"},
		})
	})
	t.Run("other Secrets", func(t *testing.T) {
		check(t, renderFull(t), map[string]ref{
			"TOKENSTORE_DATABASE_URL":       {"tokenstore-db-app", "uri"},
			"TOKENSTORE_CRYPTOKEY":          {"tokenstore-prod", "CRYPTOKEY"},
			"TOKENSTORE_OIDC_CLIENT_SECRET": {"tokenstore-login-client", "client-secret"},
			"TOKENSTORE_IMPORT_FROM":        {"tokenstore-import", "IMPORT_FROM"},
			"TOKENSTORE_OLD_CRYPTOKEY":      {"tokenstore-import", "OLD_CRYPTOKEY"},
			"TOKENSTORE_WEBHOOK_SECRET":     {"tokenstore-webhook", "secret"},
		})
	})
	t.Run("a Secret name with the settings Secret's keys", func(t *testing.T) {
		check(t, renderDefaults(t, "--set", "existingSecret=other,existingSecretKeys.databaseURL=db,database.urlSecretRef.name=pg"), map[string]ref{
			"TOKENSTORE_DATABASE_URL": {"pg", "db"},
			"TOKENSTORE_CRYPTOKEY":    {"other", "CRYPTOKEY"},
		})
	})
	// The login client's secret may be absent (a public client); nothing
	// else may.
	for _, c := range deployment(t, renderDefaults(t)).Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Optional != nil && *r.SecretKeyRef.Optional != (e.Name == "TOKENSTORE_OIDC_CLIENT_SECRET") {
				t.Errorf("%s optional=%v", e.Name, *r.SecretKeyRef.Optional)
			}
		}
	}
}

// The Service, the PodDisruptionBudget and the NetworkPolicy select the
// server's pods and no other pod of the release (the Jobs and the test pod
// carry the release's labels too, and run no server).
func TestSelectorsMatchServerPodsOnly(t *testing.T) {
	objs := renderFull(t)
	pods := podSpecs(t, objs)
	selectors := map[string]labels.Selector{}
	for _, o := range objs {
		var sel map[string]string
		switch o.GetKind() {
		case "Service":
			sel, _, _ = unstructured.NestedStringMap(o.Object, "spec", "selector")
		case "PodDisruptionBudget":
			sel, _, _ = unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels")
		case "NetworkPolicy":
			sel, _, _ = unstructured.NestedStringMap(o.Object, "spec", "podSelector", "matchLabels")
		default:
			continue
		}
		if len(sel) == 0 {
			t.Fatalf("%s %s has no selector", o.GetKind(), o.GetName())
		}
		selectors[o.GetKind()+"/"+o.GetName()] = labels.SelectorFromSet(sel)
	}
	if len(selectors) != 4 {
		t.Fatalf("want 2 Services, a PodDisruptionBudget and a NetworkPolicy, got %v", selectors)
	}
	if len(pods) != 4 {
		t.Fatalf("want the Deployment, two Jobs and the test pod, got %d", len(pods))
	}
	for sname, sel := range selectors {
		for pname, p := range pods {
			server := strings.HasPrefix(pname, "Deployment/")
			if got := sel.Matches(labels.Set(p.Labels)); got != server {
				t.Errorf("%s selects the pods of %s: %v", sname, pname, got)
			}
		}
	}
}

func TestImage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir(), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != appVersion || chart.AppVersion != appVersion {
		t.Errorf("Chart.yaml version %q appVersion %q; the first release is %s", chart.Version, chart.AppVersion, appVersion)
	}
	images := func(objs []*unstructured.Unstructured) map[string]bool {
		set := map[string]bool{}
		for _, p := range podSpecs(t, objs) {
			for _, c := range allContainers(p.Spec) {
				set[c.Image] = true
			}
		}
		return set
	}
	if got := images(renderDefaults(t)); !reflect.DeepEqual(got, map[string]bool{image + ":" + appVersion: true}) {
		t.Errorf("default images %v, want %s:%s", got, image, appVersion)
	}
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	want := "registry.example.com/platform/tokenstore@" + digest
	if got := images(renderFull(t)); !reflect.DeepEqual(got, map[string]bool{want: true}) {
		t.Errorf("with image.digest, every container must run %s; got %v", want, got)
	}
	pinned := image + "@" + digest
	if got := images(renderDefaults(t, "--set", "image.repository="+pinned)); !reflect.DeepEqual(got, map[string]bool{pinned: true}) {
		t.Errorf("a repository ending in @sha256 must be pulled as it is; got %v", got)
	}
	for name, p := range podSpecs(t, renderFull(t)) {
		if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "registry-credentials" {
			t.Errorf("%s lacks imagePullSecrets: %v", name, p.Spec.ImagePullSecrets)
		}
	}
}

// The extension points of values.yaml reach the pods.
func TestExtensionPoints(t *testing.T) {
	objs := renderFull(t)
	d := deployment(t, objs)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if strings.Join(c.Args, " ") != "serve --refresher-interval=2m" {
		t.Errorf("extraArgs: args %v", c.Args)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
	}
	for _, name := range []string{"settings", "ca-bundle"} {
		if mounts[name] == "" || !vols[name] {
			t.Errorf("extraVolumes/extraVolumeMounts: %s not mounted (%v, %v)", name, mounts, vols)
		}
	}
	// a settings file given by extraEnv is seen by the migrations too
	if init := envOf(spec.InitContainers[0]); init["TOKENSTORE_SETTINGS"].Value != "/etc/tokenstore/settings.yaml" {
		t.Error("the migrate init container does not get extraEnv")
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].Prefix != "TOKENSTORE_" {
		t.Errorf("extraEnvFrom: %+v", c.EnvFrom)
	}
	if spec.PriorityClassName != "platform-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if d.Spec.RevisionHistoryLimit == nil || *d.Spec.RevisionHistoryLimit != 3 {
		t.Errorf("revisionHistoryLimit %v", d.Spec.RevisionHistoryLimit)
	}
	if p := c.StartupProbe; p == nil || p.PeriodSeconds != 3 || p.FailureThreshold != 40 {
		t.Errorf("startupProbe %+v", p)
	}
	if d.Spec.Template.Annotations["example.com/scrape"] != "true" || d.Spec.Template.Labels["team"] != "platform" {
		t.Errorf("podAnnotations/podLabels: %v %v", d.Spec.Template.Annotations, d.Spec.Template.Labels)
	}
	if dd := deployment(t, renderDefaults(t, "--set", "startupProbe.enabled=false")); dd.Spec.Template.Spec.Containers[0].StartupProbe != nil {
		t.Error("startupProbe.enabled=false still renders one")
	}
	// extraObjects go through tpl: the release namespace and the chart's
	// helpers are filled in, in both the object and the string form.
	for _, name := range []string{"tokenstore-settings-file", "corporate-ca"} {
		o := find(t, objs, "ConfigMap", name)
		if o.GetNamespace() != namespace {
			t.Errorf("extraObjects %s: namespace %q, want the release's", name, o.GetNamespace())
		}
	}
	if l := find(t, objs, "ConfigMap", "corporate-ca").GetLabels(); l["app.kubernetes.io/instance"] != release {
		t.Errorf("extraObjects string form: helpers not applied: %v", l)
	}
}

// A changed settingsChecksum changes the pods' annotation, so `helm upgrade`
// rolls them; without it (and without lookup, as under helm template) there
// is no annotation that would change at random. The lookup of the Secrets
// themselves is tested against a real API server in apiserver_test.go.
func TestSettingsChecksumRollsPods(t *testing.T) {
	ann := func(args ...string) string {
		return deployment(t, renderDefaults(t, args...)).Spec.Template.Annotations["tokenstore.io/settings-version"]
	}
	if a := ann(); a != "" {
		t.Errorf("without settingsChecksum or a Secret to look up, the annotation is %q", a)
	}
	a, b := ann("--set", "settingsChecksum=one"), ann("--set", "settingsChecksum=two")
	if a == "" || b == "" || a == b {
		t.Errorf("settingsChecksum one → %q, two → %q: want two different annotations", a, b)
	}
	if a == "one" || strings.Contains(a, "one") {
		t.Errorf("the annotation %q shows the value itself", a)
	}
	if a != ann("--set", "settingsChecksum=one") {
		t.Error("the same settingsChecksum gives a different annotation: every upgrade would roll the pods")
	}
}

// Metrics: their own listener and Service, scraped by the ServiceMonitor;
// never behind the API Service or the Ingress; the TokenstoreDown alert
// matches the job the ServiceMonitor gives, whatever the release is called.
func TestMetrics(t *testing.T) {
	for _, rel := range []struct{ name, args string }{
		{"tokenstore", ""},
		{"auth", "fullnameOverride=identity-tokens"},
		{"platform-tokenstore-prod", "nameOverride=tokens"},
	} {
		t.Run(rel.name, func(t *testing.T) {
			args := []string{"template", rel.name, withMonitoringFiles(t), "--namespace", "ns-" + rel.name, "-f", fullValues(), "--set", "fullnameOverride=,nameOverride="}
			if rel.args != "" {
				args = append(args, "--set", rel.args)
			}
			out, stderr, err := runHelm(t, nil, append(args, monitoringAPIs...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			objs := decode(t, out)
			var api, metrics *unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() == "Service" {
					if o.GetLabels()["app.kubernetes.io/component"] == "metrics" {
						metrics = o
					} else {
						api = o
					}
				}
			}
			if api == nil || metrics == nil || api.GetName() == metrics.GetName() {
				t.Fatal("want an API Service and a metrics Service")
			}
			checkListeners(t, objs, 9102)
			sm := kinds(objs)["ServiceMonitor"]
			sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			s := labels.SelectorFromSet(sel)
			if !s.Matches(labels.Set(metrics.GetLabels())) || s.Matches(labels.Set(api.GetLabels())) {
				t.Errorf("the ServiceMonitor selector %v must match the metrics Service only", sel)
			}
			eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["path"] != "/metrics" {
				t.Errorf("ServiceMonitor endpoints %v", eps)
			}
			jobLabel, _, _ := unstructured.NestedString(sm.Object, "spec", "jobLabel")
			job := metrics.GetLabels()[jobLabel]
			if jobLabel == "" || job != "tokenstore" {
				t.Errorf("the scrape job is the metrics Service's %q label, %q; want tokenstore for any release name", jobLabel, job)
			}
			rule, _ := yaml.Marshal(kinds(objs)["PrometheusRule"].Object["spec"])
			want := fmt.Sprintf(`absent(up{job=%q,namespace=%q} == 1)`, job, "ns-"+rel.name)
			if !strings.Contains(string(rule), want) {
				t.Errorf("TokenstoreDown does not ask for %s:\n%s", want, rule)
			}
			var ing networkingv1.Ingress
			into(t, kinds(objs)["Ingress"], &ing)
			for _, r := range ing.Spec.Rules {
				for _, p := range r.HTTP.Paths {
					routes := p.Path == "/metrics" || (*p.PathType != networkingv1.PathTypeExact && strings.HasPrefix("/metrics", strings.TrimSuffix(p.Path, "/")))
					if routes || p.Backend.Service.Name != api.GetName() || p.Backend.Service.Port.Name != "http" {
						t.Errorf("Ingress path %s %s → %s port %+v", p.Path, *p.PathType, p.Backend.Service.Name, p.Backend.Service.Port)
					}
				}
			}
		})
	}
	// The alert in the chart's own file, not a test stub.
	b, err := os.ReadFile(filepath.Join(chartDir(), "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `absent(up{job="tokenstore"} == 1)`) {
		t.Error(`files/alerts.yaml: TokenstoreDown must ask for up{job="tokenstore"}, the ServiceMonitor's job`)
	}
}

// checkListeners: the server container has two ports, the API's "http"
// (8080) and "metrics" (metricsPort), and the settings that open them,
// as the server's own loader reads them: /metrics on METRICS_ADDRESS, so
// not on the API's listener. The metrics Service reaches "metrics" only,
// the API Service "http" only.
func checkListeners(t *testing.T, objs []*unstructured.Unstructured, metricsPort int32) {
	t.Helper()
	c := deployment(t, objs).Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if len(c.Ports) != 2 || ports["http"] != 8080 || ports["metrics"] != metricsPort {
		t.Errorf("container ports %+v, want http 8080 and metrics %d", c.Ports, metricsPort)
	}
	if e := envOf(c)["TOKENSTORE_METRICS_ADDRESS"]; e.Value != fmt.Sprintf(":%d", metricsPort) || e.ValueFrom != nil {
		t.Errorf("TOKENSTORE_METRICS_ADDRESS %+v, want \":%d\"", e, metricsPort)
	}
	s := serverSettings(t, c)
	if s.ListenAddress != fmt.Sprintf(":%d", ports["http"]) || s.MetricsAddress != fmt.Sprintf(":%d", ports["metrics"]) {
		t.Errorf("the server would listen on %q (API) and %q (metrics); the container's ports are %v", s.ListenAddress, s.MetricsAddress, ports)
	}
	svcs := map[string]int{}
	for _, o := range objs {
		if o.GetKind() != "Service" {
			continue
		}
		var svc corev1.Service
		into(t, o, &svc)
		want := "http"
		if svc.Labels["app.kubernetes.io/component"] == "metrics" {
			want = "metrics"
		}
		svcs[want]++
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != want || svc.Spec.Ports[0].TargetPort.String() != want {
			t.Errorf("Service %s ports %+v: want one port %q to container port %q, and no other", svc.Name, svc.Spec.Ports, want, want)
		}
	}
	if svcs["http"] != 1 || svcs["metrics"] > 1 {
		t.Errorf("Services by port %v, want one API Service and at most one metrics Service", svcs)
	}
}

// serverSettings loads the settings the container's environment gives, with
// the server's own loader. Values from Secrets are left out (a database URL
// stands in for the one it needs), and so is a settings file.
func serverSettings(t *testing.T, c corev1.Container) *settings.Settings {
	t.Helper()
	env := map[string]string{settings.EnvPrefix + "DATABASE_URL": "postgres://tokenstore@postgres:5432/tokenstore"}
	for _, e := range c.Env {
		if e.ValueFrom == nil && e.Name != settings.SettingsEnv {
			env[e.Name] = e.Value
		}
	}
	s, err := settings.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the server container's settings do not load: %v", err)
	}
	return s
}

// The defaults and a moved metrics port (the metrics Service keeps its own
// port and follows the container's by name).
func TestListeners(t *testing.T) {
	checkListeners(t, renderDefaults(t), 9090)
	objs := renderDefaults(t, "--set", "metrics.port=9300,metrics.service.port=9400")
	checkListeners(t, objs, 9300)
	var msvc corev1.Service
	into(t, find(t, objs, "Service", "tokenstore-metrics"), &msvc)
	if msvc.Spec.Ports[0].Port != 9400 {
		t.Errorf("metrics Service port %d, want metrics.service.port 9400", msvc.Spec.Ports[0].Port)
	}
}

// The NetworkPolicy admits ingressFrom's peers (and the helm test pod) to
// the API's port only and metricsFrom's to the metrics port only; an empty
// list admits every source to its port, and no rule opens every port.
func TestNetworkPolicySeparatesListeners(t *testing.T) {
	nginx := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "ingress-nginx"}}}
	monitoring := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	other := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere"}}}
	policy := func(objs []*unstructured.Unstructured) networkingv1.NetworkPolicy {
		t.Helper()
		var np networkingv1.NetworkPolicy
		into(t, kinds(objs)["NetworkPolicy"], &np)
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				t.Errorf("an ingress rule opens every port: %+v", r)
			}
		}
		return np
	}
	// admits: some rule lets peer reach the named port.
	admits := func(np networkingv1.NetworkPolicy, port string, peer networkingv1.NetworkPolicyPeer) bool {
		for _, r := range np.Spec.Ingress {
			onPort := false
			for _, p := range r.Ports {
				onPort = onPort || (p.Port != nil && p.Port.String() == port)
			}
			if !onPort {
				continue
			}
			if len(r.From) == 0 {
				return true
			}
			for _, f := range r.From {
				if reflect.DeepEqual(f, peer) {
					return true
				}
			}
		}
		return false
	}
	for _, c := range []struct {
		name string
		objs []*unstructured.Unstructured
		want map[string]map[*networkingv1.NetworkPolicyPeer]bool // port → peer → admitted
	}{
		{"both lists", renderFull(t), map[string]map[*networkingv1.NetworkPolicyPeer]bool{
			"http":    {&nginx: true, &monitoring: false, &other: false},
			"metrics": {&nginx: false, &monitoring: true, &other: false},
		}},
		{"empty lists", renderDefaults(t, "--set", "networkPolicy.enabled=true"), map[string]map[*networkingv1.NetworkPolicyPeer]bool{
			"http":    {&nginx: true, &monitoring: true, &other: true},
			"metrics": {&nginx: true, &monitoring: true, &other: true},
		}},
		{"metricsFrom only", renderDefaults(t, "--set", "networkPolicy.enabled=true,networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring"), map[string]map[*networkingv1.NetworkPolicyPeer]bool{
			"http":    {&nginx: true, &monitoring: true, &other: true},
			"metrics": {&nginx: false, &monitoring: true, &other: false},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			np := policy(c.objs)
			for port, peers := range c.want {
				for peer, want := range peers {
					if got := admits(np, port, *peer); got != want {
						t.Errorf("%v admitted to %s: %v, want %v (rules %+v)", peer.NamespaceSelector.MatchLabels, port, got, want, np.Spec.Ingress)
					}
				}
			}
		})
	}
}

// renderMode: the monitoring.coreos.com objects are rendered only where the
// cluster serves their kinds, unless told otherwise.
func TestMonitoringRenderMode(t *testing.T) {
	dir := withMonitoringFiles(t)
	on := "serviceMonitor.enabled=true,prometheusRule.enabled=true"
	count := func(objs []*unstructured.Unstructured) int {
		n := 0
		for _, o := range objs {
			if o.GetAPIVersion() == "monitoring.coreos.com/v1" {
				n++
			}
		}
		return n
	}
	if n := count(render(t, dir, "-f", minimalValues(), "--set", on)); n != 0 {
		t.Errorf("skipIfMissing rendered %d objects in a cluster without the Prometheus Operator", n)
	}
	if n := count(render(t, dir, append([]string{"-f", minimalValues(), "--set", on}, monitoringAPIs...)...)); n != 2 {
		t.Errorf("skipIfMissing rendered %d objects in a cluster with the Prometheus Operator, want 2", n)
	}
	if n := count(render(t, dir, "-f", minimalValues(), "--set", on+",serviceMonitor.renderMode=alwaysRender,prometheusRule.renderMode=alwaysRender")); n != 2 {
		t.Errorf("alwaysRender rendered %d objects, want 2", n)
	}
}

// The jobs: values-driven, off by default, hooks that run after install and
// upgrade, migrate first, need no API credentials.
func TestJobs(t *testing.T) {
	objs := renderFull(t)
	jobs := map[string]batchv1.Job{}
	for _, o := range objs {
		if o.GetKind() == "Job" {
			var j batchv1.Job
			into(t, o, &j)
			jobs[j.Labels["app.kubernetes.io/component"]] = j
		}
	}
	want := map[string]string{
		"import":      "import --progress-every=500",
		"keys-rotate": "keys rotate --batch-size=200",
	}
	for name, args := range want {
		j, ok := jobs[name]
		if !ok {
			t.Errorf("no %s Job", name)
			continue
		}
		if h := j.Annotations["helm.sh/hook"]; h != "post-install,post-upgrade" {
			t.Errorf("%s: hook %q", name, h)
		}
		if j.Annotations["helm.sh/hook-delete-policy"] != "before-hook-creation" {
			t.Errorf("%s: a finished Job must stay (with its log) until the next run", name)
		}
		spec := j.Spec.Template.Spec
		if got := strings.Join(spec.Containers[0].Args, " "); got != args {
			t.Errorf("%s: args %q, want %q", name, got, args)
		}
		if len(spec.InitContainers) != 1 || strings.Join(spec.InitContainers[0].Args, " ") != "migrate up" {
			t.Errorf("%s: must migrate first (a first install's hook may run before any server pod)", name)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a ServiceAccount token it does not need", name)
		}
		if spec.RestartPolicy != corev1.RestartPolicyNever || j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit != 2 {
			t.Errorf("%s: restartPolicy %s backoffLimit %v", name, spec.RestartPolicy, j.Spec.BackoffLimit)
		}
		if j.Spec.TTLSecondsAfterFinished == nil || *j.Spec.TTLSecondsAfterFinished != 86400 {
			t.Errorf("%s: ttlSecondsAfterFinished %v", name, j.Spec.TTLSecondsAfterFinished)
		}
	}
	// the import runs before the rotation in one upgrade
	if jobs["import"].Annotations["helm.sh/hook-weight"] >= jobs["keys-rotate"].Annotations["helm.sh/hook-weight"] {
		t.Error("the import must come before the key rotation")
	}
	if k := kinds(renderDefaults(t)); k["Job"] != nil {
		t.Error("a Job is rendered by default")
	}
}

// helm test: a pod asks /readyz through the Service with the image's own
// probe command (the image has no shell or curl).
func TestHelmTestPod(t *testing.T) {
	for _, c := range []struct {
		args []string
		url  string
	}{
		{nil, "http://tokenstore.tokenstore.svc:80/readyz"},
		{[]string{"--set", "service.port=8443,fullnameOverride=ts"}, "http://ts.tokenstore.svc:8443/readyz"},
	} {
		var p corev1.Pod
		into(t, kinds(renderDefaults(t, c.args...))["Pod"], &p)
		if p.Annotations["helm.sh/hook"] != "test" {
			t.Errorf("the test pod is not a test hook: %v", p.Annotations)
		}
		// A passed test leaves no pod behind (helm uninstall would not
		// remove it); a failed one stays for its log.
		if p.Annotations["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
			t.Errorf("test pod delete policy %q", p.Annotations["helm.sh/hook-delete-policy"])
		}
		if got := strings.Join(p.Spec.Containers[0].Args, " "); got != "probe "+c.url {
			t.Errorf("test pod args %q, want probe %s", got, c.url)
		}
		if p.Spec.Containers[0].Image != image+":"+appVersion {
			t.Errorf("test pod image %s", p.Spec.Containers[0].Image)
		}
		if p.Spec.RestartPolicy != corev1.RestartPolicyNever || p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
			t.Errorf("test pod: restartPolicy %s, automount %v", p.Spec.RestartPolicy, p.Spec.AutomountServiceAccountToken)
		}
	}
	// A NetworkPolicy that admits only some sources still admits the test.
	objs := renderFull(t)
	var np networkingv1.NetworkPolicy
	into(t, kinds(objs)["NetworkPolicy"], &np)
	var tp corev1.Pod
	into(t, kinds(objs)["Pod"], &tp)
	admitted := false
	for _, peer := range np.Spec.Ingress[0].From {
		if peer.PodSelector != nil && peer.NamespaceSelector == nil && labels.SelectorFromSet(peer.PodSelector.MatchLabels).Matches(labels.Set(tp.Labels)) {
			admitted = true
		}
	}
	if !admitted {
		t.Errorf("the NetworkPolicy does not admit the helm test pod: %+v", np.Spec.Ingress)
	}
	if k := kinds(renderDefaults(t, "--set", "tests.enabled=false")); k["Pod"] != nil {
		t.Error("tests.enabled=false still renders the test pod")
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
	objs := renderDefaults(t)
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

// With watchNamespace, every namespaced right (and the server's watch) moves
// to that namespace; none is left in the release namespace, where the
// settings Secret is.
func TestWatchNamespace(t *testing.T) {
	objs := renderFull(t)
	for _, o := range objs {
		if o.GetKind() == "Role" || o.GetKind() == "RoleBinding" {
			if o.GetNamespace() != "tokenstore-providers" {
				t.Errorf("%s %s in namespace %s, want tokenstore-providers", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		}
	}
	env := envOf(deployment(t, objs).Spec.Template.Spec.Containers[0])
	if e := env["TOKENSTORE_WATCH_NAMESPACE"]; e.Value != "tokenstore-providers" {
		t.Errorf("TOKENSTORE_WATCH_NAMESPACE %+v", e)
	}
}

// The CRD the chart installs is the generated one: files/crds/ is a copy of
// config/crd/bases/ (hack/verify-chart.sh checks the same without Go), and
// the template changes only its labels and annotations.
func TestCRDInSync(t *testing.T) {
	src, err := filepath.Glob(filepath.Join(repoRoot(), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(src) == 0 {
		t.Fatal("no CRDs in config/crd/bases")
	}
	objs := renderDefaults(t)
	for _, s := range src {
		a, _ := os.ReadFile(s)
		b, err := os.ReadFile(filepath.Join(chartDir(), "files", "crds", filepath.Base(s)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/tokenstore/files/crds/%s differs from config/crd/bases; run hack/chart-sync-crd.sh", filepath.Base(s))
		}
		gen := decode(t, string(a))[0]
		got := find(t, objs, "CustomResourceDefinition", gen.GetName())
		if !reflect.DeepEqual(gen.Object["spec"], got.Object["spec"]) {
			t.Errorf("the rendered CRD %s's spec differs from config/crd/bases", gen.GetName())
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Error("the CRD is not kept on uninstall by default")
		}
	}
	if _, err := os.Stat(filepath.Join(chartDir(), "crds")); err == nil {
		t.Error("charts/tokenstore/crds/ exists: Helm would create the CRD from it and from templates/crds.yaml")
	}
	for _, o := range renderDefaults(t, "--set", "crds.keep=false") {
		if o.GetKind() == "CustomResourceDefinition" && o.GetAnnotations()["helm.sh/resource-policy"] != "" {
			t.Error("crds.keep=false still keeps the CRD")
		}
	}
	if kinds(renderDefaults(t, "--set", "crds.enabled=false"))["CustomResourceDefinition"] != nil {
		t.Error("crds.enabled=false still renders the CRD")
	}
}

// Every TOKENSTORE_ variable the chart sets is a setting the server reads
// (the loader ignores unknown ones, so a misspelt name would silently do
// nothing), or one of the import command's own.
func TestEnvNamesAreSettings(t *testing.T) {
	known := map[string]bool{settings.SettingsEnv: true, settings.EnvPrefix + "IMPORT_FROM": true, settings.EnvPrefix + "OLD_CRYPTOKEY": true}
	for _, n := range settings.Names() {
		known[settings.EnvPrefix+n] = true
	}
	for _, objs := range [][]*unstructured.Unstructured{renderDefaults(t, "--set", "importJob.enabled=true,keysRotateJob.enabled=true"), renderFull(t)} {
		for name, p := range podSpecs(t, objs) {
			for _, c := range allContainers(p.Spec) {
				for _, e := range c.Env {
					if !known[e.Name] {
						t.Errorf("%s/%s sets %s, which no tokenstore command reads", name, c.Name, e.Name)
					}
				}
			}
		}
	}
}
