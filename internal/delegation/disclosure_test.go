package delegation

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/testutil"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// writes counts the durable writes a test's disclosures made.
type writes struct {
	n   atomic.Int64
	err error
}

func (w *writes) write(context.Context) error {
	w.n.Add(1)
	return w.err
}

func key(grant int64, token string) Key {
	return Key{GrantID: grant, ServiceAccountUID: "uid-1", Pod: "pod-a", Token: FingerprintOf(token)}
}

// total is the repeats of sums, and fails on more than one summary per key.
func total(t *testing.T, sums []Summary[string]) map[Key]int64 {
	t.Helper()
	out := map[Key]int64{}
	for _, s := range sums {
		if _, dup := out[s.Key]; dup {
			t.Errorf("two summaries for one key")
		}
		out[s.Key] = s.Repeats
	}
	return out
}

// TestConcurrentFirstDisclosure: 200 callers of one new key share one
// write, all wait for it, and all but the first are counted as repeats.
func TestConcurrentFirstDisclosure(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	release := make(chan struct{})
	var n atomic.Int64
	write := func(context.Context) error {
		n.Add(1)
		<-release
		return nil
	}
	const callers = 200
	k := key(1, "token-a")
	var wg, started sync.WaitGroup
	var answered atomic.Int64
	errs := make(chan error, callers)
	started.Add(callers)
	for range callers {
		wg.Go(func() {
			started.Done()
			errs <- l.Disclose(t.Context(), k, "meta", c.Now().Add(time.Hour), write)
			answered.Add(1)
		})
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond)
	if a := answered.Load(); a != 0 {
		t.Fatalf("%d callers answered before the first write was stored", a)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Disclose: %v", err)
		}
	}
	if w := n.Load(); w != 1 {
		t.Fatalf("%d callers of one key made %d writes, want 1", callers, w)
	}
	sums := l.Summaries(c.Now())
	if len(sums) != 1 || sums[0].Repeats != callers-1 || sums[0].Meta != "meta" || sums[0].Key != k {
		t.Fatalf("summaries %+v, want one of %d repeats", sums, callers-1)
	}
}

// TestFailedFirstDisclosure: when the write fails every caller sharing it
// gets the error and the key is not remembered.
func TestFailedFirstDisclosure(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	refused := errors.New("audit refused")
	release := make(chan struct{})
	var n atomic.Int64
	write := func(context.Context) error {
		n.Add(1)
		<-release
		return refused
	}
	k := key(1, "token-a")
	const callers = 50
	var wg, started sync.WaitGroup
	errs := make(chan error, callers)
	started.Add(callers)
	for range callers {
		wg.Go(func() {
			started.Done()
			errs <- l.Disclose(t.Context(), k, "meta", time.Time{}, write)
		})
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, refused) {
			t.Fatalf("a caller of the failed write got %v", err)
		}
	}
	if w := n.Load(); w != 1 {
		t.Errorf("%d writes, want 1 shared", w)
	}
	if l.Len() != 0 {
		t.Errorf("a key whose write failed is remembered")
	}
	// The next disclosure tries again, and is remembered once stored.
	w := &writes{}
	for range 3 {
		if err := l.Disclose(t.Context(), k, "meta", time.Time{}, w.write); err != nil {
			t.Fatal(err)
		}
	}
	if w.n.Load() != 1 {
		t.Errorf("after the failure: %d writes for 3 disclosures, want 1", w.n.Load())
	}
	if sums := l.Summaries(c.Now()); len(sums) != 1 || sums[0].Repeats != 2 {
		t.Errorf("summaries %+v, want one of 2 repeats (failed answers are not repeats)", sums)
	}
}

// TestRepeatCounts: repeats are exact per key, with the times of the first
// and last; each summary takes the counts since the previous one.
func TestRepeatCounts(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	w := &writes{}
	exp := c.Now().Add(time.Hour)
	a, b := key(1, "token-a"), key(1, "token-b")
	other := key(1, "token-a")
	other.Pod = "pod-b"
	start := c.Now()
	for i := range 10 {
		c.Add(time.Second)
		for _, k := range []Key{a, b, other} {
			if i >= 4 && k == b {
				continue
			}
			if err := l.Disclose(t.Context(), k, k.Pod, exp, w.write); err != nil {
				t.Fatal(err)
			}
		}
	}
	if w.n.Load() != 3 {
		t.Fatalf("%d writes for 3 keys, want 3", w.n.Load())
	}
	sums := l.Summaries(c.Now())
	got := total(t, sums)
	if got[a] != 9 || got[b] != 3 || got[other] != 9 || len(got) != 3 {
		t.Fatalf("repeats %v, want a 9, b 3, other pod 9", got)
	}
	for _, s := range sums {
		if s.Key == a && (!s.FirstRepeat.Equal(start.Add(2*time.Second)) || !s.LastRepeat.Equal(start.Add(10*time.Second))) {
			t.Errorf("a: first repeat %v, last %v", s.FirstRepeat, s.LastRepeat)
		}
	}
	if sums := l.Summaries(c.Now()); len(sums) != 0 {
		t.Errorf("a second summary without repeats: %+v", sums)
	}
	c.Add(time.Second)
	if err := l.Disclose(t.Context(), b, "", exp, w.write); err != nil {
		t.Fatal(err)
	}
	if got := total(t, l.Summaries(c.Now())); got[b] != 1 || len(got) != 1 {
		t.Errorf("after one more repeat: %v", got)
	}
	if w.n.Load() != 3 {
		t.Errorf("repeats wrote: %d writes", w.n.Load())
	}
}

// TestExpiry: a key is dropped with its final summary once its token has
// expired, or an hour after its first disclosure when the expiry is
// unknown; the same token value is then written again.
func TestExpiry(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	w := &writes{}
	known, unknown := key(1, "known"), key(1, "unknown")
	exp := c.Now().Add(10 * time.Minute)
	for range 3 {
		if err := l.Disclose(t.Context(), known, "", exp, w.write); err != nil {
			t.Fatal(err)
		}
		if err := l.Disclose(t.Context(), unknown, "", time.Time{}, w.write); err != nil {
			t.Fatal(err)
		}
	}
	got := total(t, l.Summaries(c.Add(9*time.Minute)))
	if got[known] != 2 || got[unknown] != 2 || l.Len() != 2 {
		t.Fatalf("before expiry: %v, %d keys", got, l.Len())
	}
	if err := l.Disclose(t.Context(), known, "", exp, w.write); err != nil {
		t.Fatal(err)
	}
	got = total(t, l.Summaries(c.Add(time.Minute)))
	if got[known] != 1 || l.Len() != 1 {
		t.Fatalf("at expiry: final summary %v, %d keys (want the known one dropped)", got, l.Len())
	}
	c.Add(49*time.Minute + 59*time.Second)
	if l.Summaries(c.Now()); l.Len() != 1 {
		t.Fatalf("the unknown-expiry key dropped before its hour")
	}
	if l.Summaries(c.Add(time.Second)); l.Len() != 0 {
		t.Fatalf("the unknown-expiry key kept after its hour")
	}
	before := w.n.Load()
	if err := l.Disclose(t.Context(), unknown, "", time.Time{}, w.write); err != nil {
		t.Fatal(err)
	}
	if w.n.Load() != before+1 {
		t.Errorf("a dropped key was not written again")
	}

	// A lapsed key met before any summary dropped it: written again, its
	// pending repeats still summarised.
	short := key(2, "short")
	exp = c.Now().Add(time.Minute)
	for range 4 {
		if err := l.Disclose(t.Context(), short, "", exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(time.Minute)
	before = w.n.Load()
	if err := l.Disclose(t.Context(), short, "", c.Now().Add(time.Minute), w.write); err != nil {
		t.Fatal(err)
	}
	if w.n.Load() != before+1 {
		t.Errorf("a lapsed key was answered without a write")
	}
	if got := total(t, l.Summaries(c.Now())); got[short] != 3 {
		t.Errorf("pending repeats of the lapsed key: %v, want 3", got)
	}
}

// TestBound: a full ledger writes every disclosure of a key it does not
// hold, warns once, and still answers the keys it holds from memory.
func TestBound(t *testing.T) {
	c := newClock()
	logs := &testutil.SyncBuffer{}
	l := New(Options[string]{Now: c.Now, MaxKeys: 3, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	w := &writes{}
	exp := c.Now().Add(time.Hour)
	for i := range 3 {
		if err := l.Disclose(t.Context(), key(int64(i), "t"), "", exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	extra := key(9, "t")
	for range 5 {
		if err := l.Disclose(t.Context(), extra, "", exp, w.write); err != nil {
			t.Fatal(err)
		}
		if err := l.Disclose(t.Context(), key(0, "t"), "", exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.n.Load(); n != 3+5 {
		t.Errorf("%d writes, want 3 first disclosures + 5 for the key that did not fit", n)
	}
	if l.Len() != 3 {
		t.Errorf("the ledger grew to %d keys past its bound of 3", l.Len())
	}
	if got := strings.Count(logs.String(), "disclosure ledger full"); got != 1 {
		t.Errorf("%d warnings, want 1:\n%s", got, logs)
	}
	if got := total(t, l.Summaries(c.Now())); got[key(0, "t")] != 5 || got[extra] != 0 {
		t.Errorf("summaries %v", got)
	}
	// A failing write in fallback is the caller's error.
	refused := errors.New("refused")
	if err := l.Disclose(t.Context(), extra, "", exp, (&writes{err: refused}).write); !errors.Is(err, refused) {
		t.Errorf("fallback write error: %v", err)
	}
}

// TestForgetGrant: a revoked grant's keys are dropped, their pending
// counts summarised; other grants' keys stay.
func TestForgetGrant(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	w := &writes{}
	exp := c.Now().Add(time.Hour)
	g1a, g1b, g2 := key(1, "a"), key(1, "b"), key(2, "a")
	for range 3 {
		for _, k := range []Key{g1a, g1b, g2} {
			if err := l.Disclose(t.Context(), k, "", exp, w.write); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.ForgetGrant(1)
	if l.Len() != 1 {
		t.Fatalf("%d keys after revoking grant 1, want 1", l.Len())
	}
	if got := total(t, l.Summaries(c.Now())); got[g1a] != 2 || got[g1b] != 2 || got[g2] != 2 {
		t.Errorf("summaries after revoke: %v", got)
	}
	before := w.n.Load()
	if err := l.Disclose(t.Context(), g1a, "", exp, w.write); err != nil {
		t.Fatal(err)
	}
	if w.n.Load() != before+1 {
		t.Error("a key of the revoked grant was answered from memory")
	}
}

// TestCancelledCaller: a caller whose context ends stops waiting, while
// the write goes on for the others and the key is remembered.
func TestCancelledCaller(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	release := make(chan struct{})
	var sawCancel atomic.Bool
	write := func(ctx context.Context) error {
		<-release
		sawCancel.Store(ctx.Err() != nil)
		return nil
	}
	k := key(1, "a")
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- l.Disclose(ctx, k, "", time.Time{}, write) }()
	for l.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	waiter := make(chan error, 1)
	go func() { waiter <- l.Disclose(t.Context(), k, "", time.Time{}, write) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled first caller: %v", err)
	}
	close(release)
	if err := <-waiter; err != nil {
		t.Fatalf("the caller sharing the write: %v", err)
	}
	if sawCancel.Load() {
		t.Error("the write saw the first caller's cancellation")
	}
	if l.Len() != 1 {
		t.Error("the key was not remembered")
	}
}

// TestLoopAndClose: the background loop flushes every interval while the
// ledger holds keys; Close flushes the rest, after which every disclosure
// is written.
func TestLoopAndClose(t *testing.T) {
	flushed := make(chan []Summary[string], 16)
	l := New(Options[string]{Interval: 20 * time.Millisecond, Flush: func(_ context.Context, s []Summary[string]) { flushed <- s }})
	w := &writes{}
	k := key(1, "a")
	exp := time.Now().Add(time.Hour)
	for range 4 {
		if err := l.Disclose(t.Context(), k, "m", exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case s := <-flushed:
		if len(s) != 1 || s[0].Repeats != 3 || s[0].Meta != "m" {
			t.Fatalf("flushed %+v, want 3 repeats", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no summary from the loop")
	}
	if err := l.Disclose(t.Context(), k, "m", exp, w.write); err != nil {
		t.Fatal(err)
	}
	// Close takes the count whether or not the loop got to it first.
	l.Close(t.Context())
	var n int64
	for len(flushed) > 0 {
		for _, s := range <-flushed {
			n += s.Repeats
		}
	}
	if n != 1 {
		t.Errorf("after the first summary, %d repeats flushed, want 1", n)
	}
	before := w.n.Load()
	for range 2 {
		if err := l.Disclose(t.Context(), k, "m", exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	if w.n.Load() != before+2 || l.Len() != 0 {
		t.Errorf("after Close: %d writes for 2 disclosures, %d keys", w.n.Load()-before, l.Len())
	}
}

// TestLoopStopsWhenEmpty: the loop ends once every key has expired and
// its last counts are flushed.
func TestLoopStopsWhenEmpty(t *testing.T) {
	c := newClock()
	var flushes atomic.Int64
	l := New(Options[string]{Now: c.Now, Interval: 5 * time.Millisecond, Flush: func(context.Context, []Summary[string]) { flushes.Add(1) }})
	if err := l.Disclose(t.Context(), key(1, "a"), "", c.Now().Add(time.Second), (&writes{}).write); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		running := l.loopDone != nil
		l.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop still runs on an empty ledger")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if l.Len() != 0 || flushes.Load() != 0 {
		t.Errorf("%d keys, %d flushes (nothing was repeated)", l.Len(), flushes.Load())
	}
}

func TestFingerprint(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 appendix B.1: the same value always gives
	// the same key, and the key is a hash, not the token.
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := hex.EncodeToString(func() []byte { f := FingerprintOf("abc"); return f[:] }()); got != abc {
		t.Errorf("FingerprintOf(abc) = %s, want %s", got, abc)
	}
	if FingerprintOf("a") == FingerprintOf("b") {
		t.Error("two tokens share a fingerprint")
	}
}

// TestMetricsHooks: Keys hears the number of keys held whenever it changes
// (first disclosures, a failed one, expiry, revoke, close); Fallback hears
// each answer that writes its own record, full or closed.
func TestMetricsHooks(t *testing.T) {
	c := newClock()
	var (
		keys      []int
		fallbacks = map[bool]int{}
	)
	l := New(Options[string]{Now: c.Now, MaxKeys: 2, Logger: slog.New(slog.DiscardHandler),
		Keys:     func(n int) { keys = append(keys, n) },
		Fallback: func(closed bool) { fallbacks[closed]++ }})
	w := &writes{}
	exp := c.Now().Add(time.Minute)
	disclose := func(k Key, expiry time.Time, write func(context.Context) error) error {
		return l.Disclose(t.Context(), k, "", expiry, write)
	}
	wantKeys := func(step string, want ...int) {
		t.Helper()
		if !slices.Equal(keys, want) {
			t.Errorf("%s: Keys heard %v, want %v", step, keys, want)
		}
		keys = nil
	}
	if err := disclose(key(1, "a"), exp, w.write); err != nil {
		t.Fatal(err)
	}
	if err := disclose(key(1, "a"), exp, w.write); err != nil { // a repeat
		t.Fatal(err)
	}
	wantKeys("first disclosure and a repeat", 1)
	if err := disclose(key(2, "a"), exp, (&writes{err: errors.New("refused")}).write); err == nil {
		t.Fatal("a failed write succeeded")
	}
	wantKeys("failed first disclosure", 2, 1)
	if err := disclose(key(2, "a"), exp.Add(time.Hour), w.write); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := disclose(key(3, "a"), exp, w.write); err != nil {
			t.Fatal(err)
		}
	}
	wantKeys("full", 2)
	if fallbacks[false] != 3 || fallbacks[true] != 0 {
		t.Errorf("fallbacks %v, want 3 full", fallbacks)
	}
	c.Add(2 * time.Minute)
	l.Summaries(c.Now())
	wantKeys("expiry", 1)
	l.Summaries(c.Now())
	wantKeys("nothing expired")
	if err := disclose(key(1, "a"), c.Now().Add(time.Minute), w.write); err != nil {
		t.Fatal(err)
	}
	l.ForgetGrant(1)
	wantKeys("revoke", 2, 1)
	l.Close(t.Context())
	wantKeys("close", 0)
	if err := disclose(key(2, "a"), exp, w.write); err != nil {
		t.Fatal(err)
	}
	if fallbacks[false] != 3 || fallbacks[true] != 1 {
		t.Errorf("fallbacks %v, want 3 full and 1 closed", fallbacks)
	}
}

// TestRepeat: Repeat counts only a key remembered (first write done, token
// not expired), as Disclose would; otherwise it changes nothing.
func TestRepeat(t *testing.T) {
	c := newClock()
	l := New(Options[string]{Now: c.Now})
	w := &writes{}
	k := key(1, "a")
	exp := c.Now().Add(time.Minute)
	if l.Repeat(k) || l.Len() != 0 {
		t.Fatal("Repeat of an unknown key")
	}
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- l.Disclose(t.Context(), k, "", exp, func(context.Context) error { <-release; return nil })
	}()
	for l.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	if l.Repeat(k) {
		t.Error("Repeat while the first write is in flight")
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if !l.Repeat(k) {
			t.Fatal("Repeat of a remembered key")
		}
	}
	if err := l.Disclose(t.Context(), k, "", exp, w.write); err != nil || w.n.Load() != 0 {
		t.Fatalf("Disclose of a remembered key: %v, %d writes", err, w.n.Load())
	}
	if got := total(t, l.Summaries(c.Now())); got[k] != 4 {
		t.Errorf("summaries %v, want 4 repeats", got)
	}
	c.Add(time.Minute)
	if l.Repeat(k) {
		t.Error("Repeat of a key whose token expired")
	}
	if got := l.Summaries(c.Now()); len(got) != 0 {
		t.Errorf("a refused Repeat was counted: %v", got)
	}
	if err := l.Disclose(t.Context(), k, "", c.Now().Add(time.Minute), w.write); err != nil || w.n.Load() != 1 {
		t.Fatalf("Disclose after expiry: %v, %d writes, want 1", err, w.n.Load())
	}
	l.Close(t.Context())
	if l.Repeat(k) {
		t.Error("Repeat on a closed ledger")
	}
}
