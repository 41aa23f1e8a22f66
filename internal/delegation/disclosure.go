// The disclosure ledger (this file) decides which answers of the delegated token exchange
// need a durable audit event of their own: a ledger of the token values
// this replica has disclosed to which recipient.
//
// The audit trail records every disclosure of distinct token material to a
// recipient, durably and before the token goes out. Handing the same
// access-token value again to the same recipient discloses nothing new, so
// such repeats are only counted in memory and written as a summary every
// interval (group-committed, not waited on per answer). A key is (grant,
// ServiceAccount uid, pod, SHA-256 of the token value); the ledger keeps
// the hash, never the token.
//
//   - The first answer for a key waits for its write (Disclose's write
//     function); concurrent first answers for one key share that one
//     write. If it fails, they all get its error and the key is not
//     remembered: the next answer tries again.
//   - Later answers for the key are counted and return at once (Repeat,
//     or Disclose).
//   - Summaries takes the counts since the last call; the background loop
//     hands them to Options.Flush every Options.Interval while the ledger
//     holds anything, and Close hands over what is left.
//   - An entry lives until its token expires (Disclose's expiry), or
//     Options.UnknownExpiry after the first disclosure when the expiry is
//     unknown; ForgetGrant drops a grant's entries at once. Pending counts
//     of a dropped entry are still summarised.
//   - The ledger holds at most Options.MaxKeys keys. When it is full (or
//     closed) every answer writes its own event and waits for it, as
//     without a ledger; the first such answer logs a warning.
//
// What a crash can lose is the counts of at most one interval; never the
// record that a token value was disclosed to a recipient.

package delegation

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxKeys       = 100_000
	DefaultUnknownExpiry = time.Hour
	DefaultInterval      = time.Minute
)

// Fingerprint is the SHA-256 of a token value.
type Fingerprint [sha256.Size]byte

// FingerprintOf hashes a token value. Only the hash is kept.
func FingerprintOf(token string) Fingerprint { return sha256.Sum256([]byte(token)) }

// Key is one recipient's view of one token value under one grant.
type Key struct {
	GrantID           int64
	ServiceAccountUID string
	// Pod may be empty (a token not bound to a pod).
	Pod   string
	Token Fingerprint
}

// Summary is the repeats of one key since the previous summary.
type Summary[M any] struct {
	Key Key
	// Meta is what the key's first disclosure was given (who, where), for
	// writing the summary's event.
	Meta        M
	Repeats     int64
	FirstRepeat time.Time
	LastRepeat  time.Time
}

// Options configure a Ledger. M is what the caller keeps with each key for
// its summaries.
type Options[M any] struct {
	// MaxKeys bounds the ledger; 0 means DefaultMaxKeys.
	MaxKeys int
	// UnknownExpiry is how long a key whose token has no known expiry is
	// remembered; 0 means DefaultUnknownExpiry.
	UnknownExpiry time.Duration
	// Interval is how often the background loop flushes summaries; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Flush writes summaries (the loop calls it every Interval while the
	// ledger holds anything, Close once more). nil means no loop: the
	// caller takes Summaries itself.
	Flush func(ctx context.Context, sums []Summary[M])
	// Now is the clock of expiries and repeat times; nil means time.Now.
	Now func() time.Time
	// Logger hears that the ledger is full; nil means slog.Default().
	Logger *slog.Logger
	// Keys, if set, hears the number of keys held (Len) each time it
	// changes (metrics). It is called with the ledger locked and must not
	// block or call the ledger.
	Keys func(n int)
	// Fallback, if set, hears each disclosure that writes its own record
	// because the ledger is full (closed false) or closed (metrics). It
	// must not block.
	Fallback func(closed bool)
}

// Ledger remembers disclosed keys. The zero value is not usable; see New.
// Safe for concurrent use.
type Ledger[M any] struct {
	opt Options[M]

	mu      sync.Mutex
	entries map[Key]*entry[M]
	// retired holds the pending counts of entries dropped before a
	// summary took them.
	retired []Summary[M]
	closed  bool
	warned  bool
	// loopDone is the running loop's, closed when it ends; nil when no
	// loop runs.
	loopDone chan struct{}
	stop     chan struct{}
}

type entry[M any] struct {
	meta  M
	until time.Time
	// done is set while the first write is in flight and closed when it
	// ends (err set before); nil once the entry is settled.
	done chan struct{}
	err  error

	repeats     int64
	first, last time.Time
}

// New returns an empty ledger.
func New[M any](opt Options[M]) *Ledger[M] {
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = DefaultMaxKeys
	}
	if opt.UnknownExpiry <= 0 {
		opt.UnknownExpiry = DefaultUnknownExpiry
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Ledger[M]{opt: opt, entries: map[Key]*entry[M]{}, stop: make(chan struct{})}
}

// Disclose is called before a token goes out to the recipient of k. For a
// key not remembered it calls write (the durable record of the
// disclosure) and returns its error; the key is remembered only if write
// succeeded. meta is kept with the key for its summaries; expiry is the
// token's (zero: unknown). Callers of a key whose write is in flight wait
// for it and share its outcome. A remembered key is counted and nil
// returned at once.
//
// write runs with ctx's values but not its cancellation, since others may
// wait on it; if ctx ends first, Disclose returns ctx's error and the
// write goes on. When the ledger is full or closed, write is called with
// ctx for every disclosure.
func (l *Ledger[M]) Disclose(ctx context.Context, k Key, meta M, expiry time.Time, write func(context.Context) error) error {
	now := l.opt.Now()
	l.mu.Lock()
	e, ok := l.entries[k]
	if ok && e.done == nil {
		if now.Before(e.until) {
			e.count(now)
			l.mu.Unlock()
			return nil
		}
		// Lapsed and not yet swept: a new disclosure.
		l.retire(k, e)
		ok = false
	}
	if ok {
		done := e.done
		l.mu.Unlock()
		return l.await(ctx, k, e, done, false)
	}
	if l.closed || len(l.entries) >= l.opt.MaxKeys {
		closed := l.closed
		warn := !closed && !l.warned
		l.warned = l.warned || warn
		l.mu.Unlock()
		if l.opt.Fallback != nil {
			l.opt.Fallback(closed)
		}
		if warn {
			l.opt.Logger.WarnContext(ctx, "disclosure ledger full: a disclosure of a key it does not hold now waits for its own audit event every time",
				"max_keys", l.opt.MaxKeys)
		}
		return write(ctx)
	}
	until := expiry
	if until.IsZero() {
		until = now.Add(l.opt.UnknownExpiry)
	}
	e = &entry[M]{meta: meta, until: until, done: make(chan struct{})}
	l.entries[k] = e
	l.keysChanged()
	done := e.done
	l.mu.Unlock()
	go l.first(context.WithoutCancel(ctx), k, e, write)
	return l.await(ctx, k, e, done, true)
}

// Repeat counts a disclosure of k if k is remembered (its first write
// done and its token not expired) and reports true; otherwise it does
// nothing and reports false, and the caller goes on to Disclose. Disclose
// does the same first, so calling Repeat before it changes nothing but
// spares a caller preparing the write of a first disclosure (a closure
// allocated per answer) on the common path.
func (l *Ledger[M]) Repeat(k Key) bool {
	now := l.opt.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[k]; ok && e.done == nil && now.Before(e.until) {
		e.count(now)
		return true
	}
	return false
}

// first runs the write of a key's first disclosure and settles the entry.
func (l *Ledger[M]) first(ctx context.Context, k Key, e *entry[M], write func(context.Context) error) {
	err := write(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	e.err = err
	current := l.entries[k] == e
	if err != nil && current {
		delete(l.entries, k)
		l.keysChanged()
	}
	close(e.done)
	e.done = nil
	if err == nil && current {
		l.startLoop()
	}
}

// await waits for the first write of e; a caller other than the one that
// started it counts as a repeat once the write succeeded.
func (l *Ledger[M]) await(ctx context.Context, k Key, e *entry[M], done chan struct{}, leader bool) error {
	select {
	case <-done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if e.err != nil || leader {
		return e.err
	}
	now := l.opt.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.entries[k] == e {
		e.count(now)
	} else if !l.closed {
		// Dropped meanwhile (revoked, closed): the answer still counts.
		l.retired = append(l.retired, Summary[M]{Key: k, Meta: e.meta, Repeats: 1, FirstRepeat: now, LastRepeat: now})
		l.startLoop()
	}
	return nil
}

func (e *entry[M]) count(now time.Time) {
	if e.repeats == 0 {
		e.first = now
	}
	e.repeats++
	e.last = now
}

// retire drops k, keeping its pending counts for the next summary. l.mu
// is held.
func (l *Ledger[M]) retire(k Key, e *entry[M]) {
	if s, ok := e.take(k); ok {
		l.retired = append(l.retired, s)
		l.startLoop()
	}
	delete(l.entries, k)
	l.keysChanged()
}

// take returns the entry's pending counts and resets them.
func (e *entry[M]) take(k Key) (Summary[M], bool) {
	if e.repeats == 0 {
		return Summary[M]{}, false
	}
	s := Summary[M]{Key: k, Meta: e.meta, Repeats: e.repeats, FirstRepeat: e.first, LastRepeat: e.last}
	e.repeats, e.first, e.last = 0, time.Time{}, time.Time{}
	return s, true
}

// Summaries returns the repeats counted since the previous call, one per
// key with any, and drops the keys whose token has expired by now.
func (l *Ledger[M]) Summaries(now time.Time) []Summary[M] {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.retired
	l.retired = nil
	n := len(l.entries)
	for k, e := range l.entries {
		if e.done != nil {
			continue
		}
		if s, ok := e.take(k); ok {
			out = append(out, s)
		}
		if !now.Before(e.until) {
			delete(l.entries, k)
		}
	}
	if len(l.entries) != n {
		l.keysChanged()
	}
	return out
}

// ForgetGrant drops every key of a grant (it was revoked); their pending
// counts go into the next summary.
func (l *Ledger[M]) ForgetGrant(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, e := range l.entries {
		if k.GrantID == id {
			l.retire(k, e)
		}
	}
}

// keysChanged tells Options.Keys the number of keys held. l.mu is held.
func (l *Ledger[M]) keysChanged() {
	if l.opt.Keys != nil {
		l.opt.Keys(len(l.entries))
	}
}

// Len is the number of keys held, first writes in flight included.
func (l *Ledger[M]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// startLoop starts the background flush if there is a Flush and none
// runs. l.mu is held.
func (l *Ledger[M]) startLoop() {
	if l.loopDone != nil || l.closed || l.opt.Flush == nil {
		return
	}
	done := make(chan struct{})
	l.loopDone = done
	go l.loop(done)
}

// loop flushes summaries every Interval until the ledger is empty or
// closed.
func (l *Ledger[M]) loop(done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if sums := l.Summaries(l.opt.Now()); len(sums) > 0 {
			l.opt.Flush(context.Background(), sums)
		}
		l.mu.Lock()
		if len(l.entries) == 0 && len(l.retired) == 0 {
			l.loopDone = nil
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// Close stops the background loop and flushes every pending count,
// whatever its key's expiry; the ledger then forgets all keys and every
// later disclosure writes its own record. ctx bounds the wait for a flush
// in progress and is handed to the last one.
func (l *Ledger[M]) Close(ctx context.Context) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	running := l.loopDone
	close(l.stop)
	l.mu.Unlock()
	if running != nil {
		select {
		case <-running:
		case <-ctx.Done():
		}
	}
	l.mu.Lock()
	out := l.retired
	l.retired = nil
	for k, e := range l.entries {
		if s, ok := e.take(k); ok {
			out = append(out, s)
		}
	}
	clear(l.entries)
	l.keysChanged()
	l.mu.Unlock()
	if len(out) > 0 && l.opt.Flush != nil {
		l.opt.Flush(ctx, out)
	}
}
