package chart

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

type apiServer struct {
	client     client.Client
	kubeconfig string // an admin's, for helm and kubectl
	kubectl    string
}

// startAPIServer starts a kube-apiserver and etcd with no CRD installed: the
// chart's own template installs it.
func startAPIServer(t *testing.T) apiServer {
	t.Helper()
	assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver", "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "chart-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return apiServer{client: c, kubeconfig: path, kubectl: filepath.Join(assets, "kubectl")}
}

// namespace makes a namespace with its default ServiceAccount, which the
// controller-manager would make and the ServiceAccount admission plugin
// wants for a pod that names none (the helm test pod).
func (a apiServer) namespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}},
	} {
		if err := a.client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// create creates objects as `kubectl apply` would order them: CRDs first,
// established before anything else. A CRD that already exists (one install
// made it for the next) is left as it is.
func (a apiServer) create(t *testing.T, what string, objs []*unstructured.Unstructured) int {
	t.Helper()
	ctx := context.Background()
	created := 0
	for _, crdsFirst := range []bool{true, false} {
		for _, o := range objs {
			if (o.GetKind() == "CustomResourceDefinition") != crdsFirst {
				continue
			}
			err := a.client.Create(ctx, o.DeepCopy(), client.FieldOwner("chart-test"))
			if crdsFirst && apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				t.Errorf("%s: the API server refused %s %s/%s: %v", what, o.GetKind(), o.GetNamespace(), o.GetName(), err)
				continue
			}
			created++
			if crdsFirst {
				a.waitEstablished(t, o.GetName())
			}
		}
	}
	return created
}

func (a apiServer) waitEstablished(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := a.client.Get(context.Background(), types.NamespacedName{Name: name}, &crd); err == nil {
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("CRD %s not established within 30 s", name)
}

// Every object the chart renders, with its defaults and with every value
// set, is created on a real kube-apiserver, which validates it (schema,
// defaulting, field checks such as the preStop sleep action), the CRD
// included: it comes from the chart, and the chart's sample TokenProvider
// is created through its validation. Objects whose CRDs belong to the
// Prometheus Operator are checked by TestMetrics, not here. Then the API
// server's RBAC authorizer says what each install's ServiceAccount may do.
func TestRenderedObjectsAcceptedByAPIServer(t *testing.T) {
	a := startAPIServer(t)
	for _, in := range []struct {
		ns   string
		objs []*unstructured.Unstructured
	}{
		{ns: namespace, objs: renderFull(t)},
		{ns: "tokenstore-defaults", objs: renderIn(t, "tokenstore-defaults", chartDir(), "-f", minimalValues())},
	} {
		a.namespace(t, in.ns)
		var objs []*unstructured.Unstructured
		for _, o := range in.objs {
			if o.GetAPIVersion() == "monitoring.coreos.com/v1" {
				continue
			}
			if o.GetKind() == "RoleBinding" || o.GetKind() == "Role" {
				a.namespace(t, o.GetNamespace()) // watchNamespace, made before install
			}
			objs = append(objs, o)
		}
		n := a.create(t, in.ns, objs)
		t.Logf("namespace %s: the API server accepted %d rendered objects", in.ns, n)
	}

	samples := readmeYAML(t)
	if len(samples) < 2 {
		t.Fatalf("README has no sample TokenProvider and Secret (found %d objects)", len(samples))
	}
	for _, o := range samples {
		o.SetNamespace(namespace)
	}
	a.create(t, "README sample", samples)

	// The defaults: everything namespaced in the release namespace.
	checkAccess(t, a.client, "tokenstore-defaults", "tokenstore", []access{
		{"tokenstore-defaults", "tokenstore.io", "tokenproviders", "", "watch", true},
		{"tokenstore-defaults", "tokenstore.io", "tokenproviders", "status", "patch", true},
		{"tokenstore-defaults", "", "secrets", "", "list", true},
		{"tokenstore-defaults", "", "events", "", "create", true},
		{"tokenstore-defaults", "coordination.k8s.io", "leases", "", "update", true},
		{"", "authentication.k8s.io", "tokenreviews", "", "create", true},
		{"some-workload-ns", "", "serviceaccounts", "", "get", true},
		// least rights
		{"default", "", "secrets", "", "get", false},
		{"", "", "secrets", "", "list", false},
		{"tokenstore-defaults", "", "secrets", "", "update", false},
		{"tokenstore-defaults", "tokenstore.io", "tokenproviders", "", "update", false},
		{"default", "tokenstore.io", "tokenproviders", "", "list", false},
		{"default", "coordination.k8s.io", "leases", "", "create", false},
		{"tokenstore-defaults", "", "pods", "", "list", false},
	})
	// watchNamespace: the rights move there, and the server's credentials
	// cannot read the settings Secret (CRYPTOKEY) in the release namespace.
	checkAccess(t, a.client, namespace, "tokenstore-server", []access{
		{"tokenstore-providers", "tokenstore.io", "tokenproviders", "", "watch", true},
		{"tokenstore-providers", "", "secrets", "", "get", true},
		{"tokenstore-providers", "coordination.k8s.io", "leases", "", "update", true},
		{"", "authentication.k8s.io", "tokenreviews", "", "create", true},
		{namespace, "", "secrets", "", "get", false},
		{namespace, "", "secrets", "", "list", false},
		{namespace, "", "secrets", "", "watch", false},
		{namespace, "tokenstore.io", "tokenproviders", "", "list", false},
	})
}

// readmeYAML returns the objects in the chart README's yaml code blocks.
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

type access struct {
	ns, group, resource, sub, verb string
	allowed                        bool
}

// checkAccess asks the API server's RBAC authorizer what a ServiceAccount
// may do.
func checkAccess(t *testing.T, c client.Client, saNamespace, sa string, want []access) {
	t.Helper()
	user := "system:serviceaccount:" + saNamespace + ":" + sa
	for _, a := range want {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"},
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

// A real `helm install`, `upgrade` and `uninstall` against the API server
// (there is no kubelet: pods are never run, which test/cluster does): the
// CRD comes from the chart and is kept on uninstall with the TokenProviders;
// the NOTES tell a newcomer things that work; a changed settings Secret rolls
// the pods at the next upgrade, an unchanged one does not; no secret value
// reaches anything helm prints or stores.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	a := startAPIServer(t)
	ctx := context.Background()
	const ns = "ts-helm"
	a.namespace(t, ns)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	cryptoKey := base64.StdEncoding.EncodeToString(key)
	dbPassword := "db-" + base64.RawURLEncoding.EncodeToString(key[:9])
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tokenstore-settings", Namespace: ns},
		StringData: map[string]string{
			"DATABASE_URL": "postgres://tokenstore:" + dbPassword + "@postgres:5432/tokenstore",
			"CRYPTOKEY":    cryptoKey,
		},
	}
	if err := a.client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	secretValues := []string{cryptoKey, dbPassword}

	env := []string{"KUBECONFIG=" + a.kubeconfig}
	var printed strings.Builder
	helmRun := func(args ...string) string {
		t.Helper()
		out, stderr, err := runHelm(t, env, args...)
		printed.WriteString(out + stderr)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr)
		}
		return out
	}
	install := []string{"install", "ts", chartDir(), "-n", ns, "-f", minimalValues(), "--set", "config.externalURL=https://tokens.example.com"}
	settingsVersion := func() string {
		t.Helper()
		var d appsv1.Deployment
		if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ts-tokenstore"}, &d); err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Annotations["tokenstore.io/settings-version"]
	}

	notes := helmRun(install...)
	for _, want := range []string{
		"https://tokens.example.com/api/oidc/callback",
		"https://tokens.example.com/api/v1.0/<provider>/redirect_uri",
		"port-forward svc/ts-tokenstore 8080:80",
		"curl http://localhost:8080/readyz",
		"curl http://localhost:8080/api/_health",
		"docs/install.md, section 4",
		"helm test ts -n ts-helm",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	// What never works from a newcomer's machine: an API call without a
	// login (401) and a sample whose discovery URL does not exist.
	for _, bad := range []string{"/authorizations", "raw/main", "apply -f https://", "replace-me"} {
		if strings.Contains(notes, bad) {
			t.Errorf("NOTES suggest %q, which cannot work:\n%s", bad, notes)
		}
	}

	v1 := settingsVersion()
	if v1 == "" {
		t.Fatal("helm install found the settings Secret but the pods carry no settings version")
	}
	// The CRD is the chart's, and established.
	var crd apiextensionsv1.CustomResourceDefinition
	if err := a.client.Get(ctx, types.NamespacedName{Name: "tokenproviders.tokenstore.io"}, &crd); err != nil {
		t.Fatalf("helm install did not install the CRD: %v", err)
	}
	if crd.Annotations["meta.helm.sh/release-name"] != "ts" {
		t.Errorf("the CRD is not the release's: %v", crd.Annotations)
	}
	a.waitEstablished(t, crd.Name)
	samples := readmeYAML(t)
	for _, o := range samples {
		o.SetNamespace(ns)
	}
	a.create(t, "README sample", samples)

	upgrade := []string{"upgrade", "ts", chartDir(), "-n", ns, "--reuse-values"}
	helmRun(upgrade...)
	if v := settingsVersion(); v != v1 {
		t.Errorf("an upgrade with the same Secret changed the settings version (%s → %s): every upgrade would roll the pods", v1, v)
	}
	secret.StringData = map[string]string{"CRYPTOKEY": cryptoKey + "," + cryptoKey}
	if err := a.client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	helmRun(upgrade...)
	if v := settingsVersion(); v == v1 {
		t.Error("the settings Secret changed but the upgrade left the pods' settings version as it was: they would not roll")
	}

	stored := helmRun("get", "all", "ts", "-n", ns)
	for _, v := range secretValues {
		if strings.Contains(printed.String(), v) || strings.Contains(stored, v) {
			t.Error("a secret value of the settings Secret appears in helm's output or the stored release")
		}
	}

	helmRun("uninstall", "ts", "-n", ns)
	if err := a.client.Get(ctx, types.NamespacedName{Name: crd.Name}, &crd); err != nil {
		t.Errorf("helm uninstall removed the CRD (and so every TokenProvider): %v", err)
	}
	tp := &unstructured.Unstructured{}
	tp.SetAPIVersion("tokenstore.io/v1alpha1")
	tp.SetKind("TokenProvider")
	if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "example-oidc"}, tp); err != nil {
		t.Errorf("the TokenProvider did not survive helm uninstall: %v", err)
	}
	var d appsv1.Deployment
	if err := a.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ts-tokenstore"}, &d); !apierrors.IsNotFound(err) {
		t.Errorf("the Deployment is still there after uninstall: %v", err)
	}
	// Installed again, the release takes the kept CRD back; a second
	// release elsewhere leaves it to the first.
	helmRun(install...)
	a.namespace(t, "ts-second")
	helmRun("install", "second", chartDir(), "-n", "ts-second", "-f", minimalValues(), "--set", "crds.enabled=false")
}

// config/default installs a working service without Helm: every object is
// accepted, the image is the chart's, the RBAC is bound in its namespace
// only, and the Secret and ConfigMap docs/install.md ("Without Helm") has
// you make give, through the manifests' envFrom prefixes, settings the
// server loads and starts with.
func TestKustomizeDefault(t *testing.T) {
	a := startAPIServer(t)
	cmd := exec.Command(a.kubectl, "kustomize", filepath.Join(repoRoot(), "config", "default"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	objs := decode(t, string(out))
	a.create(t, "config/default", objs)
	checkAccess(t, a.client, "tokenstore-system", "tokenstore", []access{
		{"tokenstore-system", "tokenstore.io", "tokenproviders", "", "watch", true},
		{"tokenstore-system", "tokenstore.io", "tokenproviders", "status", "patch", true},
		{"tokenstore-system", "", "secrets", "", "get", true},
		{"tokenstore-system", "coordination.k8s.io", "leases", "", "update", true},
		{"", "authentication.k8s.io", "tokenreviews", "", "create", true},
		{"some-workload-ns", "", "serviceaccounts", "", "get", true},
		{"default", "", "secrets", "", "get", false},
		{"", "", "secrets", "", "list", false},
		{"default", "tokenstore.io", "tokenproviders", "", "list", false},
	})

	var d appsv1.Deployment
	into(t, find(t, objs, "Deployment", "tokenstore"), &d)
	spec := d.Spec.Template.Spec
	sources := map[string]bool{}
	for _, c := range allContainers(spec) {
		if c.Image != image+":"+appVersion {
			t.Errorf("container %s runs %s, want the chart's %s:%s", c.Name, c.Image, image, appVersion)
		}
		for _, e := range c.EnvFrom {
			if e.Prefix != settings.EnvPrefix {
				t.Errorf("container %s: envFrom without the %s prefix the server reads: %+v", c.Name, settings.EnvPrefix, e)
			}
			switch {
			case e.SecretRef != nil && (e.SecretRef.Optional == nil || !*e.SecretRef.Optional):
				sources["Secret/"+e.SecretRef.Name] = true
			case e.ConfigMapRef != nil && (e.ConfigMapRef.Optional == nil || !*e.ConfigMapRef.Optional):
				sources["ConfigMap/"+e.ConfigMapRef.Name] = true
			}
		}
	}
	if len(spec.InitContainers) != 1 || strings.Join(spec.InitContainers[0].Args, " ") != "migrate up" {
		t.Errorf("config/default must migrate before serving: %+v", spec.InitContainers)
	}

	// What install.md has you create in tokenstore-system.
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	if i := strings.Index(section, "## 8. Without Helm"); i >= 0 {
		section = section[i:]
	} else {
		t.Fatal(`docs/install.md has no "## 8. Without Helm" section`)
	}
	cmds := documentedCreates(section, "kubectl -n tokenstore-system create ")
	if len(cmds) != 2 {
		t.Fatalf("want the Secret and the ConfigMap commands in install.md's Without Helm section, found %d", len(cmds))
	}
	env := map[string]string{}
	for _, c := range cmds {
		m := regexp.MustCompile(`^kubectl -n tokenstore-system create (secret generic|configmap) (\S+)`).FindStringSubmatch(c)
		if m == nil {
			t.Fatalf("cannot read %q", c)
		}
		kind := map[string]string{"secret generic": "Secret", "configmap": "ConfigMap"}[m[1]]
		if !sources[kind+"/"+m[2]] {
			t.Errorf("install.md makes %s %s, which the Deployment does not read (it reads %v)", kind, m[2], sources)
		}
		delete(sources, kind+"/"+m[2])
		for _, lit := range regexp.MustCompile(`--from-literal=([A-Z_]+)=('[^']*'|"[^"]*"|\S+)`).FindAllStringSubmatch(c, -1) {
			v := strings.Trim(lit[2], `'"`)
			if strings.Contains(v, "openssl rand -base64 32") {
				v = base64.StdEncoding.EncodeToString(make([]byte, 32))
			}
			env[settings.EnvPrefix+lit[1]] = v
		}
	}
	for s := range sources {
		t.Errorf("the Deployment needs %s, which install.md never has you make", s)
	}
	known := map[string]bool{}
	for _, n := range settings.Names() {
		known[settings.EnvPrefix+n] = true
	}
	for name := range env {
		if !known[name] {
			t.Errorf("install.md's key %s becomes %s, which is no setting the server reads", strings.TrimPrefix(name, settings.EnvPrefix), name)
		}
	}
	// the server's own loader, as `serve` calls it
	s, err := settings.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the documented settings do not load: %v", err)
	}
	if err := s.Require(settings.RequireCryptoKey, settings.RequireLogin); err != nil {
		t.Errorf("serve would refuse to start with the documented settings: %v", err)
	}
	if !strings.HasPrefix(s.DatabaseURL, "postgres://") {
		t.Errorf("DATABASE_URL %q is not the documented PostgreSQL URL", s.DatabaseURL)
	}
}

// documentedCreates returns each shell command of doc that starts with
// prefix, its continuation lines (ending in a backslash) joined.
func documentedCreates(doc, prefix string) []string {
	var cmds []string
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], prefix) {
			continue
		}
		var b strings.Builder
		for ; i < len(lines); i++ {
			l := strings.TrimSpace(lines[i])
			b.WriteString(strings.TrimSuffix(l, "\\") + " ")
			if !strings.HasSuffix(l, "\\") {
				break
			}
		}
		cmds = append(cmds, strings.TrimSpace(b.String()))
	}
	return cmds
}
