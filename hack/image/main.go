/*
Copyright 2026 The tokenstore Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command image builds the tokenstore container image without a container
// engine or a registry: it cross-compiles the static binary for each
// platform, writes the root filesystem as tar layers of its own, and
// assembles one multi-arch OCI image index with go-containerregistry into an
// OCI image layout directory, plus a tar of that directory (an OCI archive
// that `ctr images import` and `skopeo copy oci-archive:` read).
//
// The result is the image the Dockerfile describes (a distroless-style static
// base, user 65532, no shell), built reproducibly: every timestamp is
// SOURCE_DATE_EPOCH, or the commit's time, so the same commit and Go version
// give the same digests.
//
// usage (make image and hack/release.sh run it):
//
//	go run ./hack/image -version 0.1.0 -commit $(git rev-parse HEAD) \
//	  -ldflags "-s -w -X main.version=0.1.0 -X main.commit=..." \
//	  -chart charts/tokenstore/Chart.yaml -out bin/image/tokenstore \
//	  -archive bin/image/tokenstore.oci.tar
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"
)

const (
	// repository is the image's name everywhere: the chart's default
	// image.repository and the containerd name of every tag.
	repository = "ghcr.io/tokenstore/tokenstore"
	source     = "https://github.com/tokenstore/tokenstore"

	// nonroot is distroless's unprivileged user and group, which the chart's
	// securityContext names too.
	nonroot = 65532
)

// platforms the image is built for; the chart's cluster and most clouds run
// one of the two.
var defaultPlatforms = "linux/amd64,linux/arm64"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hack/image:", err)
		os.Exit(1)
	}
}

type options struct {
	version, commit, ldflags string
	chart                    string
	out, archive, bindir     string
	platforms                []v1.Platform
	created                  time.Time
	caFile                   string
}

func run() error {
	var o options
	var platforms, created string
	flag.StringVar(&o.version, "version", "", "version stamped into the labels (and, through -ldflags, the binary); its image tag drops a leading v and turns + into _")
	flag.StringVar(&o.commit, "commit", "", "commit the image is built from (label org.opencontainers.image.revision)")
	flag.StringVar(&o.ldflags, "ldflags", "", "linker flags of the binary, exactly the Makefile's LDFLAGS")
	flag.StringVar(&o.chart, "chart", "", "Chart.yaml whose appVersion is tagged too (the chart's default image tag)")
	flag.StringVar(&o.out, "out", "bin/image/tokenstore", "OCI image layout directory to write (replaced)")
	flag.StringVar(&o.archive, "archive", "", "also write this tar of the layout (an OCI archive)")
	flag.StringVar(&o.bindir, "bindir", "", "keep the binaries here as tokenstore-<os>-<arch> (default: a temporary directory)")
	flag.StringVar(&platforms, "platforms", defaultPlatforms, "comma-separated os/arch list")
	flag.StringVar(&created, "created", "", "Unix time of every timestamp in the image (default: $SOURCE_DATE_EPOCH, else the commit's time)")
	flag.StringVar(&o.caFile, "ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to install (Debian's ca-certificates package)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if o.version == "" || o.commit == "" || o.ldflags == "" {
		return errors.New("-version, -commit and -ldflags are required (make image passes them)")
	}
	for _, p := range strings.Split(platforms, ",") {
		os, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok || os == "" || arch == "" {
			return fmt.Errorf("-platforms: %q is not os/arch", p)
		}
		o.platforms = append(o.platforms, v1.Platform{OS: os, Architecture: arch})
	}
	var err error
	if o.created, err = createdTime(created, o.commit); err != nil {
		return err
	}
	return build(o)
}

// createdTime is the one timestamp of the image: reproducible builds give
// the same digests for the same commit, which a wall-clock time would not.
func createdTime(flagValue, commit string) (time.Time, error) {
	v := flagValue
	if v == "" {
		v = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if v == "" {
		out, err := exec.Command("git", "log", "-1", "--format=%ct", commit).Output()
		if err != nil {
			return time.Time{}, fmt.Errorf("no -created or SOURCE_DATE_EPOCH, and the time of commit %s is unknown (git log: %w)", commit, err)
		}
		v = strings.TrimSpace(string(out))
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("created time %q is not a Unix time: %w", v, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// tagRE is the OCI distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// imageTag is the tag of a version: without a leading v (git tags are
// v0.1.0, the chart's appVersion and image tags 0.1.0) and with semver's
// build-metadata + as _ (tags cannot hold +; Helm's OCI tags do the same).
func imageTag(version string) (string, error) {
	t := strings.ReplaceAll(strings.TrimPrefix(version, "v"), "+", "_")
	if !tagRE.MatchString(t) {
		return "", fmt.Errorf("version %q gives %q, which is not a valid image tag", version, t)
	}
	return t, nil
}

// chartAppVersion reads the appVersion of a Chart.yaml: the chart installs
// that tag by default, so `make image` tags it for clusters that load the
// image without a registry.
func chartAppVersion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("chart: %w", err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("chart %s: %w", path, err)
	}
	if c.AppVersion == "" {
		return "", fmt.Errorf("chart %s has no appVersion", path)
	}
	return c.AppVersion, nil
}

func build(o options) error {
	start := time.Now()
	tags := []string{}
	t, err := imageTag(o.version)
	if err != nil {
		return err
	}
	tags = append(tags, t)
	if o.chart != "" {
		av, err := chartAppVersion(o.chart)
		if err != nil {
			return err
		}
		if t, err = imageTag(av); err != nil {
			return fmt.Errorf("chart appVersion: %w", err)
		}
		if t != tags[0] {
			tags = append(tags, t)
		}
	}

	bindir := o.bindir
	if bindir == "" {
		tmp, err := os.MkdirTemp("", "tokenstore-image-")
		if err != nil {
			return fmt.Errorf("temporary directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		bindir = tmp
	} else if err := os.MkdirAll(bindir, 0o755); err != nil {
		return fmt.Errorf("-bindir: %w", err)
	}

	// The layers every platform shares; the same bytes give the same blob,
	// stored once in the layout.
	base, err := baseLayer(o.created)
	if err != nil {
		return err
	}
	certs, err := certsLayer(o.caFile, o.created)
	if err != nil {
		return err
	}

	labels := map[string]string{
		"org.opencontainers.image.title":       "tokenstore",
		"org.opencontainers.image.description": "Keeps OAuth2 / OpenID Connect refresh tokens encrypted and hands out fresh access tokens",
		"org.opencontainers.image.source":      source,
		"org.opencontainers.image.url":         source,
		"org.opencontainers.image.revision":    o.commit,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
	}

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.platforms {
		bin := filepath.Join(bindir, "tokenstore-"+p.OS+"-"+p.Architecture)
		if err := goBuild(p, o.ldflags, bin); err != nil {
			return err
		}
		img, err := platformImage(p, bin, base, certs, labels, o.created)
		if err != nil {
			return fmt.Errorf("%s/%s image: %w", p.OS, p.Architecture, err)
		}
		p := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        imageNotArtifact{img},
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)

	fmt.Fprintf(os.Stderr, ">> writing OCI layout %s (tags %s)\n", o.out, strings.Join(tags, ", "))
	if err := writeLayout(o.out, idx, tags); err != nil {
		return err
	}
	if o.archive != "" {
		fmt.Fprintf(os.Stderr, ">> writing OCI archive %s\n", o.archive)
		if err := writeArchive(o.out, o.archive, o.created); err != nil {
			return err
		}
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("index digest: %w", err)
	}
	fmt.Fprintf(os.Stderr, ">> image %s:%s %s (%s)\n", repository, tags[0], d, time.Since(start).Round(time.Second))
	return nil
}

// goBuild cross-compiles the production binary for p: static (no cgo),
// without the dev build tag, with paths and VCS stamping left out so the
// bytes depend on the source and the flags only. GOFLAGS is cleared so the
// caller's environment (say, -tags dev) cannot change what ships; the
// Dockerfile runs the same command (test/image checks that).
func goBuild(p v1.Platform, ldflags, out string) error {
	fmt.Fprintf(os.Stderr, ">> building %s/%s binary\n", p.OS, p.Architecture)
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "./cmd/tokenstore")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=",
		// The baseline instruction sets, as the golang image's defaults.
		"GOAMD64=v1", "GOARM64=v8.0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s/%s: %w", p.OS, p.Architecture, err)
	}
	fmt.Fprintf(os.Stderr, "   %s in %s\n", out, time.Since(start).Round(time.Second))
	return nil
}

// platformImage is the image of one platform: the shared base and CA
// layers, then the binary on top (the layer that changes between versions
// comes last, so pulls of a new version fetch only it).
func platformImage(p v1.Platform, bin string, base, certs v1.Layer, labels map[string]string, created time.Time) (v1.Image, error) {
	binLayer, err := binaryLayer(bin, created)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "hack/image: /etc/passwd, /etc/group, /etc/nsswitch.conf, /home/nonroot, /tmp"}},
		mutate.Addendum{Layer: certs, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "hack/image: /etc/ssl/certs/ca-certificates.crt (Debian ca-certificates)"}},
		mutate.Addendum{Layer: binLayer, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "hack/image: /tokenstore (go build -trimpath, CGO_ENABLED=0)"}},
	)
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: []string{"/tokenstore"},
		Cmd:        []string{"serve"},
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		// As distroless: a writable home as the working directory (the
		// default sqlite://tokenstore.db lands there), and the CA bundle
		// named for programs that do not look in Debian's place.
		WorkingDir: "/home/nonroot",
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
		Labels: labels,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// imageNotArtifact leaves artifactType out of the image's descriptor in the
// index. go-containerregistry sets it to the config's media type, which the
// OCI image spec reserves for artifacts; docker buildx and distroless write
// plain image descriptors, and so do we.
type imageNotArtifact struct{ v1.Image }

func (imageNotArtifact) ArtifactType() (string, error) { return "", nil }

// entry is one file or directory of a layer.
type entry struct {
	name     string
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// layer writes entries as a gzipped tar, every timestamp created, and turns
// it into an OCI layer. Compressing here, once, with the standard library
// keeps the blob's bytes (and digest) a function of the content alone.
func layer(entries []entry, created time.Time) (v1.Layer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: created, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(e.name, "/")+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	b := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// baseLayer holds what distroless's static image gives a program besides
// CA certificates: the users and groups (root, nobody, nonroot 65532), the
// resolver order, a writable /tmp and nonroot's home.
func baseLayer(created time.Time) (v1.Layer, error) {
	passwd, group, err := accounts()
	if err != nil {
		return nil, err
	}
	return layer([]entry{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: group},
		// Go's resolver reads this; without it Go, like glibc, would ask DNS
		// before /etc/hosts.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: passwd},
		{name: "home", mode: 0o755, dir: true},
		{name: "home/nonroot", mode: 0o700, uid: nonroot, gid: nonroot, dir: true},
		{name: "tmp", mode: 0o1777, dir: true},
	}, created)
}

// accounts are /etc/passwd and /etc/group as distroless has them: root,
// nobody and nonroot. root's and nobody's lines come from Debian's
// base-passwd master files (/usr/share/base-passwd/*.master, the source of
// every Debian system's first /etc/passwd) when this machine has them, with
// the login shell set to /sbin/nologin since the image has no shell; if
// they are missing the same lines are written out here. nonroot is not a
// Debian account: it is distroless's, written here in any case.
func accounts() (passwd, group []byte, err error) {
	passwdLines := map[string]string{
		"root":   "root:x:0:0:root:/root:/sbin/nologin",
		"nobody": "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
	}
	groupLines := map[string]string{
		"root":    "root:x:0:",
		"nogroup": "nogroup:x:65534:",
	}
	if err := fromMaster("/usr/share/base-passwd/passwd.master", passwdLines, func(f []string) string {
		if len(f) != 7 {
			return ""
		}
		f[1], f[6] = "x", "/sbin/nologin"
		return strings.Join(f, ":")
	}); err != nil {
		return nil, nil, err
	}
	if err := fromMaster("/usr/share/base-passwd/group.master", groupLines, func(f []string) string {
		if len(f) != 4 {
			return ""
		}
		f[1] = "x"
		return strings.Join(f, ":")
	}); err != nil {
		return nil, nil, err
	}
	passwd = []byte(passwdLines["root"] + "\n" + passwdLines["nobody"] + "\n" +
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot))
	group = []byte(groupLines["root"] + "\n" + groupLines["nogroup"] + "\n" +
		fmt.Sprintf("nonroot:x:%d:\n", nonroot))
	return passwd, group, nil
}

// fromMaster replaces the lines of want with the master file's lines of the
// same names, rewritten by fix; a missing file leaves want as it is.
func fromMaster(path string, want map[string]string, fix func([]string) string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("base-passwd: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if _, ok := want[f[0]]; !ok {
			continue
		}
		l := fix(f)
		if l == "" {
			return fmt.Errorf("base-passwd: %s: unexpected line %q", path, line)
		}
		want[f[0]] = l
	}
	return nil
}

func certsLayer(path string, created time.Time) (v1.Layer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificates (apt-get install ca-certificates): %w", err)
	}
	if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("CA certificates: %s holds no PEM certificate", path)
	}
	return layer([]entry{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/ssl", mode: 0o755, dir: true},
		{name: "etc/ssl/certs", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: b},
	}, created)
}

func binaryLayer(path string, created time.Time) (v1.Layer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	return layer([]entry{{name: "tokenstore", mode: 0o755, data: b}}, created)
}

// writeLayout writes the index into a fresh OCI layout, referenced once per
// tag: org.opencontainers.image.ref.name is what skopeo's oci:DIR:TAG and
// most OCI tools look up; io.containerd.image.name is the full name that
// `ctr images import` gives the image.
func writeLayout(dir string, idx v1.ImageIndex, tags []string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("layout %s: %w", dir, err)
	}
	for _, t := range tags {
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": t,
			"io.containerd.image.name":          repository + ":" + t,
		})); err != nil {
			return fmt.Errorf("layout %s: tag %s: %w", dir, t, err)
		}
	}
	// go-containerregistry creates files executable for everyone; blobs and
	// index.json are data.
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o644)
	})
}

// writeArchive tars the layout directory: names sorted, owner root, every
// time created, so the archive is as reproducible as the blobs in it.
func writeArchive(dir, archive string, created time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	sort.Strings(names)
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	tmp := archive + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range names {
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Mode: 0o644, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		if fi.IsDir() {
			continue
		}
		if err := copyFile(tw, p); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := os.Rename(tmp, archive); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
