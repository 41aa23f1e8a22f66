// Package auditlog writes audit events with group commit: events appended
// by concurrent callers while one write is in flight are stored together,
// in one multi-row insert and one commit (store.AppendAuditBatch), instead
// of one round trip and one WAL flush each.
//
// Append returns only once its event is stored (or the write failed), so a
// caller that answers after Append keeps the guarantee of writing the event
// itself. A lone event is written at once: nothing waits on a timer to fill
// a batch; batching comes only from callers arriving while a write is in
// flight.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
)

// DefaultMaxBatch caps the events of one write.
const DefaultMaxBatch = 256

// DefaultWriteTimeout bounds one write.
const DefaultWriteTimeout = 15 * time.Second

// Appender is the store method the writer needs.
type Appender interface {
	AppendAuditBatch(ctx context.Context, es []store.AuditEvent) ([]store.AuditEvent, error)
}

// Options configure a Writer.
type Options struct {
	// MaxBatch caps the events of one write; 0 means DefaultMaxBatch.
	MaxBatch int
	// WriteTimeout bounds one write; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger reports events whose write failed after their caller stopped
	// waiting; nil means slog.Default().
	Logger *slog.Logger
	// Observe, if set, hears the size of every write and its outcome
	// (metrics; it must not block).
	Observe func(events int, err error)
}

// Writer groups concurrent audit writes. The zero value is not usable; see
// New. It runs no goroutine while idle: one is started when an event
// arrives with no write in flight and ends when no event is left.
type Writer struct {
	st  Appender
	opt Options

	mu       sync.Mutex
	queue    []*pending
	flushing bool
	// idle is closed when the flusher ends with nothing queued (Drain).
	idle chan struct{}
}

// waiter states of a pending event.
const (
	waiting   int32 = iota
	delivered       // the writer handed the result to the caller
	abandoned       // the caller's context ended first; the writer reports
)

type pending struct {
	ev    store.AuditEvent
	state atomic.Int32
	done  chan result // buffered: the writer never blocks on a caller
}

type result struct {
	ev  store.AuditEvent
	err error
}

// New returns a writer on st.
func New(st Appender, opt Options) *Writer {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = DefaultMaxBatch
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = DefaultWriteTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Writer{st: st, opt: opt}
}

// Append stores e, together with whatever other events are waiting, and
// returns it with ID set once it is stored. Every caller of a failed write
// gets the write's error. If ctx ends first Append returns ctx's error at
// once, but the event stays queued: it is still written, and a failure is
// logged by the writer, since no one is left to hear it.
func (w *Writer) Append(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error) {
	p := &pending{ev: e, done: make(chan result, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, p)
	if !w.flushing {
		w.flushing = true
		w.idle = make(chan struct{})
		go w.flush()
	}
	w.mu.Unlock()
	select {
	case r := <-p.done:
		return r.ev, r.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(waiting, abandoned) {
			return store.AuditEvent{}, fmt.Errorf("audit event still being written: %w", context.Cause(ctx))
		}
		r := <-p.done // delivered meanwhile
		return r.ev, r.err
	}
}

// flush writes queued events, at most MaxBatch at a time, until none is
// left.
func (w *Writer) flush() {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.flushing = false
			close(w.idle)
			w.mu.Unlock()
			return
		}
		n := min(len(w.queue), w.opt.MaxBatch)
		batch := make([]*pending, n)
		copy(batch, w.queue)
		rest := copy(w.queue, w.queue[n:])
		clear(w.queue[rest:])
		w.queue = w.queue[:rest]
		w.mu.Unlock()
		w.write(batch)
	}
}

// write stores one batch and hands each caller its result.
func (w *Writer) write(batch []*pending) {
	evs := make([]store.AuditEvent, len(batch))
	for i, p := range batch {
		evs[i] = p.ev
	}
	// Not the callers' contexts: the events are written whoever still waits.
	ctx, cancel := context.WithTimeout(context.Background(), w.opt.WriteTimeout)
	out, err := w.st.AppendAuditBatch(ctx, evs)
	cancel()
	if err == nil && len(out) != len(evs) {
		err = fmt.Errorf("auditlog: the store returned %d events for %d", len(out), len(evs))
	}
	if w.opt.Observe != nil {
		w.opt.Observe(len(batch), err)
	}
	for i, p := range batch {
		r := result{err: err}
		if err == nil {
			r.ev = out[i]
		}
		if p.state.CompareAndSwap(waiting, delivered) {
			p.done <- r
			continue
		}
		if err != nil {
			w.opt.Logger.Error("writing an audit event failed", "action", p.ev.Action, "provider", p.ev.Provider,
				"user", p.ev.UserID, "batch", len(batch), "error", err)
		}
	}
}

// Drain waits until nothing is queued or being written (every event
// appended before it is stored or its failure delivered), or until ctx
// ends. The writer stays usable: an event
// appended later starts a new write. Used when the server stops, before the
// store is closed.
func (w *Writer) Drain(ctx context.Context) error {
	w.mu.Lock()
	if !w.flushing {
		w.mu.Unlock()
		return nil
	}
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		left := len(w.queue)
		w.mu.Unlock()
		return errors.Join(fmt.Errorf("auditlog: %d audit events still queued and one write in flight", left), context.Cause(ctx))
	}
}
