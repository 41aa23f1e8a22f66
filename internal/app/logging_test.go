package app

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// TestLogWriterLinesWhole: concurrent lines come out whole, none lost, once
// flushed.
func TestLogWriterLinesWhole(t *testing.T) {
	var out bytes.Buffer
	w := &logWriter{out: &out, buf: bufio.NewWriterSize(&out, 1024)}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				_, _ = fmt.Fprintf(w, "line g=%d i=%d %s\n", g, i, strings.Repeat("x", 40+i%200))
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		var g, i int
		var xs string
		if _, err := fmt.Sscanf(l, "line g=%d i=%d %s", &g, &i, &xs); err != nil || len(xs) != 40+i%200 {
			t.Fatalf("torn line %q", l)
		}
	}
}

// TestLoggerFormatAndLevel: the service's logger is slog's handler of the
// format LOG_FORMAT names, at LOG_LEVEL.
func TestLoggerFormatAndLevel(t *testing.T) {
	old := slog.Default() // NewLogger sets the default
	t.Cleanup(func() { slog.SetDefault(old) })
	for format, want := range map[string]string{"json": "*slog.JSONHandler", "text": "*slog.TextHandler"} {
		l := NewLogger(&settings.Settings{LogFormat: format, LogLevel: "warn"})
		if got := fmt.Sprintf("%T", l.Handler()); got != want {
			t.Errorf("LOG_FORMAT=%s: the logger's handler is %s, want %s", format, got, want)
		}
		if l.Enabled(context.Background(), slog.LevelInfo) {
			t.Errorf("LOG_FORMAT=%s: LOG_LEVEL=warn not kept", format)
		}
	}
}
