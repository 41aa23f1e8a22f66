//go:build cluster

// Package cluster_test installs tokenstore on a real single-node Kubernetes
// cluster (kubelet, containerd, kube-proxy: hack/cluster/up.sh) with its
// Helm chart and drives it the way a platform team and its users would:
// the chart's own init container migrates a PostgreSQL the pods reach over
// the pod network, both replicas become Ready through their probes, `helm
// test` passes, TokenProviders applied with kubectl become Ready (status
// written by the elected leader), workload pods exchange kubelet-issued
// ServiceAccount tokens through the Service, a person signs in and links an
// account at an identity provider running as a pod, grants a ServiceAccount,
// revokes the grant; a `helm upgrade` rolls the pods under a steady load
// without one failed request, the leader's deletion hands status writing to
// the other replica within the lease duration, the stored credentials are
// byte-identical before and after, and `helm uninstall` leaves the CRD and
// the data.
//
// Run it with `make e2e-cluster` (part of `make test`), which builds and
// imports the images, starts the cluster, runs this suite and stops the
// cluster. On a failure the suite prints `kubectl describe`, the events and
// every pod's logs.
//
// Build tag `cluster`: `go test ./...` leaves it out (it needs root, the
// cluster and the images); `make test` runs it through `make e2e-cluster`.
package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/internal/crypto"
)

const (
	ns      = "tokenstore" // the release namespace docs/install.md uses
	teamNS  = "team-a"     // the workloads' namespace
	idpNS   = "idp"        // the identity provider's namespace
	release = "tokenstore"

	loginClientID     = "tokenstore-login"
	loginClientSecret = "login-client-secret-e2e"
	demoClientID      = "demo"
	demoClientSecret  = "demo-client-secret-e2e"
	// The example storage's client-credentials client (devidp).
	serviceClientID     = "sid1"
	serviceClientSecret = "verysecret"

	pgPort = 15432
)

// Images, as `make e2e-cluster` imports them into the node's containerd,
// and the addresses of the local cluster. Another cluster (docs/cluster.md,
// "Your own cluster") sets them through the environment.
var (
	// Fixed ClusterIPs, so that the addresses the test process (playing
	// the browser, from the host) and the pods use are one and the same
	// URL: the identity provider's issuer, and tokenstore's EXTERNAL_URL.
	// They must lie in the cluster's Service range.
	idpIP       = envOr("E2E_IDP_IP", "10.96.77.10")
	externalIP  = envOr("E2E_EXTERNAL_IP", "10.96.80.80")
	issuer      = "http://" + idpIP
	externalURL = "http://" + externalIP

	image      = envOr("E2E_IMAGE_REPOSITORY", "ghcr.io/tokenstore/tokenstore")
	imageTag   = envOr("E2E_IMAGE_TAG", "0.1.0")
	upgradeTag = envOr("E2E_UPGRADE_TAG", "0.1.0-e2e.2")
	idpImage   = envOr("E2E_TESTIDP_IMAGE", "localhost/tokenstore-e2e/testidp:1")
	exampleImg = envOr("E2E_EXAMPLE_IMAGE", "localhost/tokenstore-e2e/example:1")
	loadImage  = envOr("E2E_LOADCLIENT_IMAGE", "localhost/tokenstore-e2e/loadclient:1")
	nodeIP     = envOr("CLUSTER_NODE_IP", "10.245.0.1")
	// The database the pods use: a throwaway server the suite starts on
	// the node address, or E2E_DATABASE_URL (an empty database the pods
	// reach), with E2E_HOST_DATABASE_URL where this process reaches the
	// same database if that differs.
	databaseURL     = envOr("E2E_DATABASE_URL", fmt.Sprintf("postgres://postgres@%s:%d/tokenstore?sslmode=disable", nodeIP, pgPort))
	hostDatabaseURL = envOr("E2E_HOST_DATABASE_URL", databaseURL)
	// serviceURL is tokenstore's Service, as workloads in the cluster use it.
	serviceURL = "http://" + release + "." + ns + ".svc.cluster.local"
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// run runs a command with a timeout and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), "kubectl", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply applies a manifest given as text.
func apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command("kubectl", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n--- manifest ---\n%s", err, out, manifest)
	}
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(context.Background(), "helm", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually retries cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// dump prints what a person debugging a red run looks at first.
func dump(t *testing.T) {
	for _, n := range []string{ns, teamNS, idpNS} {
		for _, args := range [][]string{
			{"-n", n, "get", "all,tokenproviders,leases,secrets", "-o", "wide"},
			{"-n", n, "describe", "pods"},
			{"-n", n, "describe", "tokenproviders"},
			{"-n", n, "get", "events", "--sort-by=.lastTimestamp"},
			{"-n", n, "logs", "--all-containers", "--prefix", "--tail=200", "-l", "app.kubernetes.io/name"},
			{"-n", n, "logs", "--all-containers", "--prefix", "--tail=200", "-l", "e2e"},
		} {
			out, err := run(context.Background(), "kubectl", args...)
			if err != nil {
				out = err.Error()
			}
			t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
		}
	}
}

// postgres is a throwaway PostgreSQL server listening on the node address,
// the only host address pods can reach; pg_hba admits the pod network.
type postgres struct {
	bin, dir string
}

func startPostgres(t *testing.T) *postgres {
	t.Helper()
	if os.Getenv("E2E_DATABASE_URL") != "" {
		return &postgres{} // the caller's database
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		t.Fatal("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package (the suite runs a throwaway server for the pods)")
	}
	p := &postgres{bin: filepath.Dir(m[len(m)-1])}
	dir, err := os.MkdirTemp("", "tokenstore-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal("the suite runs as root and needs the postgres user to run initdb as")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p.pg(t, "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	// Trust is for this throwaway server only: it listens on the node
	// address alone, which nothing outside this machine can reach.
	hba := fmt.Sprintf("host all all %s/32 trust\nhost all all 10.244.0.0/16 trust\n", nodeIP)
	f, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(hba)
	f.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=%s -c fsync=off -c max_connections=100", pgPort, dir, nodeIP)
	p.pg(t, "pg_ctl", "-D", data, "-w", "-t", "30", "start", "-l", filepath.Join(dir, "log"), "-o", opts)
	t.Cleanup(func() {
		p.pg(t, "pg_ctl", "-D", data, "-w", "-t", "30", "stop", "-m", "fast")
		os.RemoveAll(dir)
	})
	conn := p.conn(t, "postgres")
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE tokenstore"); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *postgres) pg(t *testing.T, tool string, args ...string) {
	t.Helper()
	args = append([]string{"-u", "postgres", "--", filepath.Join(p.bin, tool)}, args...)
	if out, err := exec.Command("runuser", args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

func (p *postgres) conn(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", nodeIP, pgPort, db))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// credentials is the credentials table as PostgreSQL's COPY writes it: the
// exact stored bytes (ciphertexts included) of every row, in id order.
func (p *postgres) credentials(t *testing.T) string {
	t.Helper()
	c, err := pgx.Connect(context.Background(), hostDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var buf bytes.Buffer
	if _, err := c.PgConn().CopyTo(context.Background(), &buf, "COPY (SELECT * FROM credentials ORDER BY 1) TO STDOUT"); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// browser is a person's browser, from the host: it keeps cookies and
// follows redirects by hand so the test sees each hop.
type browser struct {
	t  *testing.T
	hc *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, hc: &http.Client{
		Jar:           jar,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *browser) do(method, u string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, redact(u), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

var secretParams = regexp.MustCompile(`(code|state|nonce|code_challenge|authRequestID)=[^&]*`)

// redact keeps codes and states out of the test log.
func redact(u string) string { return secretParams.ReplaceAllString(u, "$1=…") }

// signIn follows a redirect chain from start through the identity
// provider's login page (answered as alice) back to tokenstore, and
// returns where it ended.
func (b *browser) signIn(start string) *url.URL {
	b.t.Helper()
	next := start
	for hop := 0; hop < 12; hop++ {
		resp, body := b.do(http.MethodGet, next, nil, nil)
		u := resp.Request.URL
		switch {
		case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
			loc, err := resp.Location()
			if err != nil {
				b.t.Fatalf("redirect from %s without Location", redact(next))
			}
			next = loc.String()
			continue
		case resp.StatusCode == http.StatusOK && u.Host == idpIP && u.Path == "/login/username":
			// The provider's login page: post alice's name and password.
			form := url.Values{"id": {u.Query().Get("authRequestID")}, "username": {"alice"}, "password": {"alice-demo"}}
			r2, body2 := b.do(http.MethodPost, issuer+"/login/username", strings.NewReader(form.Encode()),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			loc, err := r2.Location()
			if err != nil {
				b.t.Fatalf("login at the provider: %s %s", r2.Status, body2)
			}
			next = loc.String()
			continue
		default:
			if u.Host == externalIP && resp.StatusCode == http.StatusOK {
				return u
			}
			b.t.Fatalf("sign-in stopped at %s: %s %s", redact(u.String()), resp.Status, truncate(body))
		}
	}
	b.t.Fatalf("sign-in from %s: too many redirects", redact(start))
	return nil
}

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "…"
	}
	return string(b)
}

// saToken asks the API server for a ServiceAccount token with tokenstore's
// audience, as the kubelet projects one into a pod.
func saToken(t *testing.T, namespace, sa string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, "-n", namespace, "create", "token", sa, "--audience=tokenstore", "--duration=10m"))
}

// exchange posts an RFC 8693 token exchange to base (one replica's pod IP
// or the Service) and returns the status and the decoded answer.
func exchange(t *testing.T, base, subjectToken, provider string) (int, map[string]any) {
	t.Helper()
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"audience":           {provider},
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).PostForm(base+"/api/oauth2/token", form)
	if err != nil {
		t.Fatalf("token exchange at %s: %v", base, err)
	}
	defer resp.Body.Close()
	var ans map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans
}

// podIPs are the tokenstore pods' addresses (the host reaches them over
// the pod bridge), to ask each replica on its own.
func podIPs(t *testing.T) map[string]string {
	t.Helper()
	out := kubectl(t, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=tokenstore,app.kubernetes.io/component=server",
		"-o", `jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name}={.status.podIP}{"\n"}{end}`)
	ips := map[string]string{}
	for _, l := range strings.Fields(out) {
		name, ip, _ := strings.Cut(l, "=")
		ips[name] = ip
	}
	return ips
}

func TestCluster(t *testing.T) {
	if _, err := run(context.Background(), "kubectl", "get", "--raw", "/readyz"); err != nil {
		t.Fatalf("no cluster: %v\nstart one with `make cluster-up` and `source hack/cluster/env.sh` (or run `make e2e-cluster`), or point KUBECONFIG at a cluster of your own (docs/install.md)", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dump(t)
		}
	})
	root := repoRoot(t)
	pg := startPostgres(t)
	for _, n := range []string{ns, teamNS, idpNS} {
		kubectl(t, "delete", "namespace", n, "--ignore-not-found", "--wait=true", "--timeout=2m")
	}
	kubectl(t, "create", "namespace", teamNS)
	kubectl(t, "create", "namespace", idpNS)
	t.Cleanup(func() {
		if os.Getenv("E2E_KEEP") == "" && !t.Failed() {
			run(context.Background(), "kubectl", "delete", "namespace", ns, teamNS, idpNS, "--wait=false")
		}
	})
	deployIdentityProvider(t)

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"install", func(t *testing.T) { install(t, root) }},
		{"providers", providers},
		{"workloads", workloads},
		{"upgrade", func(t *testing.T) { upgrade(t, root, pg) }},
		{"uninstall", func(t *testing.T) { uninstall(t, pg) }},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			t.FailNow() // each step builds on the one before
		}
	}
}

// podSpec is the spec of a test pod: one container of image with env (in
// order), run as 65532 without the API server's token; a readiness probe
// on probePath (port 8080 unless given in probePath as ":port/path") when
// set; with a ServiceAccount, a projected token with tokenstore's audience
// where the Go client reads it, as docs/workloads.md mounts it.
func podSpec(name, image, serviceAccount, probe string, env ...string) map[string]any {
	var envs []map[string]string
	for i := 0; i+1 < len(env); i += 2 {
		envs = append(envs, map[string]string{"name": env[i], "value": env[i+1]})
	}
	c := map[string]any{"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "env": envs}
	spec := map[string]any{
		"automountServiceAccountToken": false,
		"securityContext":              map[string]any{"runAsNonRoot": true, "runAsUser": 65532},
		"containers":                   []any{c},
	}
	if probe != "" {
		port, path := 8080, probe
		if p, rest, ok := strings.Cut(strings.TrimPrefix(probe, ":"), "/"); ok && strings.HasPrefix(probe, ":") {
			port, _ = strconv.Atoi(p)
			path = "/" + rest
		}
		c["ports"] = []any{map[string]any{"containerPort": port}}
		c["readinessProbe"] = map[string]any{"httpGet": map[string]any{"path": path, "port": port}, "periodSeconds": 1}
	}
	if serviceAccount != "" {
		spec["serviceAccountName"] = serviceAccount
		c["volumeMounts"] = []any{map[string]any{"name": "tokenstore-token", "mountPath": "/var/run/secrets/tokenstore", "readOnly": true}}
		spec["volumes"] = []any{map[string]any{"name": "tokenstore-token", "projected": map[string]any{"sources": []any{
			map[string]any{"serviceAccountToken": map[string]any{"audience": "tokenstore", "expirationSeconds": 3600, "path": "token"}},
		}}}}
	}
	return spec
}

// deployment is a one-replica Deployment of spec, labelled e2e=<name>.
func deployment(namespace, name string, spec map[string]any) string {
	labels := map[string]string{"e2e": name}
	return manifest(map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": namespace, "labels": labels},
		"spec": map[string]any{"replicas": 1, "selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{"metadata": map[string]any{"labels": labels}, "spec": spec}},
	})
}

func manifest(obj map[string]any) string {
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err) // maps of strings and numbers only
	}
	return string(b)
}

// deployIdentityProvider runs devidp as a pod behind a Service with a fixed
// ClusterIP: the issuer tokenstore's pods discover and the browser visits.
func deployIdentityProvider(t *testing.T) {
	clients, _ := json.Marshal([]map[string]any{
		{"id": loginClientID, "secret": loginClientSecret, "redirect_uris": []string{externalURL + "/api/oidc/callback"}},
		{"id": demoClientID, "secret": demoClientSecret, "redirect_uris": []string{externalURL + "/api/v1.0/demo/redirect_uri"}},
	})
	apply(t, deployment(idpNS, "idp", podSpec("idp", idpImage, "", ":5556/.well-known/openid-configuration",
		"ISSUER", issuer, "CLIENTS", string(clients))))
	apply(t, manifest(map[string]any{"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": "idp", "namespace": idpNS},
		"spec": map[string]any{"clusterIP": idpIP, "selector": map[string]string{"e2e": "idp"},
			"ports": []any{map[string]any{"port": 80, "targetPort": 5556}}},
	}))
	kubectl(t, "-n", idpNS, "rollout", "status", "deploy/idp", "--timeout=2m")
	eventually(t, 30*time.Second, "the identity provider answers at its issuer from the host", func() error {
		resp, err := http.Get(issuer + "/.well-known/openid-configuration")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
}

// installDoc returns the shell block of docs/install.md that follows the
// heading and contains marker, with the doc's placeholders replaced by this
// cluster's addresses. The suite runs the doc's own commands, so the doc
// cannot drift from what works; a block it can no longer find, or a
// placeholder it does not know, fails the suite.
func installDoc(t *testing.T, root, heading, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/install.md has no heading %q (the cluster suite runs its commands)", heading)
	}
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(text[i:], -1) {
		if !strings.Contains(block[1], marker) {
			continue
		}
		cmd := strings.NewReplacer(
			"https://tokenstore.example.com", externalURL,
			"https://auth.example.com/realms/example/.well-known/openid-configuration", issuer+"/.well-known/openid-configuration",
			"postgres://tokenstore:PASSWORD@postgres:5432/tokenstore", databaseURL,
			"'login-client-secret'", "'"+loginClientSecret+"'",
			"config.oidcClientID=tokenstore", "config.oidcClientID="+loginClientID,
		).Replace(block[1])
		if strings.Contains(cmd, "example.com") || strings.Contains(cmd, "PASSWORD") {
			t.Fatalf("docs/install.md's block under %q has a placeholder the cluster suite does not know:\n%s", heading, cmd)
		}
		return cmd
	}
	t.Fatalf("docs/install.md has no sh block with %q under %q (the cluster suite runs it)", marker, heading)
	return ""
}

// sh runs a shell script in the repository root.
func sh(t *testing.T, root, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n$ %s\n%s", err, script, out)
	}
	return string(out)
}

// install follows docs/install.md: a key from the image's own `keys
// generate`, the settings Secret, helm install (2 replicas, the default),
// migrations in the chart's init container, both pods Ready, helm test.
func install(t *testing.T, root string) {
	// §1: the CLI as a one-off pod prints a key.
	run(context.Background(), "kubectl", "delete", "pod", "tokenstore-keys", "--ignore-not-found")
	out := sh(t, root, installDoc(t, root, "### The command-line tool", "keys generate"))
	// The block prints kubectl's own lines around the key.
	keys := 0
	for _, l := range strings.Split(out, "\n") {
		if _, err := crypto.ParseKeyRing(strings.TrimSpace(l)); err == nil {
			keys++
		}
	}
	if keys != 1 {
		// A throwaway key of this test only, so printing it is harmless.
		t.Errorf("`keys generate` in the image (docs/install.md §1) printed %d keys, want 1:\n%s", keys, out)
	}
	// §2: the namespace and the settings Secret, as written.
	sh(t, root, installDoc(t, root, "## 2. The Secret with the sensitive settings", "create secret generic"))
	// §3: helm install as written, plus what this cluster needs: the
	// browser's address (a Service with a fixed ClusterIP in front of the
	// server pods, through the chart's extraObjects), the identity
	// provider pod's image, and --wait.
	extra := fmt.Sprintf(`[{"apiVersion":"v1","kind":"Service","metadata":{"name":"tokenstore-external","namespace":"%s"},`+
		`"spec":{"clusterIP":"%s","selector":{"app.kubernetes.io/name":"tokenstore","app.kubernetes.io/instance":"%s","app.kubernetes.io/component":"server"},`+
		`"ports":[{"port":80,"targetPort":"http"}]}}]`, ns, externalIP, release)
	helmInstall := installDoc(t, root, "## 3. Install", "helm install tokenstore charts/tokenstore")
	if !strings.Contains(helmInstall, "--set image.tag") {
		helmInstall = strings.TrimRight(helmInstall, "\n") + " \\\n  --set image.repository=" + image + " --set image.tag=" + imageTag
	}
	helmInstall = strings.TrimRight(helmInstall, "\n") + " \\\n  --set-json 'extraObjects=" + extra + "' --wait --timeout=4m\n"
	start := time.Now()
	sh(t, root, helmInstall)
	t.Logf("helm install --wait (docs/install.md §3): %s", time.Since(start).Round(time.Second))

	// Both pods Ready through their probes, each after its migrate init
	// container exited 0.
	out = kubectl(t, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=tokenstore,app.kubernetes.io/component=server", "-o", "json")
	var pods struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Conditions            []struct{ Type, Status string }
				InitContainerStatuses []struct {
					Name  string
					State struct {
						Terminated *struct{ ExitCode int } `json:"terminated"`
					}
				} `json:"initContainerStatuses"`
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("%d tokenstore pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			ready = ready || (c.Type == "Ready" && c.Status == "True")
		}
		if !ready {
			t.Errorf("pod %s is not Ready", p.Metadata.Name)
		}
		migrated := false
		for _, ic := range p.Status.InitContainerStatuses {
			migrated = migrated || (ic.State.Terminated != nil && ic.State.Terminated.ExitCode == 0)
		}
		if !migrated {
			t.Errorf("pod %s: no init container exited 0 (the chart's migrations)", p.Metadata.Name)
		}
	}
	// One init container applied the migrations, the other found them
	// applied (the advisory lock serialises them); both end up to date.
	applied := 0
	for _, p := range pods.Items {
		logs := kubectl(t, "-n", ns, "logs", p.Metadata.Name, "-c", "migrate")
		applied += strings.Count(logs, "applied 0")
		if !strings.Contains(logs, "database schema is up to date") {
			t.Errorf("pod %s: the migrate init container did not end with the schema up to date:\n%s", p.Metadata.Name, logs)
		}
	}
	if applied == 0 {
		t.Error("no migrate init container applied a migration to the empty database")
	}
	check := installDoc(t, root, "## 3. Install", "helm test tokenstore")
	out = sh(t, root, check)
	if !strings.Contains(out, "Phase:") || !strings.Contains(out, "Succeeded") {
		t.Errorf("helm test (docs/install.md §3) did not report a passing test:\n%s", out)
	}

	// The browser's address answers.
	eventually(t, 30*time.Second, "tokenstore answers at EXTERNAL_URL from the host", func() error {
		resp, err := http.Get(externalURL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
}

// providers: TokenProviders applied with kubectl become Ready, written by
// the leader alone; a Secret edit reaches both replicas.
func providers(t *testing.T) {
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: demo-client, namespace: %[1]s}
stringData: {client-secret: %[2]s}
---
apiVersion: v1
kind: Secret
metadata: {name: service-client, namespace: %[1]s}
stringData: {client-secret: %[3]s}
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: demo, namespace: %[1]s}
spec:
  discoveryURL: %[4]s/.well-known/openid-configuration
  clientID: %[5]s
  clientSecretRef: {name: demo-client, key: client-secret}
  scopes: [openid, email, profile, offline_access]
  metadata: {name: Demo Drive, description: the in-cluster identity provider}
  workloadAccess:
    serviceAccounts: [{namespace: %[6]s, name: reporter}]
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: service, namespace: %[1]s}
spec:
  discoveryURL: %[4]s/.well-known/openid-configuration
  clientID: %[7]s
  clientSecretRef: {name: service-client, key: client-secret}
  workloadAccess:
    serviceAccounts: [{namespace: %[6]s, name: reporter}]
`, ns, demoClientSecret, serviceClientSecret, issuer, demoClientID, teamNS, serviceClientID))
	for _, p := range []string{"demo", "service"} {
		kubectl(t, "-n", ns, "wait", "tokenprovider/"+p, "--for=condition=Ready", "--timeout=60s")
	}
	out := kubectl(t, "-n", ns, "get", "tokenproviders")
	if !regexp.MustCompile(`(?m)^demo\s+True\s+` + regexp.QuoteMeta(issuer)).MatchString(out) {
		t.Errorf("kubectl get tokenproviders does not show demo READY True with its issuer:\n%s", out)
	}

	// Status is written by the lease holder alone: every TokenProvider
	// event (each status change has one) was reported by that pod.
	holder := leaseHolder(t)
	checkReporter(t, holder)

	// A kubelet-style ServiceAccount token of team-a/reporter gets a
	// service token from each replica.
	kubectl(t, "-n", teamNS, "create", "serviceaccount", "reporter")
	sat := saToken(t, teamNS, "reporter")
	ips := podIPs(t)
	for name, ip := range ips {
		eventually(t, 30*time.Second, "a service token from "+name, func() error {
			if code, ans := exchange(t, "http://"+ip+":8080", sat, "service"); code != 200 || ans["access_token"] == "" {
				return fmt.Errorf("%d %v", code, ans["error"])
			}
			return nil
		})
	}

	// The client secret changed in its Secret: both replicas use the new
	// value without a restart. A wrong one is refused by the provider on
	// every replica; the right one again serves on every replica.
	kubectl(t, "-n", ns, "patch", "secret", "service-client", "-p", `{"stringData":{"client-secret":"not-the-secret"}}`)
	for name, ip := range ips {
		eventually(t, 30*time.Second, name+" uses the edited secret (refused by the provider)", func() error {
			code, ans := exchange(t, "http://"+ip+":8080", sat, "service")
			if code == 200 {
				return fmt.Errorf("still served a token with the old secret")
			}
			t.Logf("%s with the wrong secret: %d %v: %v", name, code, ans["error"], ans["error_description"])
			return nil
		})
	}
	// The provider's refusal of the client shows in the TokenProvider's
	// status (the leader's own calls set it), not only in answers.
	eventually(t, 30*time.Second, "service turns Ready=False, ClientRejected", func() error {
		out, err := run(context.Background(), "kubectl", "-n", ns, "get", "tokenprovider", "service",
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "ClientRejected" {
			return fmt.Errorf("Ready reason %q", strings.TrimSpace(out))
		}
		return nil
	})
	kubectl(t, "-n", ns, "patch", "secret", "service-client", "-p", fmt.Sprintf(`{"stringData":{"client-secret":%q}}`, serviceClientSecret))
	for name, ip := range ips {
		eventually(t, 30*time.Second, name+" serves again with the restored secret", func() error {
			if code, ans := exchange(t, "http://"+ip+":8080", sat, "service"); code != 200 {
				return fmt.Errorf("%d %v", code, ans["error"])
			}
			return nil
		})
	}
	kubectl(t, "-n", ns, "wait", "tokenprovider/service", "--for=condition=Ready", "--timeout=60s")
}

// checkReporter fails unless every TokenProvider event in the namespace
// was reported by pod (the events.k8s.io reportingInstance names the pod).
func checkReporter(t *testing.T, pod string) {
	t.Helper()
	out := kubectl(t, "-n", ns, "get", "events.events.k8s.io",
		"-o", `jsonpath={range .items[?(@.regarding.kind=="TokenProvider")]}{.regarding.name} {.reason} {.reportingInstance}{"\n"}{end}`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] == "" {
		t.Fatal("no TokenProvider events: the status writer reported nothing")
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " tokenstore-"+pod) {
			t.Errorf("a TokenProvider event not reported by the leader %s: %s", pod, l)
		}
	}
}

func leaseHolder(t *testing.T) string {
	t.Helper()
	var holder string
	eventually(t, 30*time.Second, "a leader holds the status writer's Lease", func() (err error) {
		holder, err = currentHolder()
		return err
	})
	return holder
}

// currentHolder is the pod holding the status writer's Lease now.
func currentHolder() (string, error) {
	out, err := run(context.Background(), "kubectl", "-n", ns, "get", "lease", "tokenstore-status-writer", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return "", err
	}
	// controller-runtime's identity is <hostname>_<uuid>; the hostname is the pod name.
	holder, _, _ := strings.Cut(strings.TrimSpace(out), "_")
	if holder == "" {
		return "", fmt.Errorf("no holder")
	}
	return holder, nil
}

// examplePod runs the client example once in team-a as reporter and
// returns whether it succeeded and its log.
func examplePod(t *testing.T, name, provider, subject, target string) (bool, string) {
	t.Helper()
	spec := podSpec("example", exampleImg, "reporter", "",
		"TOKENSTORE_URL", serviceURL, "TOKENSTORE_PROVIDER", provider, "TOKENSTORE_SUBJECT", subject,
		"TARGET_URL", target, "INTERVAL", "0")
	spec["restartPolicy"] = "Never"
	apply(t, manifest(map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": teamNS, "labels": map[string]string{"e2e": "example"}},
		"spec":     spec}))
	var phase string
	eventually(t, 2*time.Minute, "pod "+name+" finished", func() error {
		out, err := run(context.Background(), "kubectl", "-n", teamNS, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		if err != nil {
			return err
		}
		phase = strings.TrimSpace(out)
		if phase != "Succeeded" && phase != "Failed" {
			return fmt.Errorf("phase %q", phase)
		}
		return nil
	})
	return phase == "Succeeded", kubectl(t, "-n", teamNS, "logs", name)
}

// workloads: a service token for a pod through the Service; a person links
// an account and grants the pod's ServiceAccount; the pod gets the person's
// token; the grant revoked, the next request is refused.
func workloads(t *testing.T) {
	discovery := issuer + "/.well-known/openid-configuration"
	if ok, logs := examplePod(t, "service-token", "service", "", discovery); !ok || !strings.Contains(logs, "200 OK") {
		t.Fatalf("the example pod did not get a service token and call with it (ok %v):\n%s", ok, logs)
	}

	b := newBrowser(t)
	b.signIn(externalURL + "/api/oidc/login?return_url=" + url.QueryEscape(externalURL+"/"))
	resp, body := b.do(http.MethodGet, externalURL+"/api/whoami", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("whoami after sign-in: %s %s", resp.Status, body)
	}
	var who struct {
		UserID string `json:"user_id"`
	}
	json.Unmarshal(body, &who)
	if who.UserID == "" {
		t.Fatalf("whoami has no user_id: %s", body)
	}
	b.signIn(externalURL + "/api/v1.0/demo/authorize?return_url=" + url.QueryEscape(externalURL+"/"))
	resp, body = b.do(http.MethodGet, externalURL+"/api/v1.0/demo/token", nil, nil)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"access_token"`)) {
		t.Fatalf("alice's token after linking: %s %s", resp.Status, truncate(body))
	}

	origin := map[string]string{"Origin": externalURL, "Content-Type": "application/json"}
	resp, body = b.do(http.MethodPost, externalURL+"/api/v1.0/demo/grants", strings.NewReader(`{"service_account": "team-a/reporter"}`), origin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("grant: %s %s", resp.Status, body)
	}
	var grant struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(body, &grant)

	userinfo := issuer + "/userinfo"
	var disc struct {
		Userinfo string `json:"userinfo_endpoint"`
	}
	if r, err := http.Get(discovery); err == nil {
		json.NewDecoder(r.Body).Decode(&disc)
		r.Body.Close()
		if disc.Userinfo != "" {
			userinfo = disc.Userinfo
		}
	}
	// alice's token, in the pod, is accepted by the provider's userinfo.
	if ok, logs := examplePod(t, "delegated-token", "demo", who.UserID, userinfo); !ok || !strings.Contains(logs, "200 OK") {
		t.Fatalf("the example pod did not get alice's token under her grant (ok %v):\n%s", ok, logs)
	}

	resp, body = b.do(http.MethodDelete, fmt.Sprintf("%s/api/v1.0/grants/%d", externalURL, grant.ID), nil, origin)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("revoke grant: %s %s", resp.Status, body)
	}
	ok, logs := examplePod(t, "delegated-after-revoke", "demo", who.UserID, userinfo)
	if ok || !strings.Contains(logs, "no_grant") {
		t.Fatalf("after the grant was revoked the pod was not refused with no_grant (ok %v):\n%s", ok, logs)
	}
}

// loadStats reads the load client's counts over the pod network.
type loadStats struct {
	OK       int      `json:"ok"`
	Failed   int      `json:"failed"`
	Failures []string `json:"failures"`
}

func readLoad(t *testing.T, ip string) loadStats {
	t.Helper()
	var s loadStats
	eventually(t, 10*time.Second, "the load client's counts", func() error {
		resp, err := http.Get("http://" + ip + ":8080/stats")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&s)
	})
	return s
}

// upgrade: helm upgrade to a new image tag under a steady load, then the
// leader deleted; no request fails, status writing moves within the lease
// duration, the stored credentials are unchanged.
func upgrade(t *testing.T, root string, pg *postgres) {
	before := pg.credentials(t)
	if strings.Count(before, "\n") < 1 {
		t.Fatalf("no stored credential to compare (alice linked one): %q", before)
	}
	apply(t, deployment(teamNS, "load", podSpec("load", loadImage, "reporter", "/healthz",
		"TOKENSTORE_URL", serviceURL, "TOKENSTORE_PROVIDER", "service", "RATE", "20")))
	kubectl(t, "-n", teamNS, "rollout", "status", "deploy/load", "--timeout=2m")
	loadIP := strings.TrimSpace(kubectl(t, "-n", teamNS, "get", "pods", "-l", "e2e=load", "-o", "jsonpath={.items[0].status.podIP}"))
	time.Sleep(3 * time.Second)
	if s := readLoad(t, loadIP); s.OK == 0 || s.Failed != 0 {
		t.Fatalf("the load client before the upgrade: %+v", s)
	}
	if resp, err := http.Post("http://"+loadIP+":8080/reset", "", nil); err == nil {
		resp.Body.Close()
	}

	start := time.Now()
	helm(t, "upgrade", release, filepath.Join(root, "charts", "tokenstore"), "-n", ns, "--reuse-values",
		"--set", "image.tag="+upgradeTag, "--wait", "--timeout=5m")
	t.Logf("helm upgrade --wait: %s", time.Since(start).Round(time.Second))
	// helm --wait returns once the new pods are Ready; the old ones are
	// still finishing (preStop sleep, in-flight requests) and must go
	// without a failed request.
	eventually(t, 90*time.Second, "only the upgraded pods left", func() error {
		out, err := run(context.Background(), "kubectl", "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=tokenstore,app.kubernetes.io/component=server",
			"-o", `jsonpath={range .items[*]}{.spec.containers[0].image}{"\n"}{end}`)
		if err != nil {
			return err
		}
		if strings.Count(out, ":"+upgradeTag) != 2 || strings.Count(strings.TrimSpace(out), "\n") != 1 {
			return fmt.Errorf("pods run:\n%s", out)
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	s := readLoad(t, loadIP)
	t.Logf("during the upgrade: %d answers, %d failed", s.OK, s.Failed)
	if s.Failed != 0 || s.OK < 100 {
		t.Fatalf("requests during the rolling upgrade: %d ok, %d failed (want none failed, at least 100 made):\n%s", s.OK, s.Failed, strings.Join(s.Failures, "\n"))
	}

	// The leader deleted (gracefully, as kubectl does): it keeps serving
	// and holding the Lease through its preStop sleep, gives the Lease
	// back when it stops, and the other replica takes it and writes the
	// status of a changed TokenProvider within the lease duration (15 s)
	// of that.
	holder := leaseHolder(t)
	kubectl(t, "-n", ns, "delete", "pod", holder, "--wait=false")
	deleted := time.Now()
	var next string
	eventually(t, 60*time.Second, "another pod holds the Lease", func() error {
		var err error
		if next, err = currentHolder(); err != nil {
			return err
		}
		if next == holder {
			return fmt.Errorf("still %s", holder)
		}
		return nil
	})
	tookOver := time.Since(deleted)
	kubectl(t, "-n", ns, "patch", "tokenprovider", "demo", "--type=merge", "-p", `{"spec":{"metadata":{"description":"after the leader left"}}}`)
	gen := strings.TrimSpace(kubectl(t, "-n", ns, "get", "tokenprovider", "demo", "-o", "jsonpath={.metadata.generation}"))
	eventually(t, 15*time.Second, "status of generation "+gen+" written by the new leader "+next, func() error {
		out, err := run(context.Background(), "kubectl", "-n", ns, "get", "tokenprovider", "demo",
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].observedGeneration}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != gen {
			return fmt.Errorf("Ready's observedGeneration %q", strings.TrimSpace(out))
		}
		return nil
	})
	written := time.Since(deleted)
	t.Logf("leader %s deleted: %s took the Lease after %s, status of the next change written after %s (preStop sleep 10 s, lease 15 s)",
		holder, next, tookOver.Round(100*time.Millisecond), written.Round(100*time.Millisecond))
	if written > 25*time.Second {
		t.Errorf("status writing moved %s after the leader's deletion, more than its preStop sleep (10 s) plus the lease duration (15 s)", written.Round(time.Second))
	}
	kubectl(t, "-n", ns, "rollout", "status", "deploy/"+release, "--timeout=3m")
	time.Sleep(3 * time.Second)
	s = readLoad(t, loadIP)
	if s.Failed != 0 {
		t.Fatalf("requests failed while the leader was replaced: %d ok, %d failed:\n%s", s.OK, s.Failed, strings.Join(s.Failures, "\n"))
	}
	if after := pg.credentials(t); after != before {
		t.Fatalf("stored credentials changed across the upgrade:\nbefore %q\nafter  %q", before, after)
	}
	kubectl(t, "-n", teamNS, "delete", "deploy", "load", "--wait=false")
}

// uninstall: helm uninstall leaves the CRD (crds.keep), the TokenProviders
// and the data in PostgreSQL, as the chart documents.
func uninstall(t *testing.T, pg *postgres) {
	before := pg.credentials(t)
	helm(t, "uninstall", release, "-n", ns, "--wait", "--timeout=2m")
	if _, err := run(context.Background(), "kubectl", "get", "crd", "tokenproviders.tokenstore.io"); err != nil {
		t.Errorf("the CRD is gone after helm uninstall: %v", err)
	}
	if out := kubectl(t, "-n", ns, "get", "tokenproviders", "-o", "name"); !strings.Contains(out, "tokenprovider.tokenstore.io/demo") {
		t.Errorf("TokenProviders gone after helm uninstall: %q", out)
	}
	// The pods finish their preStop sleep and go; nothing of the release
	// stays behind (the helm test pod included).
	eventually(t, 90*time.Second, "the release's objects gone after helm uninstall", func() error {
		out, err := run(context.Background(), "kubectl", "-n", ns, "get", "deploy,svc,pods,jobs", "-l", "app.kubernetes.io/instance="+release, "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left:\n%s", out)
		}
		return nil
	})
	if after := pg.credentials(t); after != before {
		t.Errorf("helm uninstall changed the stored credentials")
	}
	// Reinstalling later finds them: that is the point of keeping the CRD.
	kubectl(t, "delete", "crd", "tokenproviders.tokenstore.io", "--wait=true", "--timeout=1m")
}
