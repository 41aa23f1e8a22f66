package reqlog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a writer safe for concurrent whole-line writes, as the
// service's log writer is.
type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// both writes l through the direct path and through slog's own handler of
// the same format, and returns the two outputs and whether the direct path
// took the line.
func both(t testing.TB, format Format, l Line) (direct, viaSlog string, took bool) {
	t.Helper()
	var a, b lockedBuffer
	mk := func(w *lockedBuffer) slog.Handler {
		if format == Text {
			return slog.NewTextHandler(w, nil)
		}
		return slog.NewJSONHandler(w, nil)
	}
	Log(context.Background(), Wrap(mk(&a), &a, format), &l)
	_ = mk(&b).Handle(context.Background(), l.Record())
	return a.String(), b.String(), takesDirectPath(l)
}

func takesDirectPath(l Line) bool {
	fs := l.fields()
	return l.plain(&fs)
}

func sampleLine() Line {
	return Line{
		Time: time.Date(2026, 12, 2, 6, 15, 0, 123456789, time.UTC), Level: slog.LevelInfo,
		Method: "GET", Route: "/api/v1.0/:provider/token", Status: 200, DurationMS: 3, ClientIP: "127.0.0.1",
		Provider: "alpha", User: "user-0001", RequestID: "0123456789abcdef0123456789abcdef",
	}
}

// The direct path writes exactly what slog does: the request log's
// readers (log shippers, people grepping) see one format whichever path
// wrote a line.
func TestLineMatchesSlog(t *testing.T) {
	zoned := time.FixedZone("CET", 3600)
	// direct: whether the line must take the direct path; a case that fell
	// back to slog would match slog trivially.
	cases := map[string]struct {
		change func(*Line)
		direct bool
	}{
		"token request":         {func(*Line) {}, true},
		"error code, 5xx":       {func(l *Line) { l.Level, l.Status, l.Error = slog.LevelError, 503, "database_unavailable" }, true},
		"no provider, no user":  {func(l *Line) { l.Provider, l.User, l.Route = "", "", "/healthz" }, true},
		"whole-second time":     {func(l *Line) { l.Time = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }, true},
		"time in another zone":  {func(l *Line) { l.Time = l.Time.In(zoned) }, true},
		"time with 1 ms":        {func(l *Line) { l.Time = time.Date(2026, 1, 1, 0, 0, 0, int(time.Millisecond), time.UTC) }, true},
		"IPv6 client":           {func(l *Line) { l.ClientIP = "::1" }, true},
		"user with <, > and &":  {func(l *Line) { l.User = "a<b>&c" }, true},
		"long duration":         {func(l *Line) { l.DurationMS = 123456789 }, true},
		"warn level":            {func(l *Line) { l.Level = slog.LevelWarn }, true},
		"user with a space":     {func(l *Line) { l.User = "Jane Doe" }, false},
		"user with a quote":     {func(l *Line) { l.User = `say "hi"` }, false},
		"user with =":           {func(l *Line) { l.User = "a=b" }, false},
		"user with a backslash": {func(l *Line) { l.User = `dom\user` }, false},
		"user with a newline":   {func(l *Line) { l.User = "a\nlevel=ERROR" }, false},
		"user in UTF-8":         {func(l *Line) { l.User = "jürgen" }, false},
		"unmatched route":       {func(l *Line) { l.Route = "(no route)" }, false},
		"empty client address":  {func(l *Line) { l.ClientIP = "" }, false},
		"zero time":             {func(l *Line) { l.Time = time.Time{} }, false},
	}
	for name, c := range cases {
		for _, f := range []Format{JSON, Text} {
			l := sampleLine()
			c.change(&l)
			direct, viaSlog, took := both(t, f, l)
			if took != c.direct {
				t.Errorf("%s, format %d: direct path taken %v, want %v", name, f, took, c.direct)
			}
			if direct != viaSlog {
				t.Errorf("%s, format %d:\n direct: %q\n slog:   %q", name, f, direct, viaSlog)
			}
		}
	}
}

// The common line does take the direct path (else the package would be
// correct and useless), and strings that need escaping or quoting do not.
func TestDirectPathTaken(t *testing.T) {
	l := sampleLine()
	if !takesDirectPath(l) {
		t.Fatal("a token request's line does not take the direct path")
	}
	for _, u := range []string{"Jane Doe", `a"b`, `a\b`, "a=b", "a\tb", "jürgen", "\x7f"} {
		l.User = u
		if takesDirectPath(l) {
			t.Errorf("user %q took the direct path", u)
		}
	}
}

// Only the level filter decides: a line below it is not written by either
// path.
func TestLevelFiltered(t *testing.T) {
	var w lockedBuffer
	h := Wrap(slog.NewJSONHandler(&w, &slog.HandlerOptions{Level: slog.LevelWarn}), &w, JSON)
	l := sampleLine()
	Log(context.Background(), h, &l)
	if w.Len() != 0 {
		t.Fatalf("an info line was written at level warn: %q", w.String())
	}
	l.Level, l.Status = slog.LevelError, 500
	Log(context.Background(), h, &l)
	if !strings.Contains(w.String(), `"status":500`) {
		t.Fatalf("an error line was not written at level warn: %q", w.String())
	}
}

// A handler derived with attributes or a group is slog's own again: the
// direct path would drop what it adds.
func TestDerivedHandlersLoseTheDirectPath(t *testing.T) {
	var w lockedBuffer
	h := Wrap(slog.NewJSONHandler(&w, nil), &w, JSON)
	l := sampleLine()
	Log(context.Background(), h.WithAttrs([]slog.Attr{slog.String("component", "api")}), &l)
	if !strings.Contains(w.String(), `"component":"api"`) {
		t.Fatalf("the attribute is missing: %q", w.String())
	}
}

// FuzzLineMatchesSlog: for any strings, the direct path writes slog's
// bytes or leaves the line to slog.
func FuzzLineMatchesSlog(f *testing.F) {
	f.Add("GET", "/api/v1.0/:provider/token", "127.0.0.1", "alpha", "", "user-1", "abc", int64(1764655200123456789), 200, true)
	f.Add("POST", "(no route)", "::1", "", "not_found", "Jane Doe", "", int64(0), 404, false)
	f.Fuzz(func(t *testing.T, method, route, ip, provider, code, user, rid string, nanos int64, status int, text bool) {
		l := Line{Time: time.Unix(0, nanos).UTC(), Level: slog.LevelInfo, Method: method, Route: route, Status: status,
			ClientIP: ip, Provider: provider, Error: code, User: user, RequestID: rid}
		format := JSON
		if text {
			format = Text
		}
		if direct, viaSlog, _ := both(t, format, l); direct != viaSlog {
			t.Fatalf("direct %q\nslog   %q", direct, viaSlog)
		}
	})
}

func BenchmarkLine(b *testing.B) {
	for _, f := range []Format{JSON, Text} {
		name := map[Format]string{JSON: "json", Text: "text"}[f]
		var w lockedBuffer
		var inner slog.Handler = slog.NewJSONHandler(&w, nil)
		if f == Text {
			inner = slog.NewTextHandler(&w, nil)
		}
		h := Wrap(inner, &w, f)
		l := sampleLine()
		b.Run(name+"/direct", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Log(context.Background(), h, &l)
				w.Reset()
			}
		})
		b.Run(name+"/slog", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = h.Handler.Handle(context.Background(), l.Record())
				w.Reset()
			}
		})
	}
}
