package reqlog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func sampleLine() Line {
	return Line{
		Time: time.Date(2026, 12, 2, 6, 15, 0, 123456789, time.UTC), Level: slog.LevelInfo,
		Method: "GET", Route: "/api/v1.0/:provider/token", Status: 200, DurationMS: 3, ClientIP: "127.0.0.1",
		Provider: "alpha", User: "user-0001", RequestID: "0123456789abcdef0123456789abcdef",
	}
}

// TestLineFormat: the request log's readers (log shippers, people
// grepping) see the attributes in the order they always had, and the
// optional ones only when set, in either format.
func TestLineFormat(t *testing.T) {
	var j, x bytes.Buffer
	l := sampleLine()
	Log(context.Background(), slog.NewJSONHandler(&j, nil), &l)
	Log(context.Background(), slog.NewTextHandler(&x, nil), &l)
	wantJ := `{"time":"2026-12-02T06:15:00.123456789Z","level":"INFO","msg":"request","method":"GET","route":"/api/v1.0/:provider/token","status":200,"duration_ms":3,"client_ip":"127.0.0.1","provider":"alpha","user":"user-0001","request_id":"0123456789abcdef0123456789abcdef"}` + "\n"
	wantX := `time=2026-12-02T06:15:00.123Z level=INFO msg=request method=GET route=/api/v1.0/:provider/token status=200 duration_ms=3 client_ip=127.0.0.1 provider=alpha user=user-0001 request_id=0123456789abcdef0123456789abcdef` + "\n"
	if j.String() != wantJ {
		t.Errorf("JSON:\n got %s\nwant %s", j.String(), wantJ)
	}
	if x.String() != wantX {
		t.Errorf("text:\n got %s\nwant %s", x.String(), wantX)
	}
	j.Reset()
	l = Line{Time: l.Time, Level: slog.LevelError, Method: "POST", Route: "(no route)", Status: 500, ClientIP: "::1", Error: "store: \"down\""}
	Log(context.Background(), slog.NewJSONHandler(&j, nil), &l)
	want := `{"time":"2026-12-02T06:15:00.123456789Z","level":"ERROR","msg":"request","method":"POST","route":"(no route)","status":500,"duration_ms":0,"client_ip":"::1","error":"store: \"down\""}` + "\n"
	if j.String() != want {
		t.Errorf("optional attributes:\n got %s\nwant %s", j.String(), want)
	}
}

func TestLevelFiltered(t *testing.T) {
	var w bytes.Buffer
	h := slog.NewJSONHandler(&w, &slog.HandlerOptions{Level: slog.LevelWarn})
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
