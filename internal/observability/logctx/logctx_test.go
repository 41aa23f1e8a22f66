package logctx

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

type carrier struct{ id, other string }

func (c *carrier) LogRequestID() string { return c.id }

// Lines logged with a request's context carry its id, taken from the
// carrier; lines of a derived context too; others carry none.
func TestRequestIDOnLines(t *testing.T) {
	var buf bytes.Buffer
	log := Logger(slog.New(slog.NewTextHandler(&buf, nil)))
	c := &carrier{id: "id-2", other: "x"}
	type key struct{}
	log.InfoContext(context.WithValue(WithCarrier(context.Background(), c), key{}, 1), "one")
	ctx := WithCarrier(context.Background(), c)
	log.InfoContext(ctx, "two")
	log.Info("three")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "msg=one request_id=id-2") ||
		!strings.HasSuffix(lines[1], "msg=two request_id=id-2") || strings.Contains(lines[2], "request_id") {
		t.Fatalf("lines: %q", lines)
	}
	if Carried(ctx) != Carrier(c) || RequestID(context.Background()) != "" {
		t.Fatal("Carried does not return the carrier, or an id came from nowhere")
	}
	if Logger(log) != log {
		t.Fatal("wrapping twice made a new logger")
	}
}
