package app

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
)

// TestShutdownHandler: controller-runtime's "leader election lost" after
// the stop sequence began is INFO once shutdown began, and ERROR before it
// (a real loss of leadership); other errors are untouched.
func TestShutdownHandler(t *testing.T) {
	var buf bytes.Buffer
	var stopping atomic.Bool
	log := logr.FromSlogHandler(newShutdownHandler(slog.NewJSONHandler(&buf, nil), stopping.Load)).WithName("manager").WithValues("k", "v")
	lost := errors.New("leader election lost")

	log.Error(lost, leaderLostMsg)
	if out := buf.String(); !strings.Contains(out, `"level":"ERROR"`) || !strings.Contains(out, leaderLostMsg) {
		t.Errorf("before shutdown: %s", out)
	}
	buf.Reset()

	stopping.Store(true)
	log.Error(lost, leaderLostMsg)
	out := buf.String()
	if !strings.Contains(out, `"level":"INFO"`) || !strings.Contains(out, `"msg":"`+leaderLostAsMsg+`"`) ||
		strings.Contains(out, "ERROR") || !strings.Contains(out, `"k":"v"`) {
		t.Errorf("after shutdown: %s", out)
	}
	buf.Reset()

	log.Error(errors.New("some other failure"), leaderLostMsg)
	log.Error(lost, "something else")
	if n := strings.Count(buf.String(), `"level":"ERROR"`); n != 2 {
		t.Errorf("other errors changed: %s", buf.String())
	}
}
