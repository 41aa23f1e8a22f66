// Package archtest checks the directions of dependency that
// ../shared/DESIGN.md ("Layout") sets, with `go list`: a forbidden import
// fails the test. It holds no code of its own.
package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tokenstore/tokenstore"

// exceptions are the forbidden imports that exist today, each with why.
// Issue 20's later steps remove them; the test fails when one is no longer
// needed, so that the list only shrinks.
var exceptions = map[string]string{
	// none today
}

type pkg struct {
	ImportPath   string
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
}

// list runs `go list -json` over the module with the given build tags.
func list(t *testing.T, tags string) []pkg {
	t.Helper()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	args := []string{"list", "-json"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./...")
	cmd := exec.Command("go", args...)
	cmd.Dir = strings.TrimSpace(string(root))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; the module has more", len(pkgs))
	}
	return pkgs
}

// rel is a module package's path relative to the module ("" for others).
func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func standard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// under reports whether the module-relative path r is dir or below it.
func under(r, dir string) bool { return r == dir || strings.HasPrefix(r, dir+"/") }

// domain: the packages under internal/ that are not the wiring (app) or
// test helpers.
func domain(r string) bool {
	return under(r, "internal") && !under(r, "internal/app") && !under(r, "internal/archtest") && !under(r, "internal/testutil")
}

func TestImportDirections(t *testing.T) {
	used := map[string]bool{}
	for _, tags := range []string{"", "dev"} {
		var violations []string
		forbid := func(from, imp string) {
			key := from + " imports " + imp
			if _, ok := exceptions[key]; ok {
				used[key] = true
				return
			}
			violations = append(violations, key)
		}
		for _, p := range list(t, tags) {
			r, ok := rel(p.ImportPath)
			if !ok {
				continue
			}
			// Nothing imports cmd (tests included).
			for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
				if ir, ok := rel(imp); ok && under(ir, "cmd") && imp != p.ImportPath {
					forbid(r, imp)
				}
			}
			switch {
			case under(r, "api"):
				// apimachinery only, and no other package of the module.
				for _, imp := range p.Imports {
					if !standard(imp) && !strings.HasPrefix(imp, "k8s.io/apimachinery/") {
						forbid(r, imp)
					}
				}
				for _, d := range p.Deps {
					if dr, ok := rel(d); ok && !under(dr, "api") {
						forbid(r, d)
					}
				}
			case r == "internal/providers":
				// The registry: plain Go values, no Kubernetes, gin or store.
				for _, d := range p.Deps {
					dr, mine := rel(d)
					if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") ||
						strings.HasPrefix(d, "github.com/gin-gonic/") || (mine && under(dr, "internal/store")) {
						forbid(r, d)
					}
				}
			case r == "internal/store":
				// The store interface: the standard library only.
				for _, imp := range p.Imports {
					if !standard(imp) {
						forbid(r, imp)
					}
				}
			case under(r, "controllers"):
				// Reconcilers write into the registry; never the HTTP layer
				// or the store.
				for _, d := range p.Deps {
					if dr, ok := rel(d); ok && (under(dr, "server") || under(dr, "internal/store")) {
						forbid(r, d)
					}
				}
			}
			if domain(r) {
				// Domain packages never speak HTTP through gin or server.
				for _, imp := range p.Imports {
					if strings.HasPrefix(imp, "github.com/gin-gonic/") {
						forbid(r, imp)
					}
				}
				for _, d := range p.Deps {
					if dr, ok := rel(d); ok && under(dr, "server") {
						forbid(r, d)
					}
				}
			}
		}
		slices.Sort(violations)
		for _, v := range slices.Compact(violations) {
			t.Errorf("forbidden import (tags %q): %s", tags, v)
		}
	}
	for key, why := range exceptions {
		if !used[key] {
			t.Errorf("exception %q (%s) no longer happens: remove it from the list", key, why)
		}
	}
}
