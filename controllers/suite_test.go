package controllers_test

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
	scheme    = runtime.NewScheme()

	// logs collects everything the managers log, to check at the end that
	// no client secret was ever written to a log line.
	logs = &testutil.SyncBuffer{}
	// secretsUsed are the client secrets the tests put in Secrets.
	secretsMu   sync.Mutex
	secretsUsed []string
)

func TestMain(m *testing.M) {
	flag.Parse() // for testing.Verbose
	os.Exit(run(m))
}

func run(m *testing.M) int {
	assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver", "kubectl")
	if err != nil {
		fmt.Fprintln(os.Stderr, "controllers tests: "+err.Error())
		return 1
	}
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	verbose := testing.Verbose()
	logf.SetLogger(funcr.New(func(prefix, args string) {
		line := prefix + " " + args + "\n"
		logs.Write([]byte(line))
		if verbose {
			os.Stderr.WriteString(line)
		}
	}, funcr.Options{Verbosity: 1}))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err = env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "controllers tests: starting envtest with the binaries in %s: %v\n", assets, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "controllers tests: stopping envtest: %v\n", err)
		}
	}()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "controllers tests: client: %v\n", err)
		return 1
	}
	code := m.Run()

	// No client secret in any log line.
	all := logs.String()
	secretsMu.Lock()
	defer secretsMu.Unlock()
	for _, s := range secretsUsed {
		if strings.Contains(all, s) {
			fmt.Fprintln(os.Stderr, "controllers tests: a client secret was written to the log")
			code = 1
		}
	}
	return code
}

// testOptions make discovery re-checks and retries fast, so that failures
// and recoveries show within seconds.
var testOptions = controllers.Options{
	RefreshInterval: time.Second,
	MinBackoff:      200 * time.Millisecond,
	MaxBackoff:      time.Second,
}

func testDiscoverer() *providers.Discoverer {
	return providers.NewDiscoverer(nil, providers.DiscovererOptions{TTL: time.Second, FailureTTL: 100 * time.Millisecond, Timeout: 3 * time.Second})
}

// replica is one running manager with its own registry, like one pod.
type replica struct {
	mgr      ctrl.Manager
	registry *providers.Registry
	ctrls    *controllers.Controllers
	cancel   context.CancelFunc
	done     chan struct{}
}

type replicaConfig struct {
	namespaces     []string
	leaderElection bool
	leaseNamespace string
	fieldOwner     string
	opts           *controllers.Options
	discoverer     *providers.Discoverer
	// health replaces the registry's token-endpoint tracker (defaults).
	health *providers.TokenEndpointHealth
	// statusClient, when set, wraps the client the status reconciler
	// reads and writes with (a cache that lags, for one test).
	statusClient func(client.Client) client.Client
}

// startReplica starts a manager that watches only the given namespaces (so
// tests do not see each other's objects) and stops it at the end of the
// test.
func startReplica(tb testing.TB, rc replicaConfig) *replica {
	tb.Helper()
	ns := map[string]cache.Config{}
	for _, n := range rc.namespaces {
		ns[n] = cache.Config{}
	}
	mopts := ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cache.Options{DefaultNamespaces: ns},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers run in one test process, with the same
		// controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if rc.leaderElection {
		mopts.LeaderElection = true
		mopts.LeaderElectionID = "tokenstore-test"
		mopts.LeaderElectionNamespace = rc.leaseNamespace
		mopts.LeaderElectionReleaseOnCancel = true
		mopts.LeaseDuration = ptr.To(4 * time.Second)
		mopts.RenewDeadline = ptr.To(3 * time.Second)
		mopts.RetryPeriod = ptr.To(300 * time.Millisecond)
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		tb.Fatalf("creating a manager: %v", err)
	}
	opts := testOptions
	if rc.opts != nil {
		opts = *rc.opts
	}
	opts.FieldOwner = rc.fieldOwner
	d := rc.discoverer
	if d == nil {
		d = testDiscoverer()
	}
	reg := providers.NewRegistry()
	if rc.health != nil {
		reg.SetTokenEndpointHealth(rc.health)
	}
	c, err := controllers.SetupWithManager(mgr, reg, d, opts)
	if err != nil {
		tb.Fatalf("setting up the controllers: %v", err)
	}
	if rc.statusClient != nil {
		c.Status.Client = rc.statusClient(c.Status.Client)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{mgr: mgr, registry: reg, ctrls: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := mgr.Start(ctx); err != nil {
			tb.Errorf("manager stopped with an error: %v", err)
		}
	}()
	tb.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

// newNamespace creates a namespace with a unique name.
func newNamespace(tb testing.TB, prefix string) string {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		tb.Fatalf("creating a namespace: %v", err)
	}
	return ns.Name
}

// newSecretValue returns a fresh client secret and remembers it for the
// log check.
func newSecretValue() string {
	return rememberSecret("s3cr3t-" + rand.Text())
}

// rememberSecret adds s to the values that must never be logged.
func rememberSecret(s string) string {
	secretsMu.Lock()
	secretsUsed = append(secretsUsed, s)
	secretsMu.Unlock()
	return s
}

func clientSecret(ns, name, key, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data:       map[string][]byte{key: []byte(value)},
	}
}

// eventually polls f until it returns nil or the timeout passes. Timeouts
// are generous: the machine has two cores shared with other builds.
func eventually(tb testing.TB, timeout time.Duration, what string, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const wait = 60 * time.Second
