package delegation

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/tokenstore/tokenstore/internal/observability/audit"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// ActionGrantUse is the audit action of a person's token value handed to a
// workload under a grant (GrantUse).
const ActionGrantUse = "grant.use"

// GrantUseOptions configure a GrantUse.
type GrantUseOptions struct {
	// Store takes the summaries, in batches of their own.
	Store store.Store
	// Append writes one event through the requests' group-commit writer
	// and returns once it is stored (audit.Writer.Append).
	Append func(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error)
	// Interval is how often repeats are summarised; 0 means
	// DefaultInterval.
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	// ObserveBatch, Keys and Fallback, if set, hear the summary writes,
	// the ledger's size and its fallbacks (metrics).
	ObserveBatch func(n int, err error)
	Keys         func(n int)
	Fallback     func(closed bool)
}

// GrantUse keeps the record of what workloads were handed under grants: a
// person's token value goes to a workload only once its disclosure to that
// recipient (grant, ServiceAccount uid, pod) is on record, as a durable
// grant.use event written before the answer; repeats of a value already
// disclosed are counted by the ledger and written as periodic summaries.
// So a person can see which workload took their token, which token
// lifetime, when and how often.
type GrantUse struct {
	opt    GrantUseOptions
	log    *slog.Logger
	ledger *Ledger[recipient]
}

// recipient is what the ledger keeps with a key for its summaries: whose
// token went to whom, at which provider.
type recipient struct {
	userID, provider, actor, serviceAccount string
}

// NewGrantUse starts the record (and its summary loop; see Close).
func NewGrantUse(opt GrantUseOptions) *GrantUse {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	g := &GrantUse{opt: opt, log: opt.Logger}
	g.ledger = New(Options[recipient]{Interval: opt.Interval, Now: opt.Now, Logger: opt.Logger,
		Flush: g.writeSummaries, Keys: opt.Keys, Fallback: opt.Fallback})
	return g
}

// Record puts the disclosure of token (expiring at expiry, zero when
// unknown) to workload wid under decision d on record, and returns once it
// is: the first time for this key, a grant.use event waited for; a repeat
// only adds to the next summary. An error means the token must not go out.
// Decisions without a grant (a workload's service token, a person's own
// token) record nothing.
func (g *GrantUse) Record(ctx context.Context, d Decision, wid *workload.Identity, provider, token string, expiry time.Time) error {
	if d.Grant == nil || wid == nil {
		return nil
	}
	k := Key{GrantID: d.Grant.ID, ServiceAccountUID: wid.UID, Pod: wid.Pod, Token: FingerprintOf(token)}
	if g.ledger.Repeat(k) {
		return nil
	}
	who := recipient{userID: d.UserID, provider: provider, actor: d.Actor, serviceAccount: d.ServiceAccount()}
	return g.ledger.Disclose(ctx, k, who, expiry, func(ctx context.Context) error {
		detail := useDetail(k.GrantID, who.serviceAccount, k.Pod)
		if !expiry.IsZero() {
			detail["token_expires_at"] = expiry.UTC().Format(time.RFC3339)
		}
		raw, _ := json.Marshal(detail)
		_, err := g.opt.Append(ctx, store.AuditEvent{Time: g.opt.Now().UTC(), UserID: who.userID, Actor: who.actor,
			Action: ActionGrantUse, Provider: who.provider, Detail: raw})
		if err != nil && ctx.Err() == nil {
			g.log.ErrorContext(ctx, "writing an audit event failed", "action", ActionGrantUse, "provider", who.provider, "user", who.userID, "error", err)
		}
		return err
	})
}

// ForgetGrant drops the keys of a revoked grant (their pending counts go
// into the next summary).
func (g *GrantUse) ForgetGrant(id int64) { g.ledger.ForgetGrant(id) }

// Keys is the number of token values on record (the ledger's keys).
func (g *GrantUse) Keys() int { return g.ledger.Len() }

// Close writes the last summaries and stops the loop (waiting until ctx
// ends at most).
func (g *GrantUse) Close(ctx context.Context) { g.ledger.Close(ctx) }

// useDetail is the detail every grant.use event starts with.
func useDetail(grantID int64, serviceAccount, pod string) map[string]any {
	d := map[string]any{"grant_id": grantID, "service_account": serviceAccount}
	if pod != "" {
		d["pod"] = pod
	}
	return d
}

// writeSummaries writes one grant.use event per key answered again since
// the previous summary: how many times, first and last. Nobody waits on
// them, so they are stored as batches of their own (AppendAuditBatch,
// audit.DefaultMaxBatch at a time) rather than through the requests'
// group-commit writer; a failure is logged once for the whole summary (the
// counts are lost, never the record of a disclosure, which was written
// before its first answer).
func (g *GrantUse) writeSummaries(ctx context.Context, sums []Summary[recipient]) {
	now := g.opt.Now().UTC()
	events := make([]store.AuditEvent, 0, len(sums))
	for _, sm := range sums {
		detail := useDetail(sm.Key.GrantID, sm.Meta.serviceAccount, sm.Key.Pod)
		detail["repeats"] = sm.Repeats
		detail["first_repeat_at"] = sm.FirstRepeat.UTC().Format(time.RFC3339)
		detail["last_repeat_at"] = sm.LastRepeat.UTC().Format(time.RFC3339)
		d, _ := json.Marshal(detail)
		events = append(events, store.AuditEvent{Time: now, UserID: sm.Meta.userID, Actor: sm.Meta.actor, Action: ActionGrantUse, Provider: sm.Meta.provider, Detail: d})
	}
	var (
		failed   int
		firstErr error
	)
	for batch := range slices.Chunk(events, audit.DefaultMaxBatch) {
		wctx, cancel := context.WithTimeout(ctx, audit.DefaultWriteTimeout)
		_, err := g.opt.Store.AppendAuditBatch(wctx, batch)
		cancel()
		if g.opt.ObserveBatch != nil {
			g.opt.ObserveBatch(len(batch), err) // as the writer reports its writes
		}
		if err != nil {
			if failed == 0 {
				firstErr = err
			}
			failed += len(batch)
		}
	}
	if failed > 0 {
		g.log.Error("writing grant.use summaries failed", "events", failed, "of", len(sums), "error", firstErr)
	}
}
