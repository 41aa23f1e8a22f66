// Package logctx carries a request's identity (its request id) in the
// context and puts it on every log line written with that context, so that
// the lines of one request can be found together in a JSON log stream.
package logctx

import (
	"context"
	"log/slog"
)

type carrierKey struct{}

// Carrier is what logctx keeps in a context: anything that knows the
// request's id. The server's per-request state is one, so that a single
// context value (one allocation) carries the id and the rest of it.
type Carrier interface{ LogRequestID() string }

// WithCarrier returns ctx carrying c, whose id is the request id.
func WithCarrier(ctx context.Context, c Carrier) context.Context {
	return context.WithValue(ctx, carrierKey{}, c)
}

// Carried returns the Carrier ctx carries, or nil.
func Carried(ctx context.Context) Carrier {
	c, _ := ctx.Value(carrierKey{}).(Carrier)
	return c
}

// RequestID returns the request id ctx carries, or "".
func RequestID(ctx context.Context) string {
	if c := Carried(ctx); c != nil {
		return c.LogRequestID()
	}
	return ""
}

// handler adds request_id to every record logged with a context that carries
// one (slog's *Context methods, and Log/LogAttrs).
type handler struct{ next slog.Handler }

// Handler wraps h so that records logged with a request's context carry its
// request id. Wrapping twice is harmless: the id is added once.
func Handler(h slog.Handler) slog.Handler {
	if _, ok := h.(handler); ok {
		return h
	}
	return handler{next: h}
}

func (h handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r = r.Clone()
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.next.Handle(ctx, r)
}

// Unwrap returns the handler Handler wrapped and true, or h and false if
// h is not one. A caller that builds its own record for a request (the
// request log line) adds request_id itself, last as Handle would, and
// hands the record to the inner handler: that saves the copy of the
// record Handle makes.
func Unwrap(h slog.Handler) (slog.Handler, bool) {
	if w, ok := h.(handler); ok {
		return w.next, true
	}
	return h, false
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler { return handler{next: h.next.WithAttrs(as)} }
func (h handler) WithGroup(name string) slog.Handler    { return handler{next: h.next.WithGroup(name)} }

// Logger returns l with its handler wrapped by Handler.
func Logger(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(handler); ok {
		return l
	}
	return slog.New(Handler(l.Handler()))
}
