// Package refresher refreshes credentials ahead of time in the background:
// those whose access token is about to lapse (when a window is configured),
// and those whose refresh token would die unused at a provider with an idle
// timeout (Microsoft's 90 days, Keycloak's offline-session idle time).
//
// Every replica runs one. They share the work through the store: each pass
// claims a batch of due credentials with a short lease
// (store.ClaimCredentialsForRefresh, FOR UPDATE SKIP LOCKED on PostgreSQL),
// so two replicas never pick the same credential; and each refresh goes
// through the broker, which re-checks the row under its lock, so even a
// credential claimed twice (a lease that ran out mid-refresh) or refreshed by
// a request meanwhile is refreshed once.
package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
)

// EventExpiring is announced (ExpiringScanner) when a credential's refresh token
// has an absolute expiry that is near: only a new link extends it.
const EventExpiring = "credential.expiring"

// Options are what a Refresher is built from.
type Options struct {
	Store     store.Store
	Broker    *broker.Broker
	Providers providers.Reader
	// Metrics records progress; nil records none.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Interval between passes; 0 means 1 minute.
	Interval time.Duration
	// Window: access tokens lapsing within it are refreshed ahead; 0 turns
	// this off (idle keep-alive still runs).
	Window time.Duration
	// Expiring, when set, announces credential.expiring for the credentials
	// the refresher handles, sharing its memory of what was announced (and
	// its event ids) with the periodic scan, so one expiry is told once;
	// nil tells no one.
	Expiring *ExpiringScanner
	// Batch is how many credentials one claim takes; 0 means 50.
	Batch int
	// Lease is how long a claim keeps other replicas off; 0 means 5 minutes
	// (longer than a batch of provider calls takes).
	Lease time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Refresher runs passes until its context ends.
type Refresher struct {
	opt Options
	log *slog.Logger
}

// New checks the options.
func New(opt Options) (*Refresher, error) {
	if opt.Store == nil || opt.Broker == nil || opt.Providers == nil {
		return nil, errors.New("refresher: store, broker and providers are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Interval <= 0 {
		opt.Interval = time.Minute
	}
	if opt.Batch <= 0 {
		opt.Batch = 50
	}
	if opt.Lease <= 0 {
		opt.Lease = 5 * time.Minute
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Refresher{opt: opt, log: opt.Logger.With("component", "refresher")}, nil
}

// Run runs a pass every Interval until ctx ends. A refresh in flight when
// ctx ends is finished (the broker detaches it), so no rotated refresh
// token is left unsaved.
func (r *Refresher) Run(ctx context.Context) error {
	tick := time.NewTicker(r.opt.Interval)
	defer tick.Stop()
	for {
		if _, err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("refresher pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Stats counts what one pass did.
type Stats struct {
	Claimed, Refreshed, Fresh, NeedsReauth, Failed int
}

// maxBatchesPerProvider bounds one pass, so that a large backlog at one
// provider does not starve the others; the rest waits for the next pass.
const maxBatchesPerProvider = 20

// RunOnce claims and refreshes due credentials of every provider once.
func (r *Refresher) RunOnce(ctx context.Context) (Stats, error) {
	var st Stats
	var errs []error
	for _, p := range r.opt.Providers.List() {
		if ctx.Err() != nil {
			break
		}
		if err := r.provider(ctx, p, &st); err != nil {
			errs = append(errs, fmt.Errorf("provider %s: %w", p.ID, err))
		}
	}
	err := errors.Join(errs...)
	r.opt.Metrics.RefresherRun(err, r.opt.Now())
	if st.Claimed > 0 {
		r.log.Info("refresher pass", "claimed", st.Claimed, "refreshed", st.Refreshed, "fresh", st.Fresh,
			"needs_reauth", st.NeedsReauth, "failed", st.Failed)
	}
	return st, err
}

func (r *Refresher) provider(ctx context.Context, p *providers.Provider, st *Stats) error {
	for range maxBatchesPerProvider {
		now := r.opt.Now()
		claim := store.RefreshClaim{Provider: p.ID, Now: now, LeaseUntil: now.Add(r.opt.Lease), Limit: r.opt.Batch}
		if r.opt.Window > 0 {
			claim.ExpiringBefore = now.Add(r.opt.Window)
		}
		var idleSince time.Time
		if p.RefreshIdleTimeout > 0 {
			// Half the idle timeout: the refresh token is kept alive with a
			// wide margin for passes missed while replicas were down.
			idleSince = now.Add(-p.RefreshIdleTimeout / 2)
			claim.IdleBefore = idleSince
		}
		if claim.ExpiringBefore.IsZero() && claim.IdleBefore.IsZero() {
			return nil
		}
		batch, err := r.opt.Store.ClaimCredentialsForRefresh(ctx, claim)
		if err != nil {
			return fmt.Errorf("claiming due credentials: %w", err)
		}
		st.Claimed += len(batch)
		r.opt.Metrics.RefresherClaimed(p.ID, len(batch))
		for _, c := range batch {
			if ctx.Err() != nil {
				// Stopping: the unhandled rest of the batch is taken by
				// another replica once its lease runs out.
				return nil
			}
			stop := r.one(ctx, c, idleSince, st)
			if stop != nil {
				// The provider is unreachable: the rest of the batch would
				// time out one by one. Their leases run out and a later pass
				// (here or on another replica) takes them.
				return stop
			}
		}
		if len(batch) < r.opt.Batch {
			return nil
		}
	}
	return nil
}

// one refreshes one claimed credential. It returns an error only when the
// provider is unavailable or refuses tokenstore's client, to stop the
// provider's batch: every other credential of it would fail the same way.
func (r *Refresher) one(ctx context.Context, c store.Credential, idleSince time.Time, st *Stats) error {
	minValid := r.opt.Window
	refreshed, err := r.opt.Broker.RefreshAhead(ctx, c.UserID, c.Provider, minValid, idleSince)
	var (
		reauth   *broker.ReauthError
		down     *broker.UnavailableError
		rejected *providers.ClientRejectedError
	)
	switch {
	case err == nil && refreshed:
		st.Refreshed++
		r.opt.Metrics.RefresherResult(c.Provider, "refreshed")
	case err == nil:
		st.Fresh++
		r.opt.Metrics.RefresherResult(c.Provider, "fresh")
	case errors.As(err, &reauth), errors.Is(err, broker.ErrNotLinked):
		// The broker marked it and told the Notifier; or it was revoked.
		st.NeedsReauth++
		r.opt.Metrics.RefresherResult(c.Provider, "needs_reauth")
		return nil
	case errors.As(err, &down), errors.As(err, &rejected):
		st.Failed++
		r.opt.Metrics.RefresherResult(c.Provider, "error")
		return err
	default:
		st.Failed++
		r.opt.Metrics.RefresherResult(c.Provider, "error")
		r.log.Warn("refreshing ahead failed", "provider", c.Provider, "user", c.UserID, "error", err)
		return nil
	}
	if r.opt.Expiring != nil {
		r.opt.Expiring.Notify(ctx, c)
	}
	return nil
}
