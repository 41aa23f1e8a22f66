// Package kubeauth implements workload.Authenticator and workload.Directory
// with client-go: ServiceAccount tokens are verified by the API server's
// TokenReview API (audience enforced), and ServiceAccounts are looked up for
// grants.
//
// The API server is the verifier. This package parses a token's claims
// without checking the signature only to refuse obvious garbage early (not a
// JWT, expired, another audience) and to bound how long a verdict is cached:
// never beyond the token's own exp, and never beyond Options.CacheTTL, so a
// revoked token (its Pod, Secret or ServiceAccount deleted) stops working
// within CacheTTL.
//
// The RBAC this needs: create tokenreviews (authentication.k8s.io) and get
// serviceaccounts.
package kubeauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tokenstore/tokenstore/internal/workload"
)

// Defaults of Options.
const (
	// DefaultCacheTTL bounds how long an accepted token is believed without
	// asking the API server again. It is also the longest a revoked token
	// (deleted Pod or ServiceAccount) keeps working. A minute keeps a busy
	// workload at one TokenReview a minute while revocation takes effect
	// about as fast as a person would notice; Kubernetes' own webhook token
	// authenticator caches for two.
	DefaultCacheTTL = time.Minute
	// DefaultNegativeTTL is how long a refusal is remembered, so a workload
	// retrying a bad token in a loop does not turn into a TokenReview loop;
	// short, so a token that was refused because of a transient state is
	// soon tried again.
	DefaultNegativeTTL = 10 * time.Second
	// DefaultMaxEntries bounds the cache's memory (about 200 bytes an entry).
	DefaultMaxEntries = 50000
	// maxTokenSize: projected tokens are about 1 KB; anything far larger is
	// not one and is refused before it reaches the API server.
	maxTokenSize  = 16 << 10
	reviewTimeout = 10 * time.Second
)

// Options configure an Authenticator.
type Options struct {
	// Audience is tokenstore's audience: workloads' projected tokens must be
	// issued for it (serviceAccountToken.audience), and TokenReview is asked
	// to check it. Required.
	Audience string
	// CacheTTL overrides DefaultCacheTTL; NegativeTTL DefaultNegativeTTL;
	// negative values disable caching of that kind.
	CacheTTL    time.Duration
	NegativeTTL time.Duration
	// MaxEntries overrides DefaultMaxEntries.
	MaxEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator verifies ServiceAccount tokens through TokenReview and looks
// up ServiceAccounts. Safe for concurrent use.
//
// Its verdict cache is its own rather than k8s.io/apiserver's token cache
// (authentication/token/cache.New, which the API server's webhook token
// authenticator uses), because that cache cannot keep what callers of this
// one rely on: it caches a refusal only as (nil, false, nil), so the
// reason (token_rejected, not_service_account, wrong_audience) would be
// lost on every cached refusal, unless cacheErrs is set, which caches an
// unreachable API server too (a 503 for NegativeTTL after a blip); it has
// no renewal ahead of expiry (TestWorkloadReviewRenewedAhead: a workload
// calling steadily would wait for a TokenReview every CacheTTL); its clock
// is not injectable (newWithClock is unexported), so the expiry tests
// would have to sleep through CacheTTL; its two TTLs are fixed, where an
// entry here also lapses at the token's exp; its size is unbounded; and
// New registers its metrics in
// component-base's legacy registry, which tokenstore does not serve.
type Authenticator struct {
	opt    Options
	client kubernetes.Interface
	flight singleflight.Group

	mu    sync.Mutex
	cache map[[32]byte]entry
}

type entry struct {
	id      workload.Identity
	err     error // an *workload.AuthError for a cached refusal
	expires time.Time
}

var (
	_ workload.Authenticator = (*Authenticator)(nil)
	_ workload.Directory     = (*Authenticator)(nil)
)

// New returns an Authenticator talking to the API server of cfg.
func New(cfg *rest.Config, opt Options) (*Authenticator, error) {
	if cfg == nil {
		return nil, errors.New("kubeauth: a rest config is required")
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeauth: building the client: %w", err)
	}
	return NewForClient(cs, opt)
}

// NewForClient is New with a ready clientset.
func NewForClient(cs kubernetes.Interface, opt Options) (*Authenticator, error) {
	if opt.Audience == "" {
		return nil, errors.New("kubeauth: the audience is required")
	}
	if opt.CacheTTL == 0 {
		opt.CacheTTL = DefaultCacheTTL
	}
	if opt.NegativeTTL == 0 {
		opt.NegativeTTL = DefaultNegativeTTL
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = DefaultMaxEntries
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Authenticator{opt: opt, client: cs, cache: map[[32]byte]entry{}}, nil
}

// claims are read without verification, for early refusal and the cache
// bound only.
type claims struct {
	Exp float64  `json:"exp"`
	Aud audience `json:"aud"`
}

type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

func parseUnverified(token string) (claims, error) {
	var c claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return c, &workload.AuthError{Reason: workload.ReasonMalformed, Detail: "not a JWT (header.payload.signature)"}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, &workload.AuthError{Reason: workload.ReasonMalformed, Detail: "the JWT payload is not base64url"}
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, &workload.AuthError{Reason: workload.ReasonMalformed, Detail: "the JWT payload is not a JSON claims set"}
	}
	if c.Exp <= 0 {
		// Legacy Secret-based tokens never expire; tokenstore accepts only
		// bound, expiring (projected or TokenRequest) tokens.
		return c, &workload.AuthError{Reason: workload.ReasonMalformed, Detail: "the token has no exp claim; use a projected service account token"}
	}
	return c, nil
}

// Authenticate implements workload.Authenticator.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (workload.Identity, error) {
	if token == "" || len(token) > maxTokenSize {
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonMalformed, Detail: "empty or oversized token"}
	}
	now := a.opt.Now()
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	e, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(e.expires) {
		if a.renewDue(e, now) {
			a.renew(ctx, key, token, e.id.ExpiresAt)
		}
		return e.id, e.err
	}
	c, err := parseUnverified(token)
	if err != nil {
		return workload.Identity{}, err
	}
	exp := time.Unix(int64(c.Exp), 0)
	if !now.Before(exp) {
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonExpired, Detail: "the token expired at " + exp.UTC().Format(time.RFC3339)}
	}
	if !slices.Contains(c.Aud, a.opt.Audience) {
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonWrongAudience,
			Detail: fmt.Sprintf("the token's audience does not include %q; project the token with that audience", a.opt.Audience)}
	}
	// Concurrent first requests with one token make one TokenReview. The key
	// is the hash, so the token is not kept as a map key anywhere.
	v, err, _ := a.flight.Do(string(key[:]), func() (any, error) {
		// A caller that missed the cache just before an earlier flight
		// stored its verdict arrives here after that flight ended: look
		// again rather than ask the API server a second time.
		a.mu.Lock()
		e, ok := a.cache[key]
		a.mu.Unlock()
		if ok && a.opt.Now().Before(e.expires) {
			return e.id, e.err
		}
		return a.reviewAndStore(ctx, key, token, exp)
	})
	if err != nil {
		return workload.Identity{}, err
	}
	return v.(workload.Identity), nil
}

// reviewAndStore asks the API server and caches its verdict: an acceptance
// for at most CacheTTL (never past the token's exp), a refusal for
// NegativeTTL. Errors reaching the API server are not cached.
func (a *Authenticator) reviewAndStore(ctx context.Context, key [32]byte, token string, exp time.Time) (workload.Identity, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
	defer cancel()
	id, err := a.review(rctx, token)
	var ae *workload.AuthError
	now := a.opt.Now()
	switch {
	case err == nil:
		id.ExpiresAt = exp
		a.store(key, entry{id: id, expires: minTime(exp, now.Add(a.opt.CacheTTL))}, a.opt.CacheTTL > 0)
	case errors.As(err, &ae):
		a.store(key, entry{err: ae, expires: minTime(exp, now.Add(a.opt.NegativeTTL))}, a.opt.NegativeTTL > 0)
	}
	return id, err
}

// renewDue: a cached acceptance bounded by CacheTTL rather than by the
// token's own life is, in its last tenth of CacheTTL, still served but
// renewed by a background TokenReview, so a busy workload does not wait for
// a review every CacheTTL.
func (a *Authenticator) renewDue(e entry, now time.Time) bool {
	return e.err == nil && e.expires.Before(e.id.ExpiresAt) && !now.Before(e.expires.Add(-a.opt.CacheTTL/10))
}

// renew starts one background TokenReview for a cached acceptance (the
// flight, shared with first reviews of the token, runs it once however many
// callers ask; nobody waits for it). Its verdict replaces the entry: a token
// the API server now refuses (its pod or ServiceAccount deleted) is refused
// from then on, as it would be once the entry lapsed; if the API server
// cannot be reached the entry is kept until it lapses, as without renewal.
func (a *Authenticator) renew(ctx context.Context, key [32]byte, token string, exp time.Time) {
	a.flight.DoChan(string(key[:]), func() (any, error) {
		return a.reviewAndStore(ctx, key, token, exp)
	})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (a *Authenticator) store(key [32]byte, e entry, enabled bool) {
	if !enabled {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.opt.MaxEntries {
		// Drop what has expired; if that is not enough, start over. A
		// burst of distinct tokens costs TokenReviews, never memory.
		now := a.opt.Now()
		for k, v := range a.cache {
			if !now.Before(v.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= a.opt.MaxEntries {
			clear(a.cache)
		}
	}
	a.cache[key] = e
}

// review asks the API server. Its refusal messages are mapped to reasons;
// they do not contain the token.
func (a *Authenticator) review(ctx context.Context, token string) (workload.Identity, error) {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.opt.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return workload.Identity{}, &workload.UnavailableError{Err: fmt.Errorf("creating a TokenReview: %w", scrub(err))}
	}
	st := tr.Status
	if !st.Authenticated {
		msg := strings.ToLower(st.Error)
		switch {
		case strings.Contains(msg, "audience"):
			return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonWrongAudience, Detail: "the API server refused the token's audience"}
		case strings.Contains(msg, "expired"):
			return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonExpired, Detail: "the API server says the token expired"}
		}
		// Deleted ServiceAccount/Pod/Secret, another cluster's key, a
		// forged signature: the API server's message says which, but the
		// answer to the caller stays generic.
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonRejected, Detail: "the API server did not accept the token (revoked, forged or from another cluster)"}
	}
	// The API server must confirm our audience; an empty list would mean it
	// ignored the request's audiences.
	if !slices.Contains(st.Audiences, a.opt.Audience) {
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonWrongAudience, Detail: "the API server did not confirm tokenstore's audience"}
	}
	ns, name, ok := splitUsername(st.User.Username)
	if !ok {
		return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonNotServiceAccount, Detail: "the token does not belong to a service account"}
	}
	id := workload.Identity{Namespace: ns, ServiceAccount: name, UID: st.User.UID}
	if pods := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(pods) == 1 {
		id.Pod = pods[0]
	}
	return id, nil
}

// splitUsername reads system:serviceaccount:<namespace>:<name>.
func splitUsername(u string) (string, string, bool) {
	rest, ok := strings.CutPrefix(u, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return ns, name, true
}

// ServiceAccountUID implements workload.Directory.
func (a *Authenticator) ServiceAccountUID(ctx context.Context, namespace, name string) (string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	sa, err := a.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return string(sa.UID), true, nil
	case apierrors.IsNotFound(err):
		return "", false, nil
	}
	return "", false, fmt.Errorf("looking up service account %s/%s: %w", namespace, name, err)
}

// scrub drops the request body client-go may quote in some errors; the
// TokenReview request body holds the token.
func scrub(err error) error {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		s := se.Status()
		return fmt.Errorf("API server answered %d %s", s.Code, s.Reason)
	}
	return err
}
