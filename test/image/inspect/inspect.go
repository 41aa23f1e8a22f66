// Package inspect reads what `make image` and `make release` write the way a
// user's tools would (an OCI layout, the images in it, their root
// filesystems, static binaries), for test/image and test/release.
package inspect

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Layout is an OCI image layout holding one multi-arch image under one or
// more tags.
type Layout struct {
	// Tags maps each org.opencontainers.image.ref.name of index.json to its
	// io.containerd.image.name annotation.
	Tags map[string]string
	// Index is the multi-arch image index every tag names.
	Index  v1.ImageIndex
	Digest v1.Hash
	// Images are the index's images by "os/arch".
	Images map[string]v1.Image
}

// ReadLayout opens dir and checks that index.json names a single image
// index, each entry with a tag.
func ReadLayout(dir string) (*Layout, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s/index.json: %w", dir, err)
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("%s/index.json references nothing", dir)
	}
	l := &Layout{Tags: map[string]string{}, Images: map[string]v1.Image{}}
	for i, d := range im.Manifests {
		if !d.MediaType.IsIndex() {
			return nil, fmt.Errorf("%s/index.json entry %d is a %s, not a multi-arch image index", dir, i, d.MediaType)
		}
		if i > 0 && d.Digest != l.Digest {
			return nil, fmt.Errorf("%s/index.json names two images: %s and %s", dir, l.Digest, d.Digest)
		}
		l.Digest = d.Digest
		ref := d.Annotations["org.opencontainers.image.ref.name"]
		if ref == "" {
			return nil, fmt.Errorf("%s/index.json entry %d has no org.opencontainers.image.ref.name", dir, i)
		}
		l.Tags[ref] = d.Annotations["io.containerd.image.name"]
	}
	if l.Index, err = top.ImageIndex(l.Digest); err != nil {
		return nil, fmt.Errorf("image index %s: %w", l.Digest, err)
	}
	idx, err := l.Index.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image index %s: %w", l.Digest, err)
	}
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			return nil, fmt.Errorf("image %s in the index has no platform", d.Digest)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if _, dup := l.Images[p]; dup {
			return nil, fmt.Errorf("the index has two %s images", p)
		}
		if l.Images[p], err = l.Index.Image(d.Digest); err != nil {
			return nil, fmt.Errorf("%s image: %w", p, err)
		}
	}
	return l, nil
}

// Platforms are the "os/arch" of the layout's images, sorted.
func (l *Layout) Platforms() []string {
	var ps []string
	for p := range l.Images {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// RootFS writes img's flattened file system into dir (regular files and
// directories; the image has no other kinds, and anything else is an
// error) and returns the tar header of every entry by its clean path.
func RootFS(img v1.Image, dir string) (map[string]*tar.Header, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	headers := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers, nil
		}
		if err != nil {
			return nil, fmt.Errorf("root filesystem: %w", err)
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." || strings.HasPrefix(name, "..") {
			return nil, fmt.Errorf("root filesystem: entry %q outside the root", h.Name)
		}
		headers[name] = h
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return nil, err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()|0o600)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("root filesystem: %s: %w", name, err)
			}
		default:
			return nil, fmt.Errorf("root filesystem: %s is of tar type %q (links or devices are not expected)", name, h.Typeflag)
		}
	}
}

// StaticELF returns the machine of a statically linked ELF executable and
// an error for anything else: a dynamic binary (an interpreter or shared
// libraries) would not start in an image without a libc.
func StaticELF(path string) (elf.Machine, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return 0, fmt.Errorf("%s: ELF type %s, want an executable (ET_EXEC)", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return 0, fmt.Errorf("%s: dynamically linked (%s program header)", path, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return 0, fmt.Errorf("%s: needs shared libraries %v", path, libs)
	}
	return f.Machine, nil
}
