// Package release runs `make release` into a temporary directory and checks
// each artifact the way someone downloading the release would: the sums,
// the binaries, the chart, the SBOMs and the image.
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/test/image/inspect"
)

const (
	version    = "0.0.0-test.1"
	repository = "ghcr.io/tokenstore/tokenstore"
	module     = "github.com/tokenstore/tokenstore"
)

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// makeRelease runs make release with the given variables and returns its
// combined output.
func makeRelease(vars ...string) (string, error) {
	cmd := exec.Command("make", append([]string{"--no-print-directory", "release"}, vars...)...)
	cmd.Dir = repoRoot()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestRelease makes a trial release (ALLOW_DIRTY: the checkout these tests
// run in may have uncommitted work) and checks every artifact.
func TestRelease(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "release")
	out, err := makeRelease("VERSION="+version, "RELEASE_DIR="+dir, "ALLOW_DIRTY=1")
	if err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	for _, step := range []string{"[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"} {
		if !strings.Contains(out, step) {
			t.Errorf("make release showed no progress step %s:\n%s", step, out)
		}
	}
	commit := git(t, "rev-parse", "HEAD")

	t.Run("sums", func(t *testing.T) { checkSums(t, dir) })
	t.Run("binaries", func(t *testing.T) { checkBinaries(t, dir, commit) })
	t.Run("chart", func(t *testing.T) { checkChart(t, dir) })
	t.Run("image", func(t *testing.T) { checkImage(t, dir, commit) })
	t.Run("sboms", func(t *testing.T) { checkSBOMs(t, dir) })
}

func git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// checkSums: SHA256SUMS lists every file of the release (the layout
// directory aside: its blobs are named by their digests) with its right sum.
func checkSums(t *testing.T, dir string) {
	f, err := os.Open(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's", sc.Text())
		}
		listed[name] = sum
	}
	want := []string{
		"tokenstore-" + version + ".tgz",
		"tokenstore-image.cdx.json",
		"tokenstore-image.oci.tar",
		"tokenstore-linux-amd64",
		"tokenstore-linux-amd64.cdx.json",
		"tokenstore-linux-arm64",
		"tokenstore-linux-arm64.cdx.json",
	}
	var names []string
	for n := range listed {
		names = append(names, n)
	}
	sort.Strings(names)
	if !slices.Equal(names, want) {
		t.Errorf("SHA256SUMS lists %v, want %v", names, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != "SHA256SUMS" && !strings.HasPrefix(e.Name(), ".") {
			if _, ok := listed[e.Name()]; !ok {
				t.Errorf("%s is in the release but not in SHA256SUMS", e.Name())
			}
		}
	}
	for name, sum := range listed {
		if got := fileSum(t, filepath.Join(dir, name)); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", name, got, sum)
		}
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func checkBinaries(t *testing.T, dir, commit string) {
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		got, err := inspect.StaticELF(filepath.Join(dir, "tokenstore-linux-"+arch))
		if err != nil {
			t.Errorf("%s: %v", arch, err)
		} else if got != machine {
			t.Errorf("tokenstore-linux-%s is for %s", arch, got)
		}
	}
	out, err := exec.Command(filepath.Join(dir, "tokenstore-linux-amd64"), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tokenstore-linux-amd64 version: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("tokenstore %s (commit %s, ", version, commit); !strings.HasPrefix(string(out), want) {
		t.Errorf("tokenstore-linux-amd64 version printed %q, want %q...", out, want)
	}
}

// checkChart: the packaged chart has the release's version and appVersion
// (so it installs the release's image tag) and names the image repository.
func checkChart(t *testing.T, dir string) {
	files := untgz(t, filepath.Join(dir, "tokenstore-"+version+".tgz"))
	var chart struct {
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(files["tokenstore/Chart.yaml"], &chart); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if chart.Name != "tokenstore" || chart.Version != version || chart.AppVersion != version {
		t.Errorf("chart %s version %s appVersion %s, want tokenstore %s %s", chart.Name, chart.Version, chart.AppVersion, version, version)
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
		} `json:"image"`
	}
	if err := yaml.Unmarshal(files["tokenstore/values.yaml"], &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	if values.Image.Repository != repository {
		t.Errorf("the chart's image.repository is %q, the release's image %q", values.Image.Repository, repository)
	}
}

func untgz(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return untar(t, zr)
}

func untar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}

// checkImage: the layout and the archive hold the same two-platform image,
// tagged with the release's version only, labelled with it, and holding
// the very binaries the release offers for download.
func checkImage(t *testing.T, dir, commit string) {
	l, err := inspect.ReadLayout(filepath.Join(dir, "tokenstore-image"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Tags) != 1 || l.Tags[version] != repository+":"+version {
		t.Errorf("tags %v, want only %s (%s:%s)", l.Tags, version, repository, version)
	}
	if got := l.Platforms(); !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("platforms %v", got)
	}
	for p, img := range l.Images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if v := cf.Config.Labels["org.opencontainers.image.version"]; v != version {
			t.Errorf("%s: version label %q, want %s", p, v, version)
		}
		if r := cf.Config.Labels["org.opencontainers.image.revision"]; r != commit {
			t.Errorf("%s: revision label %q, want %s", p, r, commit)
		}
		root := t.TempDir()
		if _, err := inspect.RootFS(img, root); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		released := filepath.Join(dir, "tokenstore-"+strings.ReplaceAll(p, "/", "-"))
		if fileSum(t, filepath.Join(root, "tokenstore")) != fileSum(t, released) {
			t.Errorf("%s: the image's /tokenstore is not %s", p, filepath.Base(released))
		}
	}

	// The archive, unpacked, is the same layout.
	f, err := os.Open(filepath.Join(dir, "tokenstore-image.oci.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unpacked := t.TempDir()
	for name, b := range untar(t, f) {
		p := filepath.Join(unpacked, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, err := inspect.ReadLayout(unpacked)
	if err != nil {
		t.Fatalf("the archive: %v", err)
	}
	if a.Digest != l.Digest || len(a.Images) != 2 {
		t.Errorf("the archive holds index %s with %d images, the layout %s", a.Digest, len(a.Images), l.Digest)
	}
}

// cdx is the part of a CycloneDX document the checks read.
type cdx struct {
	BOMFormat   string `json:"bomFormat"`
	SpecVersion string `json:"specVersion"`
	Metadata    struct {
		Component component `json:"component"`
	} `json:"metadata"`
	Components   []component `json:"components"`
	Dependencies []struct {
		Ref       string   `json:"ref"`
		DependsOn []string `json:"dependsOn"`
	} `json:"dependencies"`
}

type component struct {
	BOMRef  string `json:"bom-ref"`
	Type    string `json:"type"`
	Name    string `json:"name"`
	Version string `json:"version"`
	PURL    string `json:"purl"`
	Hashes  []struct {
		Alg     string `json:"alg"`
		Content string `json:"content"`
	} `json:"hashes"`
}

func readCDX(t *testing.T, path string) cdx {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d cdx
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	if d.BOMFormat != "CycloneDX" || d.SpecVersion == "" {
		t.Fatalf("%s: bomFormat %q specVersion %q, not a CycloneDX SBOM", filepath.Base(path), d.BOMFormat, d.SpecVersion)
	}
	refs := map[string]bool{d.Metadata.Component.BOMRef: true}
	for _, c := range d.Components {
		if refs[c.BOMRef] {
			t.Errorf("%s: bom-ref %s used twice", filepath.Base(path), c.BOMRef)
		}
		refs[c.BOMRef] = true
	}
	for _, dep := range d.Dependencies {
		for _, r := range append([]string{dep.Ref}, dep.DependsOn...) {
			if !refs[r] {
				t.Errorf("%s: the dependency graph names %s, which no component is", filepath.Base(path), r)
			}
		}
	}
	return d
}

// checkSBOMs: each binary's SBOM names the module and lists exactly the
// modules that binary records it was built from (Go's build info), with
// none of the dev build's; the image's SBOM names the image by its digest
// and holds both binaries' modules and the Debian packages it took files
// from, at the versions installed here.
func checkSBOMs(t *testing.T, dir string) {
	for _, arch := range []string{"amd64", "arm64"} {
		d := readCDX(t, filepath.Join(dir, "tokenstore-linux-"+arch+".cdx.json"))
		if d.Metadata.Component.Name != module || d.Metadata.Component.Type != "application" {
			t.Errorf("%s SBOM describes %s %q, want the application %s", arch, d.Metadata.Component.Type, d.Metadata.Component.Name, module)
		}
		if !strings.Contains(d.Metadata.Component.PURL, "goarch="+arch) {
			t.Errorf("%s SBOM is for %s", arch, d.Metadata.Component.PURL)
		}
		info, err := buildinfo.ReadFile(filepath.Join(dir, "tokenstore-linux-"+arch))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"std@" + strings.TrimPrefix(info.GoVersion, "go")}
		for _, m := range info.Deps {
			if m.Replace != nil {
				m = m.Replace
			}
			want = append(want, m.Path+"@"+m.Version)
		}
		var got []string
		for _, c := range d.Components {
			got = append(got, c.Name+"@"+strings.TrimPrefix(c.Version, "go"))
			if strings.HasPrefix(c.Name, "github.com/zitadel/") {
				t.Errorf("%s SBOM lists %s, which only the dev build links", arch, c.Name)
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s SBOM components differ from the binary's modules:\nSBOM   %v\nbinary %v", arch, got, want)
		}
	}

	d := readCDX(t, filepath.Join(dir, "tokenstore-image.cdx.json"))
	l, err := inspect.ReadLayout(filepath.Join(dir, "tokenstore-image"))
	if err != nil {
		t.Fatal(err)
	}
	img := d.Metadata.Component
	if img.Type != "container" || img.Name != repository || img.Version != version {
		t.Errorf("image SBOM describes %s %s %s", img.Type, img.Name, img.Version)
	}
	if len(img.Hashes) != 1 || "sha256:"+img.Hashes[0].Content != l.Digest.String() {
		t.Errorf("image SBOM hashes %v, the image is %s", img.Hashes, l.Digest)
	}
	apps := map[string]bool{}
	debs := map[string]string{}
	for _, c := range d.Components {
		if c.Name == module && c.Type == "application" {
			apps[c.PURL] = true
		}
		if strings.HasPrefix(c.PURL, "pkg:deb/debian/") {
			debs[c.Name] = c.Version
		}
	}
	if len(apps) != 2 {
		t.Errorf("image SBOM has %d tokenstore binaries, want 2 (amd64, arm64): %v", len(apps), apps)
	}
	for _, pkg := range []string{"ca-certificates", "base-passwd"} {
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
		if err != nil {
			t.Fatalf("dpkg-query %s: %v", pkg, err)
		}
		if debs[pkg] != string(out) {
			t.Errorf("image SBOM: %s %q, installed %q", pkg, debs[pkg], out)
		}
	}
}

// TestRefusals: make release refuses a version that is not semver, and a
// RELEASE_DIR it did not write, before building anything.
func TestRefusals(t *testing.T) {
	for _, v := range []string{"1.2", "01.2.3", "1.2.3-", "1.2.3-01", "latest", "v"} {
		dir := filepath.Join(t.TempDir(), "release")
		out, err := makeRelease("VERSION="+v, "RELEASE_DIR="+dir, "ALLOW_DIRTY=1")
		if err == nil || !strings.Contains(out, "is not a semantic version") {
			t.Errorf("VERSION=%s: err %v, output:\n%s", v, err, out)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("VERSION=%s: %s was created", v, dir)
		}
	}

	dir := t.TempDir()
	keep := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := makeRelease("VERSION="+version, "RELEASE_DIR="+dir, "ALLOW_DIRTY=1")
	if err == nil || !strings.Contains(out, "was not written by make release") {
		t.Errorf("a foreign RELEASE_DIR: err %v, output:\n%s", err, out)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the file in the foreign RELEASE_DIR is gone: %v", err)
	}
}
