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
	// DefaultRejectHold is how long a client-rejected verdict lasts after
	// the last refusal when no call of that grant succeeds meanwhile. One
	// refusal is enough to give it (it is the provider's definite answer,
	// not a blip), and it is held longer than a failure: the callers it
	// refused stop asking, so a success rarely comes to clear it, and it
	// must not read Ready minutes after the provider said no. It still
	// lapses, since the fix may be made at the provider, out of
	// tokenstore's sight; the next refusal gives it again.
	DefaultRejectHold = 15 * time.Minute
)

// TokenEndpointHealth remembers how this replica's recent calls to each
// provider's token endpoint went. Discovery, which the controllers re-check,
// says nothing about the token endpoint: a provider whose refreshes all fail
// with 500 behind a healthy discovery document would stay Ready. The
// broker reports every refresh-token grant's outcome here, and the status
// reconciler turns a failing verdict into Ready=False (TokenEndpointFailing).
//
// It also keeps, per grant (refresh_token for people's credentials,
// client_credentials for workloads' service tokens), whether the endpoint
// refused tokenstore's client itself (Rejected: invalid_client,
// unauthorized_client, ...): one refusal gives that verdict, which the
// status reconciler turns into Ready=False (ClientRejected), and a success
// of the same grant (Accepted) ends it.
//
// It is passive: it never calls a provider itself (a probe would need a
// refresh token, or would send a request providers answer in their own
// ways). So it knows only of the calls this replica made.
type TokenEndpointHealth struct {
	threshold int
	hold      time.Duration
	now       func() time.Time

	rejectHold time.Duration

	mu   sync.Mutex
	byID map[string]*endpointState
	// rejected: provider id -> grant -> the run of refusals of that grant.
	rejected map[string]map[string]*rejectionState
	// live: provider id -> the Version of its configuration in the
	// registry. A refusal answered to a call made with another (an
	// in-flight request that began before a fixed Secret was published)
	// says nothing about the live configuration.
	live map[string]string
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

// rejectionState is one run of refusals of tokenstore's client for one
// grant with one code; a success of that grant, a lapse or another code
// ends it.
type rejectionState struct {
	code        string
	count       int
	since, last time.Time
}

// ClientRejection is the verdict that a provider's token endpoint refuses
// tokenstore's client for Grant with Code (see RejectsClient): Count
// refusals since Since, the last at Last. It lapses at Until unless
// another call of the grant is refused. Code is one of a fixed list, safe
// to show.
type ClientRejection struct {
	Grant, Code        string
	Count              int
	Since, Last, Until time.Time
}

// HealthOptions tune a TokenEndpointHealth; zero values take the defaults.
type HealthOptions struct {
	FailThreshold int
	FailHold      time.Duration
	RejectHold    time.Duration
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
	if opt.RejectHold <= 0 {
		opt.RejectHold = DefaultRejectHold
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &TokenEndpointHealth{threshold: opt.FailThreshold, hold: opt.FailHold, rejectHold: opt.RejectHold, now: opt.Now,
		byID: map[string]*endpointState{}, rejected: map[string]map[string]*rejectionState{}, live: map[string]string{}, changes: make(chan string, 256)}
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

// Rejected records that provider id's token endpoint refused tokenstore's
// client for grant with code (RejectsClient was true), in a call made with
// the configuration of that Version. The first refusal of a run gives the
// verdict and is announced; so is a change of code. A refusal of a
// configuration the registry has since replaced is ignored.
func (h *TokenEndpointHealth) Rejected(id, version, grant, code string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if live, ok := h.live[id]; ok && live != version {
		return // the refused call used a configuration no longer served
	}
	now := h.now()
	byGrant := h.rejected[id]
	if byGrant == nil {
		byGrant = map[string]*rejectionState{}
		h.rejected[id] = byGrant
	}
	st := byGrant[grant]
	if st == nil || st.code != code || now.Sub(st.last) >= h.rejectHold {
		st = &rejectionState{code: code, since: now}
		byGrant[grant] = st
		h.notify(id)
	}
	st.count++
	st.last = now
}

// Accepted records that a call of grant at provider id's token endpoint
// was answered as a working client's is (a token, or a refusal of the
// token presented): a client-rejected verdict on that grant ends, and the
// change is announced. Other grants' verdicts stand: a client may be
// allowed refresh tokens and not client credentials.
func (h *TokenEndpointHealth) Accepted(id, grant string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.rejected[id][grant]; !ok {
		return
	}
	delete(h.rejected[id], grant)
	if len(h.rejected[id]) == 0 {
		delete(h.rejected, id)
	}
	h.notify(id)
}

// Rejection returns the client-rejected verdict on provider id: of the
// grants whose last refusal is less than RejectHold ago, the one refused
// last.
func (h *TokenEndpointHealth) Rejection(id string) (ClientRejection, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	var (
		out   ClientRejection
		found bool
	)
	for grant, st := range h.rejected[id] {
		until := st.last.Add(h.rejectHold)
		if !now.Before(until) || (found && !st.last.After(out.Last)) {
			continue
		}
		out = ClientRejection{Grant: grant, Code: st.code, Count: st.count, Since: st.since, Last: st.last, Until: until}
		found = true
	}
	return out, found
}

// Forget drops what is known of provider id (it was added, reconfigured
// or removed: Registry does it for every change). Dropping a verdict is
// announced like its end: the status reader may have looked, woken by the
// same Secret or spec change, before the registry got here, and no later
// success would say so (Accepted finds nothing left to end).
func (h *TokenEndpointHealth) Forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forget(id)
	delete(h.live, id)
}

// Configure is Forget for a provider the registry now serves with the
// configuration of version: refusals of calls made with any other one are
// ignored from now on.
func (h *TokenEndpointHealth) Configure(id, version string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forget(id)
	h.live[id] = version
}

func (h *TokenEndpointHealth) forget(id string) {
	st, failing := h.byID[id]
	_, rejected := h.rejected[id]
	delete(h.byID, id)
	delete(h.rejected, id)
	if rejected || (failing && st.failures >= h.threshold) {
		h.notify(id)
	}
}

// Changes returns the channel of provider ids whose verdict changed
// (failing, or a success after failing; client rejected, or accepted
// again). It is meant for one reader.
func (h *TokenEndpointHealth) Changes() <-chan string { return h.changes }

func (h *TokenEndpointHealth) notify(id string) {
	select {
	case h.changes <- id:
	default:
	}
}
