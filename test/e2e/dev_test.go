// Package e2e runs `tokenstore dev` as a person would: the binary is built
// with `go build -tags dev` (the README's `go run -tags dev`), started as a
// subprocess with the README's command (plus a temporary data dir and free
// loopback ports), and driven over HTTP and in real headless Chromium.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/internal/testutil"
)

// binary is the tokenstore built once for all tests of this package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokenstore-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tokenstore")
	// The build flags are the README's: dev mode exists only in builds with
	// the dev tag (cmd/tokenstore/dev.go), so a README that lost the tag
	// would fail here rather than greet its readers with "no dev mode".
	flags, err := readmeBuildFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	build := exec.Command("go", append(append([]string{"build"}, flags...), "-o", binary, "./cmd/tokenstore")...)
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tokenstore:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// readmeBuildFlags are the go flags of the README's first command,
// `go run <flags> ./cmd/tokenstore dev`.
func readmeBuildFlags() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		return nil, fmt.Errorf("README: %w", err)
	}
	_, block, ok := strings.Cut(string(b), "```sh\n")
	if !ok {
		return nil, errors.New("README.md has no sh block")
	}
	first, _, _ := strings.Cut(block, "\n")
	first, _, _ = strings.Cut(first, "#")
	f := strings.Fields(first)
	if len(f) < 4 || f[0] != "go" || f[1] != "run" || f[len(f)-2] != "./cmd/tokenstore" || f[len(f)-1] != "dev" {
		return nil, fmt.Errorf("README.md's first command %q is not `go run [flags] ./cmd/tokenstore dev`", strings.TrimSpace(first))
	}
	return f[2 : len(f)-2], nil
}

// repoRoot is the module root: tests run in their package's folder.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// devServer is a running `tokenstore dev`.
type devServer struct {
	URL, IDP, DataDir string
	Out               *testutil.SyncBuffer
	cmd               *exec.Cmd
	done              chan error
}

func freePort(t *testing.T) string { return testutil.FreeAddr(t) }

// startDev runs `tokenstore dev` (the README's first command) with a
// temporary data dir and free loopback ports, waits for /readyz, and stops it
// with SIGINT when the test ends.
func startDev(t *testing.T, dataDir string) *devServer {
	t.Helper()
	return startDevOn(t, dataDir, freePort(t), freePort(t))
}

func startDevOn(t *testing.T, dataDir, api, idp string) *devServer {
	t.Helper()
	return startDevEnv(t, dataDir, api, idp)
}

// startDevEnv starts dev with extra environment settings (NAME=value).
func startDevEnv(t *testing.T, dataDir, api, idp string, env ...string) *devServer {
	t.Helper()
	d := &devServer{URL: "http://" + api, IDP: "http://" + idp, DataDir: dataDir, Out: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(binary, "dev", "--data-dir", dataDir, "--listen-address", api, "--idp-address", idp)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.Out, d.Out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting tokenstore dev: %v", err)
	}
	exited := make(chan struct{})
	go func() { d.done <- d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() { d.stop(t) })
	if err := testutil.WaitReady(d.URL+"/readyz", exited, 60*time.Second); err != nil {
		t.Fatalf("tokenstore dev: %v; its output:\n%s", err, d.Out)
	}
	return d
}

func (d *devServer) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("tokenstore dev did not stop within 15 s of SIGINT")
	}
	if t.Failed() {
		t.Logf("tokenstore dev output:\n%s", d.Out)
	}
}

// bearer gets an access token of the login issuer for a demo user, as the
// printed curl line does.
func (d *devServer) bearer(t *testing.T, user, password string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.IDP+"/dev/token", nil)
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/dev/token: %s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b))
}

type authorization struct {
	Provider string             `json:"provider"`
	State    string             `json:"state"`
	Metadata map[string]*string `json:"metadata"`
}

func (d *devServer) authorizations(t *testing.T, token string) []authorization {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, d.URL+"/api/v1.0/authorizations", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []authorization
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("authorizations: %s: %s", resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// manifestProviders reads the TokenProvider names and display names from a
// multi-document manifests file.
func manifestProviders(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the manifests file was not written: %v", err)
	}
	out := map[string]string{}
	for _, doc := range strings.Split(string(b), "\n---") {
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.Kind == "TokenProvider" {
			out[m.Metadata.Name] = m.Spec.Metadata.Name
		}
	}
	return out
}

// TestDevAsTheREADMESays starts `tokenstore dev`, checks what it prints,
// that the providers of the manifests file it wrote are listed, that an
// edit of that file is picked up while it runs, and that a restart keeps
// the data dir.
func TestDevAsTheREADMESays(t *testing.T) {
	dataDir := t.TempDir()
	d := startDev(t, dataDir)
	out := d.Out.String()
	for _, want := range []string{d.URL + "/", "alice", "alice-demo", "bob-demo", "curl -s -u alice:alice-demo -X POST " + d.IDP + "/dev/token",
		`curl -H "Authorization: Bearer $TOKEN" ` + d.URL + "/api/v1.0/demo-drive/token"} {
		if !strings.Contains(out, want) {
			t.Errorf("the start message lacks %q; it was:\n%s", want, out)
		}
	}
	manifests := filepath.Join(dataDir, "providers.yaml")
	want := manifestProviders(t, manifests)
	if len(want) < 2 {
		t.Fatalf("the manifests file has %d TokenProviders, want at least 2", len(want))
	}
	tok := d.bearer(t, "alice", "alice-demo")
	got := map[string]string{}
	for _, a := range d.authorizations(t, tok) {
		name := ""
		if n := a.Metadata["name"]; n != nil {
			name = *n
		}
		got[a.Provider] = name
		if a.State != "not_linked" {
			t.Errorf("%s: state %q for a new user, want not_linked", a.Provider, a.State)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listed providers %v, want those of %s: %v", got, manifests, want)
	}

	// The file is the user's to edit while it runs: a copy of demo-drive
	// under another name appears in the list.
	b, _ := os.ReadFile(manifests)
	extra := strings.SplitN(string(b), "kind: TokenProvider\nmetadata:\n  name: demo-drive\n", 2)
	if len(extra) != 2 {
		t.Fatalf("demo-drive's TokenProvider not found in %s", manifests)
	}
	doc := "kind: TokenProvider\nmetadata:\n  name: demo-drive-copy\n" + strings.SplitN(extra[1], "\n---", 2)[0]
	if err := os.WriteFile(manifests, append(b, []byte("\n---\napiVersion: tokenstore.io/v1alpha1\n"+doc+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		found := false
		for _, a := range d.authorizations(t, tok) {
			found = found || a.Provider == "demo-drive-copy"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a provider added to %s was not listed within 20 s", manifests)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A restart on the same data dir keeps the key, the database and the
	// edited file.
	d.stop(t)
	d2 := startDevOn(t, dataDir, strings.TrimPrefix(d.URL, "http://"), strings.TrimPrefix(d.IDP, "http://"))
	n := len(d2.authorizations(t, d2.bearer(t, "bob", "bob-demo")))
	if n != len(want)+1 {
		t.Errorf("after a restart %d providers are listed, want %d", n, len(want)+1)
	}
}

// TestDevRefusesNonLoopback: dev mode has demo passwords; it must not listen
// where other machines reach it, and must say why.
func TestDevRefusesNonLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"--listen-address", "0.0.0.0:18999"},
		{"--listen-address", "127.0.0.1:18999", "--idp-address", "0.0.0.0:19000"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, binary, append([]string{"dev", "--data-dir", t.TempDir()}, args...)...).CombinedOutput()
		cancel()
		if err == nil {
			t.Errorf("dev %v started; want a refusal", args)
			continue
		}
		if !strings.Contains(string(out), "loopback only") {
			t.Errorf("dev %v: the refusal does not say why: %s", args, out)
		}
	}
}
