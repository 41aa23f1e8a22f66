//go:build dev

package main

import (
	"strings"
	"testing"
)

func TestDevRefusesNonLoopback(t *testing.T) {
	_, _, err := run(t, "dev", "--data-dir", t.TempDir(), "--listen-address", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("dev on 0.0.0.0: %v", err)
	}
}
