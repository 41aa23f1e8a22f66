package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// newPostgres is a migrated store on a fresh PostgreSQL database.
func newPostgres(t *testing.T) store.Store {
	t.Helper()
	url := pgtest.NewDatabase(t)
	m, err := storeopen.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	m.Close()
	s, err := storeopen.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// gated records the size of every write and, when hold is set, keeps the
// first write waiting until hold is closed, so that the test decides what
// queues behind it.
type gated struct {
	next Appender
	err  error // every write fails with it when set

	hold    chan struct{}
	entered chan struct{}

	mu    sync.Mutex
	sizes []int
}

func newGated(next Appender, hold bool) *gated {
	g := &gated{next: next, entered: make(chan struct{})}
	if hold {
		g.hold = make(chan struct{})
	}
	return g
}

func (g *gated) AppendAuditBatch(ctx context.Context, es []store.AuditEvent) ([]store.AuditEvent, error) {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(es))
	first := len(g.sizes) == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		if g.hold != nil {
			<-g.hold
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	return g.next.AppendAuditBatch(ctx, es)
}

func (g *gated) writes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitQueued waits until n events wait behind the write in flight.
func waitQueued(t *testing.T, w *Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		q := len(w.queue)
		w.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func event(i int) store.AuditEvent {
	return store.AuditEvent{
		UserID: fmt.Sprintf("user-%d", i%7), Actor: "serviceaccount:ns/sa", Action: "grant.use", Provider: "github",
		Detail: fmt.Appendf(nil, `{"n":%d}`, i),
	}
}

// stored returns the Detail of every stored event of the users event()
// uses, and fails on a duplicate.
func stored(t *testing.T, s store.Store) map[string]store.AuditEvent {
	t.Helper()
	out := map[string]store.AuditEvent{}
	for u := range 7 {
		evs, err := s.ListAudit(t.Context(), fmt.Sprintf("user-%d", u), 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if _, dup := out[string(e.Detail)]; dup {
				t.Errorf("event %s stored twice", e.Detail)
			}
			out[string(e.Detail)] = e
		}
	}
	return out
}

// appendAll appends event(from) .. event(to-1), each from its own goroutine.
func appendAll(ctx context.Context, w *Writer, from, to int) (evs []store.AuditEvent, errs []error, wait func()) {
	evs = make([]store.AuditEvent, to-from)
	errs = make([]error, to-from)
	var wg sync.WaitGroup
	for i := from; i < to; i++ {
		wg.Go(func() { evs[i-from], errs[i-from] = w.Append(ctx, event(i)) })
	}
	return evs, errs, wg.Wait
}

// TestGroupCommit: while one write is in flight, the next callers' events
// are gathered and written together, capped at MaxBatch; each caller gets
// its own event back, and every event is stored exactly once.
func TestGroupCommit(t *testing.T) {
	s := newPostgres(t)
	g := newGated(s, true)
	w := New(g, Options{MaxBatch: 64})

	first, firstErr, waitFirst := appendAll(t.Context(), w, 0, 1)
	<-g.entered
	const n = 200
	evs, errs, wait := appendAll(t.Context(), w, 1, n)
	waitQueued(t, w, n-1)
	close(g.hold)
	waitFirst()
	wait()
	evs, errs = append(first, evs...), append(firstErr, errs...)

	if got, want := fmt.Sprint(g.writes()), "[1 64 64 64 7]"; got != want {
		t.Errorf("write sizes %s, want %s (the lone first event, then the queue in batches of at most 64)", got, want)
	}
	all := stored(t, s)
	if len(all) != n {
		t.Errorf("%d events stored, want %d", len(all), n)
	}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Append %d: %v", i, errs[i])
			continue
		}
		want := event(i)
		got, ok := all[string(want.Detail)]
		if !ok {
			t.Errorf("event %d not stored", i)
			continue
		}
		if evs[i].ID != got.ID || evs[i].UserID != want.UserID || string(evs[i].Detail) != string(want.Detail) {
			t.Errorf("Append %d returned %+v, stored %+v", i, evs[i], got)
		}
	}
	if err := w.Drain(t.Context()); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if w.flushing {
		t.Error("a flusher still runs when idle")
	}
}

// TestGroupCommitFreeRunning: many callers, no gate, real PostgreSQL:
// every event stored exactly once, in fewer writes than events.
func TestGroupCommitFreeRunning(t *testing.T) {
	s := newPostgres(t)
	g := newGated(s, false)
	w := New(g, Options{})
	const callers, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				if _, err := w.Append(t.Context(), event(c*each+i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Append: %v", err)
	}
	if all := stored(t, s); len(all) != callers*each {
		t.Errorf("%d events stored, want %d", len(all), callers*each)
	}
	sizes := g.writes()
	biggest, total := 0, 0
	for _, n := range sizes {
		biggest, total = max(biggest, n), total+n
	}
	t.Logf("%d events in %d writes, largest %d", total, len(sizes), biggest)
	if total != callers*each || len(sizes) >= total || biggest < 2 {
		t.Errorf("%d events in %d writes (largest %d): want fewer writes than events", total, len(sizes), biggest)
	}
}

// TestLoneEventAtOnce: with nothing else going on an event is written
// alone, straight away.
func TestLoneEventAtOnce(t *testing.T) {
	s := newPostgres(t)
	g := newGated(s, false)
	w := New(g, Options{})
	for i := range 3 {
		e, err := w.Append(t.Context(), event(i))
		if err != nil || e.ID == 0 {
			t.Fatalf("Append = %+v, %v", e, err)
		}
	}
	if got := fmt.Sprint(g.writes()); got != "[1 1 1]" {
		t.Errorf("write sizes %s, want [1 1 1]", got)
	}
}

// TestWriteFails: every caller of a failed batch gets the error, and the
// writer goes on with the next batch.
func TestWriteFails(t *testing.T) {
	s := newPostgres(t)
	refused := errors.New("refused")
	g := newGated(s, true)
	g.err = refused
	w := New(g, Options{})

	_, firstErr, waitFirst := appendAll(t.Context(), w, 0, 1)
	<-g.entered
	_, errs, wait := appendAll(t.Context(), w, 1, 10)
	waitQueued(t, w, 9)
	close(g.hold)
	waitFirst()
	wait()
	for i, err := range append(firstErr, errs...) {
		if !errors.Is(err, refused) {
			t.Errorf("caller %d: %v, want the write's error", i, err)
		}
	}
	if got := fmt.Sprint(g.writes()); got != "[1 9]" {
		t.Errorf("write sizes %s, want [1 9]", got)
	}
	if all := stored(t, s); len(all) != 0 {
		t.Errorf("%d events stored by failed writes", len(all))
	}

	g.err = nil
	if _, err := w.Append(t.Context(), event(10)); err != nil {
		t.Errorf("Append after a failed write: %v", err)
	}
}

// TestCallerGone: a caller whose context ends stops waiting; its event and
// the others' are still written.
func TestCallerGone(t *testing.T) {
	s := newPostgres(t)
	g := newGated(s, true)
	w := New(g, Options{})

	_, firstErr, waitFirst := appendAll(t.Context(), w, 0, 1)
	<-g.entered
	ctx, cancel := context.WithCancel(t.Context())
	goneErr := make(chan error, 1)
	go func() { _, err := w.Append(ctx, event(1)); goneErr <- err }()
	waitQueued(t, w, 1)
	_, errs, wait := appendAll(t.Context(), w, 2, 10)
	waitQueued(t, w, 9)
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Append of the caller gone = %v, want context.Canceled", err)
	}
	close(g.hold)
	waitFirst()
	wait()
	for i, err := range append(firstErr, errs...) {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if err := w.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	all := stored(t, s)
	for i := range 10 {
		if _, ok := all[string(event(i).Detail)]; !ok {
			t.Errorf("event %d lost", i)
		}
	}
}

// TestCallerGoneWriteFails: the failure of an event whose caller stopped
// waiting is logged, since no one else hears of it.
func TestCallerGoneWriteFails(t *testing.T) {
	g := newGated(nil, true)
	g.err = errors.New("refused")
	var logs bytes.Buffer
	w := New(g, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	_, firstErr, waitFirst := appendAll(t.Context(), w, 0, 1)
	<-g.entered
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := w.Append(ctx, event(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with an ended context = %v", err)
	}
	close(g.hold)
	waitFirst()
	if err := w.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if firstErr[0] == nil {
		t.Error("the waiting caller got no error")
	}
	if l := logs.String(); strings.Count(l, "writing an audit event failed") != 1 || !strings.Contains(l, "user=user-1") {
		t.Errorf("logs: %s\nwant one line for the abandoned event", l)
	}
}

// TestDrain: Drain waits for queued events and the write in flight, and
// gives up when its context ends.
func TestDrain(t *testing.T) {
	s := newPostgres(t)
	g := newGated(s, true)
	w := New(g, Options{})
	if err := w.Drain(t.Context()); err != nil {
		t.Fatalf("Drain when idle: %v", err)
	}
	// Callers that have all gone: only Drain still waits for their events.
	ctx, cancel := context.WithCancel(t.Context())
	_, _, waitFirst := appendAll(ctx, w, 0, 1)
	<-g.entered
	_, _, wait := appendAll(ctx, w, 1, 5)
	waitQueued(t, w, 4)
	cancel()
	waitFirst()
	wait()

	short, stop := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer stop()
	if err := w.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain with a write held = %v, want DeadlineExceeded", err)
	}
	close(g.hold)
	if err := w.Drain(t.Context()); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if all := stored(t, s); len(all) != 5 {
		t.Errorf("%d events stored, want 5", len(all))
	}
}
