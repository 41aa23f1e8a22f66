package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/store"
)

// IdentifiedNotifier is a Notifier that can be given the event id, so that
// every replica announcing the same fact sends the same id and receivers
// drop duplicates by it (webhooks.Sender implements it). A Notifier without
// it gets a fresh id per event.
type IdentifiedNotifier interface {
	CredentialEventID(ctx context.Context, id, event, userID, provider string, detail map[string]any)
}

// ExpiringEventID is the event id of credential.expiring for one credential
// and one refresh-token expiry: the same on every replica, and new when a
// re-link brings a new expiry.
func ExpiringEventID(credentialID int64, refreshExpiresAt time.Time) string {
	return EventExpiring + "/" + strconv.FormatInt(credentialID, 10) + "/" + strconv.FormatInt(refreshExpiresAt.Unix(), 10)
}

// ExpiringOptions configure an ExpiringScanner.
type ExpiringOptions struct {
	Store store.Store
	// Notifier hears credential.expiring; required.
	Notifier broker.Notifier
	Logger   *slog.Logger
	// Warning: refresh tokens whose absolute expiry is this close are
	// announced; 0 means 7 days.
	Warning time.Duration
	// Batch is how many credentials one query reads; 0 means 500.
	Batch int
	Now   func() time.Time
}

// ExpiringScanner announces credential.expiring once per credential and
// refresh-token expiry: from its periodic scan of the store, and for
// credentials the refresher handles. What it announced is remembered in
// memory (per replica); the event id is deterministic, so receivers drop the
// copies other replicas send.
type ExpiringScanner struct {
	opt ExpiringOptions
	log *slog.Logger

	mu   sync.Mutex
	sent map[int64]int64 // credential id → refresh expiry (unix) announced
}

// NewExpiringScanner checks the options.
func NewExpiringScanner(opt ExpiringOptions) (*ExpiringScanner, error) {
	if opt.Store == nil || opt.Notifier == nil {
		return nil, errors.New("refresher: the expiring scan needs a store and a notifier")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Warning <= 0 {
		opt.Warning = 7 * 24 * time.Hour
	}
	if opt.Batch <= 0 {
		opt.Batch = 500
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &ExpiringScanner{opt: opt, log: opt.Logger.With("component", "expiring-scan"), sent: map[int64]int64{}}, nil
}

// Warning is how close an expiry must be to be announced.
func (s *ExpiringScanner) Warning() time.Duration { return s.opt.Warning }

// ScanOnce walks the credentials whose refresh token expires within Warning
// and announces those not announced yet; it returns how many it announced.
// Memory of credentials no longer in the list (re-linked, deleted, marked
// for re-authorization) is dropped after a complete walk.
func (s *ExpiringScanner) ScanOnce(ctx context.Context) (int, error) {
	before := s.opt.Now().Add(s.opt.Warning)
	seen := map[int64]bool{}
	sent := 0
	var after int64
	for {
		batch, err := s.opt.Store.ListCredentialsRefreshExpiringBefore(ctx, before, after, s.opt.Batch)
		if err != nil {
			return sent, fmt.Errorf("listing expiring credentials: %w", err)
		}
		for _, c := range batch {
			after = c.ID
			seen[c.ID] = true
			if s.Notify(ctx, c) {
				sent++
			}
		}
		if len(batch) < s.opt.Batch {
			break
		}
	}
	s.mu.Lock()
	for id := range s.sent {
		if !seen[id] {
			delete(s.sent, id)
		}
	}
	s.mu.Unlock()
	if sent > 0 {
		s.log.Info("announced expiring credentials", "count", sent)
	}
	return sent, nil
}

// Notify announces c when its refresh token expires within Warning and this
// (credential, expiry) has not been announced by this replica; it reports
// whether it did.
func (s *ExpiringScanner) Notify(ctx context.Context, c store.Credential) bool {
	if c.RefreshExpiresAt == nil || c.RefreshExpiresAt.Sub(s.opt.Now()) >= s.opt.Warning {
		return false
	}
	exp := c.RefreshExpiresAt.Unix()
	s.mu.Lock()
	if prev, ok := s.sent[c.ID]; ok && prev == exp {
		s.mu.Unlock()
		return false
	}
	s.sent[c.ID] = exp
	s.mu.Unlock()
	detail := map[string]any{"refresh_expires_at": c.RefreshExpiresAt.UTC().Format(time.RFC3339)}
	if n, ok := s.opt.Notifier.(IdentifiedNotifier); ok {
		n.CredentialEventID(ctx, ExpiringEventID(c.ID, *c.RefreshExpiresAt), EventExpiring, c.UserID, c.Provider, detail)
	} else {
		s.opt.Notifier.CredentialEvent(ctx, EventExpiring, c.UserID, c.Provider, detail)
	}
	return true
}
