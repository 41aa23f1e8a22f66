// Command kube runs the Kubernetes side of the workload benchmark
// (hack/bench/workload.sh): a real kube-apiserver and etcd from the envtest
// binaries (KUBEBUILDER_ASSETS, built by hack/build-envtest.sh), with
// tokenstore's CRD installed, and in it what a cluster install has:
//
//   - a namespace with the TokenProviders read from the bench fixture's
//     providers.yaml (alpha, whose people's tokens workloads get under a
//     grant) plus "svc", a TokenProvider for the same OP with its
//     client-credentials client whose spec.workloadAccess lists the
//     benchmark's ServiceAccount;
//   - a user for tokenstore (client certificate) bound to the generated
//     ClusterRole config/rbac/role.yaml and nothing else, so that serve's
//     TokenReviews, watches and ServiceAccount lookups go through RBAC;
//   - a ServiceAccount "bench-workload" and -tokens real tokens for it from
//     the TokenRequest API (audience -audience, one hour), as the kubelet
//     projects them.
//
// It writes into -dir (mode 0600):
//   - kubeconfig: tokenstore's (the RBAC-bound user);
//   - kubeconfig.admin: the envtest admin's, for reading the API server's
//     own request counters;
//   - env.kube: the TOKENSTORE_* settings that put serve on this cluster;
//   - forms.delegated: one form-encoded token-exchange body a line, line i
//     asking for user-%08d(i)'s token at -provider with token i;
//   - forms.service: the same tokens asking for svc's service token;
//   - kube-ready: written last.
//
// The forms hold ServiceAccount tokens; nothing here prints them. The
// control plane stops (and its data is removed) on SIGTERM/SIGINT, after
// -lifetime, or (with -stdin) when standard input closes.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/hack/bench/internal/benchproc"
)

const (
	saName   = "bench-workload"
	userName = "tokenstore-bench"
	// The zitadel example storage's client-credentials client (a fixed
	// test value of that library, not a secret).
	serviceClientID     = "sid1"
	serviceClientSecret = "verysecret"
	// RFC 8693 identifiers (as server.GrantTypeTokenExchange and
	// server.TokenTypeJWT).
	grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
)

func main() {
	var (
		assets    = flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory with etcd and kube-apiserver")
		dir       = flag.String("dir", "", "the bench fixture's folder (providers.yaml is read from it; outputs go into it)")
		root      = flag.String("root", ".", "the repository (config/crd/bases, config/rbac/role.yaml)")
		ns        = flag.String("namespace", "tokenstore-bench", "namespace of the TokenProviders and the ServiceAccount")
		audience  = flag.String("audience", "tokenstore", "audience of the ServiceAccount tokens (serve's WORKLOAD_AUDIENCE)")
		provider  = flag.String("provider", "alpha", "provider of the delegated tokens")
		tokens    = flag.Int("tokens", 32, "ServiceAccount tokens to issue (and form lines to write): one per person")
		lifetime  = flag.Duration("lifetime", 30*time.Minute, "stop by itself after this long")
		holdStdin = flag.Bool("stdin", false, "also stop when standard input closes")
	)
	flag.Parse()
	if *assets == "" || *dir == "" {
		log.Fatal("-assets (or KUBEBUILDER_ASSETS) and -dir are required")
	}
	if *tokens < 1 || *tokens > 10000 {
		log.Fatal("-tokens must be 1..10000")
	}
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := benchproc.Context(*lifetime, *holdStdin)
	defer stop()

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(*root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: *assets,
	}
	t0 := time.Now()
	if _, err := env.Start(); err != nil {
		log.Fatalf("starting envtest with the binaries in %s: %v", *assets, err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			log.Printf("stopping envtest: %v", err)
		}
	}()
	log.Printf("kube-apiserver up in %v", time.Since(t0).Round(time.Millisecond))
	if err := setup(ctx, env, *dir, *root, *ns, *audience, *provider, *tokens); err != nil {
		log.Print(err)
		return // stops the control plane
	}
	<-ctx.Done()
}

func setup(ctx context.Context, env *envtest.Environment, dir, root, ns, audience, provider string, tokens int) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	kube, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	write := func(name string, b []byte) error {
		return os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}

	// tokenstore's user: the generated ClusterRole, bound to it alone.
	roleYAML, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(bytes.TrimPrefix(roleYAML, []byte("---\n")), &role); err != nil {
		return fmt.Errorf("config/rbac/role.yaml: %w", err)
	}
	if err := kube.Create(ctx, &role); err != nil {
		return fmt.Errorf("creating the ClusterRole: %w", err)
	}
	if err := kube.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: userName}},
	}); err != nil {
		return fmt.Errorf("binding the ClusterRole: %w", err)
	}
	user, err := env.AddUser(envtest.User{Name: userName}, nil)
	if err != nil {
		return fmt.Errorf("envtest user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := write("kubeconfig", kc); err != nil {
		return err
	}
	admin, err := env.AddUser(envtest.User{Name: "bench-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("envtest admin: %w", err)
	}
	if kc, err = admin.KubeConfig(); err != nil {
		return err
	}
	if err := write("kubeconfig.admin", kc); err != nil {
		return err
	}

	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	if err := kube.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: saName}}); err != nil {
		return err
	}

	// The fixture's TokenProvider (alpha) and its Secret, in the namespace.
	manifests, err := os.ReadFile(filepath.Join(dir, "providers.yaml"))
	if err != nil {
		return err
	}
	var alpha *v1alpha1.TokenProvider
	for _, doc := range strings.Split(string(manifests), "\n---\n") {
		var probe struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			return fmt.Errorf("providers.yaml: %w", err)
		}
		var obj client.Object
		switch probe.Kind {
		case "Secret":
			obj = &corev1.Secret{}
		case "TokenProvider":
			alpha = &v1alpha1.TokenProvider{}
			obj = alpha
		default:
			continue
		}
		if err := yaml.Unmarshal([]byte(doc), obj); err != nil {
			return fmt.Errorf("providers.yaml: %w", err)
		}
		obj.SetNamespace(ns)
		if err := kube.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %s %s: %w", probe.Kind, obj.GetName(), err)
		}
	}
	if alpha == nil || alpha.Name != provider {
		return fmt.Errorf("providers.yaml has no TokenProvider %q", provider)
	}
	// svc: the same OP through its client-credentials client; the
	// benchmark's ServiceAccount may get its service tokens.
	if err := kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-client"},
		StringData: map[string]string{"clientSecret": serviceClientSecret}}); err != nil {
		return err
	}
	if err := kube.Create(ctx, &v1alpha1.TokenProvider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc"},
		Spec: v1alpha1.TokenProviderSpec{
			DiscoveryURL:    alpha.Spec.DiscoveryURL,
			ClientID:        serviceClientID,
			ClientSecretRef: &v1alpha1.SecretKeyRef{Name: "svc-client", Key: "clientSecret"},
			WorkloadAccess:  &v1alpha1.WorkloadAccess{ServiceAccounts: []v1alpha1.ServiceAccountRef{{Namespace: ns, Name: saName}}},
		},
	}); err != nil {
		return fmt.Errorf("creating TokenProvider svc: %w", err)
	}

	// Real ServiceAccount tokens, as the kubelet projects them.
	var delegated, service strings.Builder
	for i := range tokens {
		tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](3600)}}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: saName}}
		if err := kube.SubResource("token").Create(ctx, sa, tr); err != nil {
			return fmt.Errorf("TokenRequest for %s/%s: %w", ns, saName, err)
		}
		if tr.Status.Token == "" {
			return fmt.Errorf("TokenRequest for %s/%s: no token in the answer", ns, saName)
		}
		form := url.Values{
			"grant_type":         {grantTypeTokenExchange},
			"subject_token_type": {tokenTypeJWT},
			"subject_token":      {tr.Status.Token},
		}
		form.Set("audience", "svc")
		service.WriteString(form.Encode() + "\n")
		form.Set("audience", provider)
		form.Set("requested_subject", fmt.Sprintf("user-%08d", i))
		delegated.WriteString(form.Encode() + "\n")
	}
	if err := write("forms.delegated", []byte(delegated.String())); err != nil {
		return err
	}
	if err := write("forms.service", []byte(service.String())); err != nil {
		return err
	}
	if err := write("env.kube", fmt.Appendf(nil, `KUBECONFIG=%q
TOKENSTORE_WATCH_NAMESPACE=%q
TOKENSTORE_PROVIDERS_FILE=""
TOKENSTORE_WORKLOAD_AUDIENCE=%q
`, filepath.Join(dir, "kubeconfig"), ns, audience)); err != nil {
		return err
	}
	log.Printf("namespace %s: TokenProviders %s and svc, ServiceAccount %s, %d tokens", ns, provider, saName, tokens)
	return write("kube-ready", []byte(time.Now().UTC().Format(time.RFC3339)+"\n"))
}
