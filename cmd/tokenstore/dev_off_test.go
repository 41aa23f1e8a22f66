//go:build !dev

package main

import (
	"strings"
	"testing"
)

// TestDevWithoutTheTagExplains runs `dev` as the README's reader would with a
// production build, flags included: it must fail, start nothing, and say how
// to get dev mode.
func TestDevWithoutTheTagExplains(t *testing.T) {
	dir := t.TempDir()
	out, _, err := run(t, "dev", "--data-dir", dir, "--listen-address", "127.0.0.1:0")
	if err == nil {
		t.Fatalf("dev ran in a build without the dev tag: %q", out)
	}
	for _, want := range []string{"no dev mode", "go run -tags dev ./cmd/tokenstore dev"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
