package providers

import (
	"sync"
	"time"
)

// Defaults of TokenEndpointHealth.
const (
	// DefaultFailThreshold consecutive failed calls to a token endpoint
	// make it failing: one failure is a blip, not an outage.
	DefaultFailThreshold = 3
	// DefaultFailHold is how long a failing verdict lasts after the last
	// failure when no call succeeds meanwhile. Without traffic nothing
	// would ever clear it; discovery keeps being re-checked on its own.
	DefaultFailHold = 2 * time.Minute
)

// TokenEndpointHealth remembers how this replica's recent calls to each
// provider's token endpoint went. Discovery, which the controllers re-check,
// says nothing about the token endpoint: a provider whose refreshes all fail
// with 500 behind a healthy discovery document would stay Ready. The
// broker reports every refresh-token grant's outcome here, and the status
// reconciler turns a failing verdict into Ready=False (TokenEndpointFailing).
//
// It is passive: it never calls a provider itself (a probe would need a
// refresh token, or would send a request providers answer in their own
// ways). So it knows only of the calls this replica made.
type TokenEndpointHealth struct {
	threshold int
	hold      time.Duration
	now       func() time.Time

	mu   sync.Mutex
	byID map[string]*endpointState
	// changes carries the ids whose verdict changed. Sends never block:
	// with no reader (a replica that is not the leader) or a full buffer
	// the change is dropped, and the reader's own periodic re-checks, or
	// the next change, catch up.
	changes chan string
}

// endpointState counts one run of consecutive failures; a success or a
// lapse ends it. It is failing (and was announced) once failures reaches
// the threshold.
type endpointState struct {
	failures    int       // consecutive failed calls
	firstFailed time.Time // first of them
	lastFailed  time.Time
	last        string // what the last failure was (never a token)
}

// EndpointFailure is a failing verdict: Failures consecutive calls failed
// since Since; Reason is the last failure, in words safe to show (no
// token, no secret, no response body). The verdict lapses at Until unless
// another call fails.
type EndpointFailure struct {
	Failures     int
	Since, Until time.Time
	Reason       string
}

// HealthOptions tune a TokenEndpointHealth; zero values take the defaults.
type HealthOptions struct {
	FailThreshold int
	FailHold      time.Duration
	Now           func() time.Time
}

// NewTokenEndpointHealth returns a tracker with no history.
func NewTokenEndpointHealth(opt HealthOptions) *TokenEndpointHealth {
	if opt.FailThreshold <= 0 {
		opt.FailThreshold = DefaultFailThreshold
	}
	if opt.FailHold <= 0 {
		opt.FailHold = DefaultFailHold
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &TokenEndpointHealth{threshold: opt.FailThreshold, hold: opt.FailHold, now: opt.Now,
		byID: map[string]*endpointState{}, changes: make(chan string, 256)}
}

// Observe records one call to provider id's token endpoint. reason is
// empty when the endpoint answered as a working one does (a token, or a
// refusal of the grant such as invalid_grant); otherwise it says what
// failed (an answer of 5xx or 429, a client refused, a timeout, a refused
// connection) and must not contain a token or secret.
func (h *TokenEndpointHealth) Observe(id, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.byID[id]
	if reason == "" {
		if st == nil {
			return
		}
		delete(h.byID, id)
		if st.failures >= h.threshold {
			h.notify(id) // failing -> working
		}
		return
	}
	now := h.now()
	if st == nil || now.Sub(st.lastFailed) >= h.hold {
		// A failure long after the last one starts a new count (the
		// verdict of the old one has lapsed).
		st = &endpointState{firstFailed: now}
		h.byID[id] = st
	}
	st.failures++
	st.lastFailed = now
	st.last = reason
	if st.failures == h.threshold {
		h.notify(id) // working -> failing, once per run
	}
}

// Failing returns the verdict on provider id: failing when its last
// FailThreshold or more calls failed and the last of them is less than
// FailHold ago.
func (h *TokenEndpointHealth) Failing(id string) (EndpointFailure, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.byID[id]
	if st == nil || st.failures < h.threshold {
		return EndpointFailure{}, false
	}
	until := st.lastFailed.Add(h.hold)
	if !h.now().Before(until) {
		return EndpointFailure{}, false
	}
	return EndpointFailure{Failures: st.failures, Since: st.firstFailed, Until: until, Reason: st.last}, true
}

// Forget drops what is known of provider id (it was added, reconfigured
// or removed: Registry does it for every change).
func (h *TokenEndpointHealth) Forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.byID, id)
}

// Changes returns the channel of provider ids whose verdict changed
// (failing, or a success after failing). It is meant for one reader.
func (h *TokenEndpointHealth) Changes() <-chan string { return h.changes }

func (h *TokenEndpointHealth) notify(id string) {
	select {
	case h.changes <- id:
	default:
	}
}
