package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tokenstore/tokenstore/internal/testutil"
)

// The workload tests run against one real kube-apiserver and etcd
// (envtest), started on first use and stopped by TestMain: it issues real
// ServiceAccount tokens (TokenRequest) and answers TokenReview.

var (
	kubeOnce sync.Once
	kubeEnv  *envtest.Environment
	kubeCfg  *rest.Config
	kubeErr  error
)

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime's logger; without one it
	// complains with a stack trace.
	logf.SetLogger(logr.Discard())
	code := m.Run()
	if kubeEnv != nil {
		if err := kubeEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}
	os.Exit(code)
}

// kubeConfig returns a copy of the admin rest config of the shared API
// server, starting it on first use. Missing binaries fail the test (never
// skip it): these tests are the proof that workload authentication works.
func kubeConfig(t testing.TB) *rest.Config {
	t.Helper()
	kubeOnce.Do(func() {
		assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver")
		if err != nil {
			kubeErr = err
			return
		}
		env := &envtest.Environment{BinaryAssetsDirectory: assets}
		cfg, err := env.Start()
		if err != nil {
			kubeErr = fmt.Errorf("starting envtest with the binaries in %s (built by hack/build-envtest.sh): %w", assets, err)
			return
		}
		kubeEnv, kubeCfg = env, cfg
	})
	if kubeErr != nil {
		t.Fatal(kubeErr)
	}
	return rest.CopyConfig(kubeCfg)
}

// countingTransport counts TokenReview requests on their way to the API
// server: instrumentation of the real client, not a fake.
type countingTransport struct {
	next    http.RoundTripper
	reviews *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokenreviews") {
		c.reviews.Add(1)
	}
	return c.next.RoundTrip(r)
}

// countingConfig returns a rest config whose TokenReviews are counted.
func countingConfig(t testing.TB, reviews *atomic.Int64) *rest.Config {
	cfg := kubeConfig(t)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, reviews: reviews} })
	return cfg
}

// cluster is a test's view of the API server: an admin client and one
// namespace of its own.
type cluster struct {
	t  testing.TB
	cs kubernetes.Interface
	ns string
}

var nsCounter atomic.Int64

func newCluster(t testing.TB) *cluster {
	t.Helper()
	cs, err := kubernetes.NewForConfig(kubeConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("wl-%d-%d", os.Getpid(), nsCounter.Add(1))
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, cs: cs, ns: ns}
}

func (k *cluster) serviceAccount(name string) {
	k.t.Helper()
	if _, err := k.cs.CoreV1().ServiceAccounts(k.ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

func (k *cluster) deleteServiceAccount(name string) {
	k.t.Helper()
	if err := k.cs.CoreV1().ServiceAccounts(k.ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// token issues a real ServiceAccount token through TokenRequest (10
// minutes, the shortest the API server allows), as the kubelet does for a
// projected volume.
func (k *cluster) token(name, audience string) string {
	k.t.Helper()
	tr, err := k.cs.CoreV1().ServiceAccounts(k.ns).CreateToken(context.Background(), name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("TokenRequest for %s/%s: %v", k.ns, name, err)
	}
	return tr.Status.Token
}
