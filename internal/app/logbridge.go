package app

import (
	"context"
	"log/slog"
	"strings"
)

// leaderLostMsg is what controller-runtime's manager logs at ERROR when a
// runnable returns an error after the stop sequence began. With
// LeaderElectionReleaseOnCancel the leader elector gives the Lease back on
// SIGTERM and then reports "leader election lost": on a clean shutdown that
// is the expected end, not an error.
const (
	leaderLostMsg   = "error received after stop sequence was engaged"
	leaderLostErr   = "leader election lost"
	leaderLostAsMsg = "leader election released on shutdown"
)

// shutdownHandler is the slog.Handler behind controller-runtime's logr. It
// logs leaderLostMsg with a leader-election-lost error at INFO, as
// leaderLostAsMsg, once stopping reports that shutdown began; every other
// record, and that one before shutdown (a real loss of leadership), passes
// through untouched.
type shutdownHandler struct {
	inner    slog.Handler
	stopping func() bool
}

func newShutdownHandler(inner slog.Handler, stopping func() bool) slog.Handler {
	return &shutdownHandler{inner: inner, stopping: stopping}
}

func (h *shutdownHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *shutdownHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError || r.Message != leaderLostMsg || !h.stopping() || !leaderLost(r) {
		return h.inner.Handle(ctx, r)
	}
	if !h.inner.Enabled(ctx, slog.LevelInfo) {
		return nil
	}
	out := slog.NewRecord(r.Time, slog.LevelInfo, leaderLostAsMsg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "err" && a.Key != "error" {
			out.AddAttrs(a)
		}
		return true
	})
	return h.inner.Handle(ctx, out)
}

// leaderLost reports whether r's error is the leader elector's.
func leaderLost(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "err" && a.Key != "error" {
			return true
		}
		var s string
		if err, ok := a.Value.Any().(error); ok && err != nil {
			s = err.Error()
		} else {
			s = a.Value.String()
		}
		found = strings.Contains(s, leaderLostErr)
		return !found
	})
	return found
}

func (h *shutdownHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &shutdownHandler{inner: h.inner.WithAttrs(as), stopping: h.stopping}
}

func (h *shutdownHandler) WithGroup(name string) slog.Handler {
	return &shutdownHandler{inner: h.inner.WithGroup(name), stopping: h.stopping}
}
