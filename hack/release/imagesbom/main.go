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

// Command imagesbom writes the CycloneDX SBOM of the tokenstore image from
// the SBOMs of its binaries (cyclonedx-gomod, one per platform) and the two
// Debian packages whose files hack/image copies into it: ca-certificates
// (/etc/ssl/certs/ca-certificates.crt) and base-passwd (the root and nobody
// lines of /etc/passwd and /etc/group), at the versions dpkg-query reports
// on the machine that built the image.
//
// cyclonedx-gomod names a module the same (bom-ref) for every platform, so
// each binary's components are re-keyed by their package URL, which holds
// goos and goarch: the image's SBOM lists both platforms' modules, each once.
//
// usage (hack/release/release.sh runs it):
//
//	go run ./hack/release/imagesbom -version 0.1.0 -layout bin/release/tokenstore-image \
//	  -out bin/release/tokenstore-image.cdx.json bin/release/tokenstore-linux-*.cdx.json
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

const repository = "ghcr.io/tokenstore/tokenstore"

// debPackages are the Debian packages the image takes files from.
var debPackages = []struct{ name, files string }{
	{"ca-certificates", "/etc/ssl/certs/ca-certificates.crt"},
	{"base-passwd", "/etc/passwd, /etc/group (root, nobody)"},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hack/release/imagesbom:", err)
		os.Exit(1)
	}
}

// bom is a CycloneDX document kept as generic JSON, so that every field
// cyclonedx-gomod writes passes through unchanged.
type bom = map[string]any

func run() error {
	var version, layoutDir, out string
	flag.StringVar(&version, "version", "", "release version of the image")
	flag.StringVar(&layoutDir, "layout", "", "OCI layout of the image (its index digest names the image)")
	flag.StringVar(&out, "out", "", "SBOM file to write")
	flag.Parse()
	if version == "" || layoutDir == "" || out == "" || flag.NArg() == 0 {
		return errors.New("usage: imagesbom -version V -layout DIR -out FILE BINARY-SBOM [BINARY-SBOM ...] (the binaries' cyclonedx-gomod JSON)")
	}
	digest, err := indexDigest(layoutDir)
	if err != nil {
		return err
	}
	// As the purl spec's own pkg:oci example writes it.
	imageRef := "pkg:oci/tokenstore@" + purlEscape(digest) + "?repository_url=" + repository + "&tag=" + purlEscape(version)

	var components []any
	var dependencies []any
	seen := map[string]bool{}
	var parts []any // what the image is made of: the binaries and the packages
	var first bom
	for _, path := range flag.Args() {
		b, err := readBOM(path)
		if err != nil {
			return err
		}
		if first == nil {
			first = b
		}
		app, comps, deps, err := rekey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, c := range append([]map[string]any{app}, comps...) {
			ref := c["bom-ref"].(string)
			if seen[ref] {
				continue
			}
			seen[ref] = true
			components = append(components, c)
		}
		dependencies = append(dependencies, deps...)
		parts = append(parts, app["bom-ref"])
	}

	distro, err := debianDistro()
	if err != nil {
		return err
	}
	for _, p := range debPackages {
		c, err := debComponent(p.name, p.files, distro)
		if err != nil {
			return err
		}
		components = append(components, c)
		dependencies = append(dependencies, map[string]any{"ref": c["bom-ref"]})
		parts = append(parts, c["bom-ref"])
	}
	dependencies = append(dependencies, map[string]any{"ref": imageRef, "dependsOn": parts})

	meta, _ := first["metadata"].(map[string]any)
	doc := bom{
		"bomFormat":   "CycloneDX",
		"specVersion": first["specVersion"],
		"version":     1,
		"metadata": map[string]any{
			"timestamp": meta["timestamp"],
			"tools":     meta["tools"],
			"component": map[string]any{
				"bom-ref": imageRef,
				"type":    "container",
				"name":    repository,
				"version": version,
				"purl":    imageRef,
				"hashes":  []any{map[string]any{"alg": "SHA-256", "content": strings.TrimPrefix(digest, "sha256:")}},
				"externalReferences": []any{
					map[string]any{"type": "vcs", "url": "https://github.com/tokenstore/tokenstore"},
				},
				"licenses": []any{map[string]any{"license": map[string]any{"id": "Apache-2.0"}}},
			},
		},
		"components":   components,
		"dependencies": dependencies,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encoding the SBOM: %w", err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the SBOM: %w", err)
	}
	return nil
}

func indexDigest(dir string) (string, error) {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return "", fmt.Errorf("image layout %s: %w", dir, err)
	}
	m, err := ii.IndexManifest()
	if err != nil {
		return "", fmt.Errorf("image layout %s: %w", dir, err)
	}
	if len(m.Manifests) == 0 {
		return "", fmt.Errorf("image layout %s holds no image", dir)
	}
	return m.Manifests[0].Digest.String(), nil
}

func readBOM(path string) (bom, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b bom
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b["bomFormat"] != "CycloneDX" {
		return nil, fmt.Errorf("%s is not a CycloneDX JSON SBOM", path)
	}
	return b, nil
}

// rekey returns a binary SBOM's main component, its other components and
// its dependency graph with every bom-ref replaced by the component's
// package URL (platform-qualified).
func rekey(b bom) (app map[string]any, comps []map[string]any, deps []any, err error) {
	meta, _ := b["metadata"].(map[string]any)
	app, _ = meta["component"].(map[string]any)
	if app == nil {
		return nil, nil, nil, errors.New("no metadata.component")
	}
	newRef := map[string]string{}
	key := func(c map[string]any) error {
		ref, _ := c["bom-ref"].(string)
		purl, _ := c["purl"].(string)
		if ref == "" || purl == "" {
			return fmt.Errorf("component %v has no bom-ref or purl", c["name"])
		}
		newRef[ref] = purl
		c["bom-ref"] = purl
		return nil
	}
	if err := key(app); err != nil {
		return nil, nil, nil, err
	}
	list, _ := b["components"].([]any)
	for _, x := range list {
		c, ok := x.(map[string]any)
		if !ok {
			return nil, nil, nil, errors.New("a component is not an object")
		}
		if err := key(c); err != nil {
			return nil, nil, nil, err
		}
		comps = append(comps, c)
	}
	dlist, _ := b["dependencies"].([]any)
	for _, x := range dlist {
		d, _ := x.(map[string]any)
		ref, _ := d["ref"].(string)
		if newRef[ref] == "" {
			return nil, nil, nil, fmt.Errorf("dependency of unknown component %q", ref)
		}
		out := map[string]any{"ref": newRef[ref]}
		if on, ok := d["dependsOn"].([]any); ok {
			var mapped []any
			for _, o := range on {
				r, _ := o.(string)
				if newRef[r] == "" {
					return nil, nil, nil, fmt.Errorf("%q depends on unknown component %q", ref, r)
				}
				mapped = append(mapped, newRef[r])
			}
			out["dependsOn"] = mapped
		}
		deps = append(deps, out)
	}
	return app, comps, deps, nil
}

// debianDistro is the purl distro qualifier of this machine, e.g. debian-12.
func debianDistro() (string, error) {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", fmt.Errorf("os-release: %w", err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			fields[k] = strings.Trim(v, `"`)
		}
	}
	if fields["ID"] != "debian" || fields["VERSION_ID"] == "" {
		return "", fmt.Errorf("the image takes Debian packages' files, and this is %s %s", fields["ID"], fields["VERSION_ID"])
	}
	return "debian-" + fields["VERSION_ID"], nil
}

// purlEscape percent-encodes a purl version: Go's path escaping keeps the
// ':' of a digest and the '+' of a Debian version, which purl encodes.
func purlEscape(s string) string {
	return strings.NewReplacer(":", "%3A", "+", "%2B").Replace(url.PathEscape(s))
}

func debComponent(name, files, distro string) (map[string]any, error) {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}\t${Architecture}", name).Output()
	if err != nil {
		return nil, fmt.Errorf("dpkg-query %s (is it installed?): %w", name, err)
	}
	version, arch, ok := strings.Cut(strings.TrimSpace(string(out)), "\t")
	if !ok || version == "" {
		return nil, fmt.Errorf("dpkg-query %s: unexpected answer %q", name, out)
	}
	purl := fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s&distro=%s", name, purlEscape(version), arch, distro)
	return map[string]any{
		"bom-ref":   purl,
		"type":      "library",
		"name":      name,
		"version":   version,
		"publisher": "Debian",
		"purl":      purl,
		"properties": []any{
			map[string]any{"name": "tokenstore:image:files", "value": files},
		},
	}, nil
}
