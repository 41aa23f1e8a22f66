// Package reqlog writes the request log: one line per HTTP request, the
// same line slog's JSON or text handler writes for the same record, byte
// for byte, at a fraction of the cost.
//
// The line is written once per request, so on the token hot path it was
// the largest cost of tokenstore's own: building a slog.Record, walking its
// attributes through the handler's generic machinery and escaping every
// string. Here a Line's fields are appended straight into a pooled buffer
// when every string is plain (printable ASCII that neither format escapes
// or quotes: what methods, routes, status codes, addresses, provider ids,
// request ids and most user ids are). A line with any other string goes
// through slog as before, so the output never differs; a test holds both
// paths to the same bytes.
package reqlog

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Line is one request's log line. Empty Provider, Error, User and
// RequestID are left out, as the request log always did.
type Line struct {
	Time       time.Time
	Level      slog.Level
	Method     string
	Route      string
	Status     int
	DurationMS int64
	ClientIP   string
	Provider   string
	Error      string
	User       string
	RequestID  string
}

// Msg is the message of every request line.
const Msg = "request"

// Format names the two formats of slog's built-in handlers.
type Format int

const (
	JSON Format = iota
	Text
)

// Handler is a slog.Handler that also writes Lines directly. It passes
// every record to the handler it wraps, which must be slog's JSON or text
// handler (Format says which) writing to W, made with no attributes, no
// groups, no AddSource and no ReplaceAttr: the direct path writes what
// that handler would, and nothing it was configured to add.
type Handler struct {
	slog.Handler
	w      io.Writer
	format Format
}

// Wrap returns h with the direct path for request lines. w must be the
// writer h writes to and must be safe for concurrent Writes of whole lines
// (slog's handlers serialize only their own writes).
func Wrap(h slog.Handler, w io.Writer, format Format) *Handler {
	return &Handler{Handler: h, w: w, format: format}
}

// WithAttrs and WithGroup return the wrapped handler's: a line written by
// the direct path would lack the attributes or group.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler { return h.Handler.WithAttrs(as) }
func (h *Handler) WithGroup(name string) slog.Handler    { return h.Handler.WithGroup(name) }

// Log writes l with h: directly when h is a *Handler and every string of
// l is plain, else as a slog.Record. Nothing is written when h is not
// enabled at l.Level.
func Log(ctx context.Context, h slog.Handler, l *Line) {
	if !h.Enabled(ctx, l.Level) {
		return
	}
	if d, ok := h.(*Handler); ok {
		if fs := l.fields(); l.plain(&fs) {
			d.write(l, &fs)
			return
		}
	}
	_ = h.Handle(ctx, l.Record())
}

// write writes l, of fields fs, plain, with one Write.
func (d *Handler) write(l *Line, fs *[9]field) {
	bp := bufs.Get().(*[]byte)
	b := l.appendLine((*bp)[:0], d.format, fs)
	_, _ = d.w.Write(b)
	*bp = b
	bufs.Put(bp)
}

// Record is l as the slog.Record the direct path stands in for.
func (l *Line) Record() slog.Record {
	r := slog.NewRecord(l.Time, l.Level, Msg, 0)
	for _, f := range l.fields() {
		switch {
		case f.number:
			r.AddAttrs(slog.Int64(f.key, f.num))
		case !f.optional || f.str != "":
			r.AddAttrs(slog.String(f.key, f.str))
		}
	}
	return r
}

// field is one attribute of a line after time, level and message.
type field struct {
	key      string
	str      string
	num      int64
	number   bool // num, written bare; else str, written as a string
	optional bool // left out when str is empty
}

// fields are l's attributes in the order the request log has always had:
// the one list Record, plain and the direct path all walk.
func (l *Line) fields() [9]field {
	return [9]field{
		{key: "method", str: l.Method},
		{key: "route", str: l.Route},
		{key: "status", num: int64(l.Status), number: true},
		{key: "duration_ms", num: l.DurationMS, number: true},
		{key: "client_ip", str: l.ClientIP},
		{key: "provider", str: l.Provider, optional: true},
		{key: "error", str: l.Error, optional: true},
		{key: "user", str: l.User, optional: true},
		{key: "request_id", str: l.RequestID, optional: true},
	}
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// plain reports whether every string of l (its fields fs) is written as
// is by both formats: JSON would not escape it, text would not quote it
// (nor an empty one, which text quotes).
func (l *Line) plain(fs *[9]field) bool {
	for i := range fs {
		f := &fs[i]
		if !f.number && (!plainString(f.str) || (f.str == "" && !f.optional)) {
			return false
		}
	}
	// slog leaves a zero time out and flags a year it cannot format.
	y := l.Time.Year()
	return !l.Time.IsZero() && y >= 0 && y < 10000
}

// plainString: printable ASCII other than the quote and the backslash
// (which JSON escapes), the space and '=' (which text quotes). slog's JSON
// does not escape <, > and & (it has no HTML escaping).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '=' {
			return false
		}
	}
	return true
}

// appendLine appends l, plain, of fields fs, as format writes it.
func (l *Line) appendLine(b []byte, format Format, fs *[9]field) []byte {
	if format == Text {
		b = append(b, "time="...)
		b = appendRFC3339Millis(b, l.Time)
		b = append(b, " level="...)
		b = append(b, l.Level.String()...)
		b = append(b, " msg="+Msg...)
	} else {
		b = append(b, `{"time":"`...)
		b = l.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","level":"`...)
		b = append(b, l.Level.String()...)
		b = append(b, `","msg":"`+Msg+`"`...)
	}
	for i := range fs {
		f := &fs[i]
		if f.optional && f.str == "" {
			continue
		}
		quoted := format == JSON && !f.number
		if format == Text {
			b = append(b, ' ')
			b = append(b, f.key...)
			b = append(b, '=')
		} else {
			b = append(b, `,"`...)
			b = append(b, f.key...)
			b = append(b, `":`...)
		}
		if quoted {
			b = append(b, '"')
		}
		if f.number {
			b = strconv.AppendInt(b, f.num, 10)
		} else {
			b = append(b, f.str...)
		}
		if quoted {
			b = append(b, '"')
		}
	}
	if format == JSON {
		b = append(b, '}')
	}
	return append(b, '\n')
}

// appendRFC3339Millis is slog's text handler's time format (log/slog's
// function of that name): RFC 3339 with exactly three decimals.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
