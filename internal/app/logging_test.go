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

	"github.com/tokenstore/tokenstore/internal/observability/reqlog"
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

// TestLoggerTakesTheDirectPath: the service's logger, in either format and
// at any level, is reqlog's, so request lines skip slog's machinery; a
// change that lost it would still log correctly, only slower, and no other
// test would notice.
func TestLoggerTakesTheDirectPath(t *testing.T) {
	old := slog.Default() // NewLogger sets the default
	t.Cleanup(func() { slog.SetDefault(old) })
	for _, format := range []string{"json", "text"} {
		l := NewLogger(&settings.Settings{LogFormat: format, LogLevel: "warn"})
		if _, ok := l.Handler().(*reqlog.Handler); !ok {
			t.Errorf("LOG_FORMAT=%s: the logger's handler is %T, not reqlog's", format, l.Handler())
		}
		if l.Enabled(context.Background(), slog.LevelInfo) {
			t.Errorf("LOG_FORMAT=%s: LOG_LEVEL=warn not kept", format)
		}
	}
}
