package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func chartDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "tokenstore")
}

// The committed README is what the generator writes: values.yaml and the
// README cannot drift apart.
func TestReadmeUpToDate(t *testing.T) {
	dir := chartDir(t)
	want, err := Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != string(want) {
		t.Fatal("charts/tokenstore/README.md is out of date; run hack/chart-docs.sh")
	}
	for _, key := range []string{"`replicaCount`", "`existingSecret`", "`config.externalURL`", "`autoscaling.maxReplicas`", "`podSecurityContext`"} {
		if !strings.Contains(string(have), key) {
			t.Errorf("README lists no %s", key)
		}
	}
}

func TestUndocumentedValueRefused(t *testing.T) {
	_, err := Values([]byte("# -- documented\na: 1\nb:\n  c: 2\n"))
	if err == nil || !strings.Contains(err.Error(), "b.c") {
		t.Fatalf("want an error naming b.c, got %v", err)
	}
}

func TestRows(t *testing.T) {
	rows, err := Values([]byte("# -- the port\n# of the service\nport: 80\nimage:\n  # -- tag | version\n  tag: \"\"\n# -- extra labels\nlabels: {}\n# -- whole object\nres:\n  limits:\n    cpu: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Value{
		{"port", "int", "80", "the port of the service"},
		{"image.tag", "string", `""`, "tag | version"},
		{"labels", "object", "{}", "extra labels"},
		{"res", "object", `{"limits":{"cpu":1}}`, "whole object"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %+v", rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d: got %+v want %+v", i, rows[i], want[i])
		}
	}
	tbl, _ := Table([]byte("# -- a | b\nx: 1\n"))
	if !strings.Contains(tbl, `a \| b`) {
		t.Errorf("pipe not escaped: %s", tbl)
	}
}
