// Package image builds the image with `make image` into a temporary
// directory, once, and inspects it as its users would: the OCI layout's
// tags, the platforms, the configuration, the files, the binary inside
// (run from the extracted root filesystem), skopeo's and a second build's
// view of it, and the Dockerfile that describes the same image.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/test/image/inspect"
)

const (
	version    = "0.0.0-imagetest.1"
	repository = "ghcr.io/tokenstore/tokenstore"
)

// built is the image of this package's tests.
var built struct {
	dir        string // IMAGE_DIR
	layout     *inspect.Layout
	commit     string
	created    time.Time
	appVersion string
	rootfs     map[string]string                 // extracted root filesystem by "os/arch"
	headers    map[string]map[string]*tar.Header // its entries
}

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/image:", err)
		code = 1
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "tokenstore-image-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	built.dir = filepath.Join(tmp, "image")
	if err := makeImage(built.dir); err != nil {
		return 0, err
	}
	if built.commit, err = git("rev-parse", "HEAD"); err != nil {
		return 0, err
	}
	ct, err := git("log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return 0, err
	}
	sec, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("commit time %q: %w", ct, err)
	}
	built.created = time.Unix(sec, 0).UTC()
	if built.appVersion, err = chartAppVersion(); err != nil {
		return 0, err
	}
	if built.layout, err = inspect.ReadLayout(filepath.Join(built.dir, "tokenstore")); err != nil {
		return 0, err
	}
	built.rootfs, built.headers = map[string]string{}, map[string]map[string]*tar.Header{}
	for p, img := range built.layout.Images {
		dir := filepath.Join(tmp, "rootfs-"+strings.ReplaceAll(p, "/", "-"))
		if built.headers[p], err = inspect.RootFS(img, dir); err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
		built.rootfs[p] = dir
	}
	return m.Run(), nil
}

// makeImage runs `make image` as a person would, into dir, with the
// timestamp left to its default (the commit's time).
func makeImage(dir string) error {
	cmd := exec.Command("make", "--no-print-directory", "image", "VERSION="+version, "IMAGE_DIR="+dir)
	cmd.Dir = repoRoot()
	cmd.Env = withoutEnv(os.Environ(), "SOURCE_DATE_EPOCH")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("make image: %w", err)
	}
	fmt.Fprintf(os.Stderr, "test/image: make image took %s\n", time.Since(start).Round(time.Second))
	return nil
}

func withoutEnv(env []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func git(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func chartAppVersion() (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "charts", "tokenstore", "Chart.yaml"))
	if err != nil {
		return "", err
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil || c.AppVersion == "" {
		return "", fmt.Errorf("Chart.yaml appVersion %q: %v", c.AppVersion, err)
	}
	return c.AppVersion, nil
}

// TestLayoutTags: one image, tagged with the version and with the chart's
// appVersion (the tag the chart installs by default), each carrying the
// full name `ctr images import` gives it.
func TestLayoutTags(t *testing.T) {
	want := map[string]string{
		version:          repository + ":" + version,
		built.appVersion: repository + ":" + built.appVersion,
	}
	if len(built.layout.Tags) != len(want) {
		t.Errorf("tags %v, want %v", built.layout.Tags, want)
	}
	for tag, name := range want {
		if got, ok := built.layout.Tags[tag]; !ok || got != name {
			t.Errorf("tag %s: io.containerd.image.name %q (present: %v), want %q", tag, got, ok, name)
		}
	}
	if _, err := os.Stat(filepath.Join(built.dir, "tokenstore.oci.tar")); err != nil {
		t.Errorf("no OCI archive: %v", err)
	}
}

func TestPlatforms(t *testing.T) {
	if got := built.layout.Platforms(); !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("platforms %v, want exactly linux/amd64 and linux/arm64", got)
	}
	for p, img := range built.layout.Images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := cf.OS + "/" + cf.Architecture; got != p {
			t.Errorf("the %s entry of the index holds a %s image", p, got)
		}
	}
}

// wantLabels are the image's OCI labels, the same on both platforms.
func wantLabels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "tokenstore",
		"org.opencontainers.image.description": "Keeps OAuth2 / OpenID Connect refresh tokens encrypted and hands out fresh access tokens",
		"org.opencontainers.image.source":      "https://github.com/tokenstore/tokenstore",
		"org.opencontainers.image.url":         "https://github.com/tokenstore/tokenstore",
		"org.opencontainers.image.revision":    built.commit,
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     built.created.Format(time.RFC3339),
	}
}

func TestConfig(t *testing.T) {
	for p, img := range built.layout.Images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if !slices.Equal(c.Entrypoint, []string{"/tokenstore"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
			t.Errorf("%s: entrypoint %q cmd %q, want [/tokenstore] [serve]", p, c.Entrypoint, c.Cmd)
		}
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532 (nonroot)", p, c.User)
		}
		for k, v := range wantLabels() {
			if c.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", p, k, c.Labels[k], v)
			}
		}
		// Reproducible: every time in the image is the commit's.
		if !cf.Created.Time.Equal(built.created) {
			t.Errorf("%s: created %s, want the commit's time %s", p, cf.Created.Time, built.created)
		}
		for _, h := range cf.History {
			if !h.Created.Time.Equal(built.created) {
				t.Errorf("%s: history %q created %s, want %s", p, h.CreatedBy, h.Created.Time, built.created)
			}
		}
		for name, h := range built.headers[p] {
			if !h.ModTime.Equal(built.created) {
				t.Errorf("%s: %s modified %s, want %s", p, name, h.ModTime, built.created)
			}
		}
	}
}

// TestFilesystem: exactly the files of a distroless static image and the
// binary; nothing to run but /tokenstore (no shell, no busybox, no /bin).
func TestFilesystem(t *testing.T) {
	want := map[string]struct {
		mode     int64
		uid, gid int
	}{
		"etc":                               {0o755, 0, 0},
		"etc/group":                         {0o644, 0, 0},
		"etc/nsswitch.conf":                 {0o644, 0, 0},
		"etc/passwd":                        {0o644, 0, 0},
		"etc/ssl":                           {0o755, 0, 0},
		"etc/ssl/certs":                     {0o755, 0, 0},
		"etc/ssl/certs/ca-certificates.crt": {0o644, 0, 0},
		"home":                              {0o755, 0, 0},
		"home/nonroot":                      {0o700, 65532, 65532},
		"tmp":                               {0o1777, 0, 0},
		"tokenstore":                        {0o755, 0, 0},
	}
	for p, headers := range built.headers {
		for name, h := range headers {
			w, ok := want[name]
			if !ok {
				t.Errorf("%s: unexpected %s in the image", p, name)
				continue
			}
			if h.Mode&0o7777 != w.mode || h.Uid != w.uid || h.Gid != w.gid {
				t.Errorf("%s: %s mode %o owner %d:%d, want %o %d:%d", p, name, h.Mode&0o7777, h.Uid, h.Gid, w.mode, w.uid, w.gid)
			}
			base := filepath.Base(name)
			if strings.HasPrefix(name, "bin") || strings.HasPrefix(name, "usr") || strings.HasPrefix(name, "sbin") ||
				slices.Contains([]string{"sh", "bash", "dash", "ash", "busybox"}, base) {
				t.Errorf("%s: %s would be a shell or a place for one", p, name)
			}
		}
		for name := range want {
			if _, ok := headers[name]; !ok {
				t.Errorf("%s: %s missing", p, name)
			}
		}

		root := built.rootfs[p]
		passwd := read(t, filepath.Join(root, "etc/passwd"))
		for _, line := range []string{"root:x:0:0:", "nobody:x:65534:65534:", "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"} {
			if !strings.Contains(passwd, "\n"+line) && !strings.HasPrefix(passwd, line) {
				t.Errorf("%s: /etc/passwd lacks %q:\n%s", p, line, passwd)
			}
		}
		if group := read(t, filepath.Join(root, "etc/group")); !strings.Contains(group, "\nnonroot:x:65532:") {
			t.Errorf("%s: /etc/group lacks nonroot:\n%s", p, group)
		}
		// The CA bundle is the one Go's TLS reads on Linux; it must hold the
		// public roots a provider's certificate chains to.
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(read(t, filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")))) {
			t.Errorf("%s: the CA bundle holds no certificate", p)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBinaryRuns runs the amd64 image's binary from its extracted root
// filesystem and checks both platforms' binaries are static executables
// for their machine.
func TestBinaryRuns(t *testing.T) {
	for p, m := range map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64} {
		got, err := inspect.StaticELF(filepath.Join(built.rootfs[p], "tokenstore"))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		} else if got != m {
			t.Errorf("%s: binary for %s", p, got)
		}
	}
	bin := filepath.Join(built.rootfs["linux/amd64"], "tokenstore")
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tokenstore version: %v\n%s", err, out)
	}
	want := fmt.Sprintf("tokenstore %s (commit %s, ", version, built.commit)
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "linux/amd64") {
		t.Errorf("tokenstore version printed %q, want it to start with %q", out, want)
	}
	// The README's first command, with the image's binary: it explains.
	out, err = exec.Command(bin, "dev").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no dev mode") || !strings.Contains(string(out), "go run -tags dev ./cmd/tokenstore dev") {
		t.Errorf("tokenstore dev in the image: err %v, output %q; want a refusal that says how to get dev mode", err, out)
	}
}

// TestNoDemoIdentityProvider: the image's binary holds no code of
// internal/devidp (its functions would be named in the binary's function
// table, which -s does not strip) and none of its demo users. A dev build,
// stripped the same way, is the control that the check can see it.
func TestNoDemoIdentityProvider(t *testing.T) {
	const pkg = "tokenstore/tokenstore/internal/devidp."
	for p, root := range built.rootfs {
		bin := filepath.Join(root, "tokenstore")
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{pkg, "alice-demo"} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s: the binary contains %q", p, s)
			}
		}
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if tags := setting(info, "-tags"); tags != "" {
			t.Errorf("%s: built with -tags %q; the production binary has none", p, tags)
		}
	}

	dev := filepath.Join(t.TempDir(), "tokenstore-dev")
	cmd := exec.Command("go", "build", "-tags", "dev", "-trimpath", "-ldflags", "-s -w", "-o", dev, "./cmd/tokenstore")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags dev: %v\n%s", err, out)
	}
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(pkg)) {
		t.Errorf("a dev build does not contain %q either: the check above proves nothing", pkg)
	}
}

func setting(info *buildinfo.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

// TestReproducible builds the image a second time: the same commit, version
// and toolchain give the same index digest and the same archive bytes.
func TestReproducible(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "image")
	if err := makeImage(dir); err != nil {
		t.Fatal(err)
	}
	again, err := inspect.ReadLayout(filepath.Join(dir, "tokenstore"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != built.layout.Digest {
		t.Errorf("second build: index %s, first %s", again.Digest, built.layout.Digest)
	}
	if a, b := fileSum(t, filepath.Join(built.dir, "tokenstore.oci.tar")), fileSum(t, filepath.Join(dir, "tokenstore.oci.tar")); a != b {
		t.Errorf("the two archives differ: %x, %x", a, b)
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestSkopeo reads the layout and the archive with skopeo, the tool the
// cluster scripts and docs/release.md push them with, and copies every
// platform (digests verified on the way) into another layout.
func TestSkopeo(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo is needed to check the image as its users read it: apt-get install skopeo")
	}
	layoutRef := "oci:" + filepath.Join(built.dir, "tokenstore") + ":" + built.appVersion
	raw := skopeo(t, "inspect", "--raw", layoutRef)
	fromArchive := skopeo(t, "inspect", "--raw", "oci-archive:"+filepath.Join(built.dir, "tokenstore.oci.tar")+":"+version)
	if raw != fromArchive {
		t.Errorf("the archive's index differs from the layout's:\n%s\n%s", fromArchive, raw)
	}
	if d, _, err := v1.SHA256(strings.NewReader(raw)); err != nil || d != built.layout.Digest {
		t.Errorf("skopeo reads index %s (%v), the layout names %s", d, err, built.layout.Digest)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	skopeo(t, "copy", "--all", "--quiet", layoutRef, "oci:"+dst+":"+built.appVersion)
	copied, err := inspect.ReadLayout(dst)
	if err != nil {
		t.Fatal(err)
	}
	if copied.Digest != built.layout.Digest || len(copied.Images) != 2 {
		t.Errorf("skopeo copy --all: index %s with %d images, want %s with 2", copied.Digest, len(copied.Images), built.layout.Digest)
	}
}

func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("skopeo", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
