// Package storetest is the conformance suite of the store contract: every
// backend runs the same subtests, so PostgreSQL (production) and SQLite (dev,
// single node) cannot drift apart in behaviour.
//
// A backend's test calls Run with a constructor that returns a new, empty,
// migrated store for each subtest (and closes it in t.Cleanup). Subtests run
// one after the other: the backends share one database server per package.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
)

// NewStore returns a fresh, empty store for one (sub)test.
type NewStore func(t *testing.T) store.Store

// Run runs every conformance subtest against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"CredentialGetMissing", testCredentialGetMissing},
		{"CredentialUpsertGet", testCredentialUpsertGet},
		{"CredentialEmptyValues", testCredentialEmptyValues},
		{"CredentialUpsertReplaces", testCredentialUpsertReplaces},
		{"CredentialList", testCredentialList},
		{"CredentialUpdate", testCredentialUpdate},
		{"CredentialUpdateMissing", testCredentialUpdateMissing},
		{"CredentialUpdateFnError", testCredentialUpdateFnError},
		{"CredentialUpdateInvalidState", testCredentialUpdateInvalidState},
		{"CredentialUpdateAudited", testCredentialUpdateAudited},
		{"CredentialUpdateUnchanged", testCredentialUpdateUnchanged},
		{"CredentialUpdateNoLostUpdate", testCredentialUpdateNoLostUpdate},
		{"CredentialUpdateBlocksReplace", testCredentialUpdateBlocksReplace},
		{"CredentialDelete", testCredentialDelete},
		{"CredentialKeyRotationWalk", testCredentialKeyRotationWalk},
		{"CredentialReplaceCiphertexts", testCredentialReplaceCiphertexts},
		{"CredentialReplaceCiphertextsConflict", testCredentialReplaceCiphertextsConflict},
		{"CredentialReplaceCiphertextsMissing", testCredentialReplaceCiphertextsMissing},
		{"CredentialErrorsHoldNoSecrets", testCredentialErrorsHoldNoSecrets},
		{"Session", testSession},
		{"SessionExpiry", testSessionExpiry},
		{"SessionTouch", testSessionTouch},
		{"LinkState", testLinkState},
		{"LinkStateExpired", testLinkStateExpired},
		{"LinkStateConsumeOnce", testLinkStateConsumeOnce},
		{"LinkStateDeleteExpired", testLinkStateDeleteExpired},
		{"Grant", testGrant},
		{"GrantFindUsable", testGrantFindUsable},
		{"GrantServiceAccountUID", testGrantServiceAccountUID},
		{"GrantRevoke", testGrantRevoke},
		{"GrantListByServiceAccount", testGrantListByServiceAccount},
		{"SessionDeleteByUser", testSessionDeleteByUser},
		{"Audit", testAudit},
		{"AuditPrune", testAuditPrune},
		{"AuditBatch", testAuditBatch},
		{"AuditBatchEmpty", testAuditBatchEmpty},
		{"AuditBatchCanceled", testAuditBatchCanceled},
		{"CredentialCount", testCredentialCount},
		{"CredentialClaimForRefresh", testCredentialClaimForRefresh},
		{"CredentialClaimConcurrent", testCredentialClaimConcurrent},
		{"CredentialRefreshExpiring", testCredentialRefreshExpiring},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// --- helpers -------------------------------------------------------------

// base is an awkward instant: not UTC and with nanoseconds, so that every
// test also checks that the store returns UTC truncated to microseconds.
var base = time.Date(2031, 5, 17, 9, 30, 15, 123456789, time.FixedZone("UTC+2", 2*3600))

// norm is what a store must return for t.
func norm(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func normp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	n := norm(*t)
	return &n
}

func ptr[T any](v T) *T { return &v }

// checkTime fails unless got is in UTC and has no sub-microsecond part: the
// contract both backends share so that values compare equal.
func checkTime(t *testing.T, what string, got time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", what, got.Location())
	}
	if got.Nanosecond()%1000 != 0 {
		t.Errorf("%s: %v has sub-microsecond precision", what, got)
	}
}

func checkTimep(t *testing.T, what string, got *time.Time) {
	t.Helper()
	if got != nil {
		checkTime(t, what, *got)
	}
}

// between fails unless got is within [lo, hi] at microsecond precision.
func between(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	checkTime(t, what, got)
	if got.Before(lo.Truncate(time.Microsecond)) || got.After(hi) {
		t.Errorf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}

func newCredential(user, provider string) store.Credential {
	return store.Credential{
		UserID:           user,
		Provider:         provider,
		Subject:          "sub-" + user,
		KeyID:            "k1",
		RefreshToken:     []byte("rt-ciphertext-" + user + "-" + provider),
		AccessToken:      []byte("at-ciphertext-" + user + "-" + provider),
		TokenType:        "Bearer",
		Scopes:           []string{"openid", "email", "offline_access"},
		AccessExpiresAt:  ptr(base.Add(time.Hour)),
		RefreshExpiresAt: ptr(base.Add(30 * 24 * time.Hour)),
		LastRefreshedAt:  ptr(base),
		LastUsedAt:       ptr(base.Add(time.Minute)),
	}
}

// credView is a Credential in a form reflect.DeepEqual compares the way the
// contract means: times by instant, empty and nil slices alike.
type credView struct {
	ID                                int64
	UserID, Provider, Subject, KeyID  string
	RefreshToken, AccessToken         string
	TokenType                         string
	Scopes                            string
	AccessExpiresAt, RefreshExpiresAt string
	State                             store.CredentialState
	StateReason                       string
	CreatedAt, UpdatedAt              string
	LastRefreshedAt, LastUsedAt       string
	Version                           int64
}

func tstr(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func tpstr(t *time.Time) string {
	if t == nil {
		return "<nil>"
	}
	return tstr(*t)
}

func view(c store.Credential) credView {
	return credView{
		ID: c.ID, UserID: c.UserID, Provider: c.Provider, Subject: c.Subject, KeyID: c.KeyID,
		RefreshToken: string(c.RefreshToken), AccessToken: string(c.AccessToken),
		TokenType: c.TokenType, Scopes: fmt.Sprintf("%q", c.Scopes),
		AccessExpiresAt: tpstr(c.AccessExpiresAt), RefreshExpiresAt: tpstr(c.RefreshExpiresAt),
		State: c.State, StateReason: c.StateReason,
		CreatedAt: tstr(c.CreatedAt), UpdatedAt: tstr(c.UpdatedAt),
		LastRefreshedAt: tpstr(c.LastRefreshedAt), LastUsedAt: tpstr(c.LastUsedAt),
		Version: c.Version,
	}
}

// sameCredential fails with a field-by-field diff unless got equals want.
func sameCredential(t *testing.T, want, got store.Credential) {
	t.Helper()
	w, g := view(want), view(got)
	if reflect.DeepEqual(w, g) {
		return
	}
	wv, gv := reflect.ValueOf(w), reflect.ValueOf(g)
	var diffs []string
	for i := range wv.NumField() {
		if !reflect.DeepEqual(wv.Field(i).Interface(), gv.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", wv.Type().Field(i).Name, gv.Field(i), wv.Field(i)))
		}
	}
	t.Errorf("credential differs:\n\t%s", strings.Join(diffs, "\n\t"))
}

// checkCredentialTimes checks every time the store returned.
func checkCredentialTimes(t *testing.T, c store.Credential) {
	t.Helper()
	checkTime(t, "CreatedAt", c.CreatedAt)
	checkTime(t, "UpdatedAt", c.UpdatedAt)
	checkTimep(t, "AccessExpiresAt", c.AccessExpiresAt)
	checkTimep(t, "RefreshExpiresAt", c.RefreshExpiresAt)
	checkTimep(t, "LastRefreshedAt", c.LastRefreshedAt)
	checkTimep(t, "LastUsedAt", c.LastUsedAt)
}

// expected is what a store returns after UpsertCredential(in): in with
// normalized times and the store-set fields taken from got.
func expected(in, got store.Credential) store.Credential {
	want := in
	want.ID, want.CreatedAt, want.UpdatedAt, want.Version = got.ID, got.CreatedAt, got.UpdatedAt, got.Version
	want.State, want.StateReason = store.StateActive, ""
	want.AccessExpiresAt = normp(in.AccessExpiresAt)
	want.RefreshExpiresAt = normp(in.RefreshExpiresAt)
	want.LastRefreshedAt = normp(in.LastRefreshedAt)
	want.LastUsedAt = normp(in.LastUsedAt)
	return want
}

func mustUpsert(t *testing.T, s store.Store, c store.Credential) store.Credential {
	t.Helper()
	got, err := s.UpsertCredential(t.Context(), c)
	if err != nil {
		t.Fatalf("UpsertCredential(%s, %s): %v", c.UserID, c.Provider, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

// --- credentials ---------------------------------------------------------

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCredentialGetMissing(t *testing.T, s store.Store) {
	_, err := s.GetCredential(t.Context(), "alice", "github")
	wantErr(t, "GetCredential of a missing credential", err, store.ErrNotFound)
	mustUpsert(t, s, newCredential("alice", "github"))
	_, err = s.GetCredential(t.Context(), "alice", "gitlab")
	wantErr(t, "GetCredential at another provider", err, store.ErrNotFound)
	_, err = s.GetCredential(t.Context(), "bob", "github")
	wantErr(t, "GetCredential of another user", err, store.ErrNotFound)
}

func testCredentialUpsertGet(t *testing.T, s store.Store) {
	in := newCredential("alice", "github")
	// Fields the store owns are ignored on input.
	in.ID, in.Version, in.State, in.StateReason = 999, 42, store.StateNeedsReauth, "ignored"
	in.CreatedAt, in.UpdatedAt = base.Add(-time.Hour), base.Add(-time.Hour)

	before := time.Now()
	got := mustUpsert(t, s, in)
	after := time.Now()

	if got.ID <= 0 {
		t.Errorf("ID = %d, want > 0", got.ID)
	}
	if got.Version != 1 {
		t.Errorf("Version = %d, want 1", got.Version)
	}
	between(t, "CreatedAt", got.CreatedAt, before, after)
	if !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("UpdatedAt %v != CreatedAt %v on insert", got.UpdatedAt, got.CreatedAt)
	}
	checkCredentialTimes(t, got)
	sameCredential(t, expected(in, got), got)

	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	checkCredentialTimes(t, read)
	sameCredential(t, got, read)
	// Stricter than sameCredential: the values must be identical, so that
	// callers may compare with == on time.Time and reflect.DeepEqual.
	if !reflect.DeepEqual(got, read) {
		t.Errorf("GetCredential returned %+v, Upsert returned %+v", read, got)
	}
}

func testCredentialEmptyValues(t *testing.T, s store.Store) {
	in := store.Credential{
		UserID: "alice", Provider: "github", KeyID: "k1",
		RefreshToken: []byte{0, 1, 2, 255}, // binary ciphertexts survive
	}
	got := mustUpsert(t, s, in)
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	for _, c := range []store.Credential{got, read} {
		if !bytes.Equal(c.RefreshToken, in.RefreshToken) {
			t.Errorf("RefreshToken = %x, want %x", c.RefreshToken, in.RefreshToken)
		}
		// Empty comes back as nil on every backend, so callers can test len
		// or nil alike and backends compare equal.
		if c.AccessToken != nil || c.Scopes != nil {
			t.Errorf("AccessToken = %#v, Scopes = %#v, want nil, nil", c.AccessToken, c.Scopes)
		}
		if c.AccessExpiresAt != nil || c.RefreshExpiresAt != nil || c.LastRefreshedAt != nil || c.LastUsedAt != nil {
			t.Errorf("optional times not nil: %+v", c)
		}
		if c.Subject != "" || c.TokenType != "" || c.StateReason != "" || c.State != store.StateActive {
			t.Errorf("unexpected defaults: %+v", c)
		}
	}
	// Explicitly empty (non-nil) slices are the same as nil.
	in.AccessToken, in.Scopes = []byte{}, []string{}
	got = mustUpsert(t, s, in)
	if got.AccessToken != nil || got.Scopes != nil {
		t.Errorf("AccessToken = %#v, Scopes = %#v, want nil, nil", got.AccessToken, got.Scopes)
	}
}

func testCredentialUpsertReplaces(t *testing.T, s store.Store) {
	first := mustUpsert(t, s, newCredential("alice", "github"))
	// Mark it as refused, as the broker does on invalid_grant.
	if _, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.State, c.StateReason = store.StateNeedsReauth, "invalid_grant"
		return store.Write(), nil
	}); err != nil {
		t.Fatalf("UpdateCredential: %v", err)
	}

	// The person links the account again: new tokens, fewer fields.
	relink := store.Credential{
		UserID: "alice", Provider: "github", Subject: "sub-2", KeyID: "k2",
		RefreshToken: []byte("rt-2"), TokenType: "bearer", Scopes: []string{"repo"},
		AccessExpiresAt: ptr(base.Add(2 * time.Hour)),
	}
	time.Sleep(2 * time.Millisecond) // so UpdatedAt can move
	got := mustUpsert(t, s, relink)

	if got.ID != first.ID {
		t.Errorf("ID changed on re-link: %d -> %d", first.ID, got.ID)
	}
	if !got.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("CreatedAt changed on re-link: %v -> %v", first.CreatedAt, got.CreatedAt)
	}
	if !got.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("UpdatedAt did not move: %v -> %v", first.UpdatedAt, got.UpdatedAt)
	}
	// Version keeps counting (1 upsert, 1 update, 1 upsert): a rotation that
	// read version 1 or 2 must not overwrite the re-linked tokens.
	if got.Version != 3 {
		t.Errorf("Version = %d, want 3", got.Version)
	}
	sameCredential(t, expected(relink, got), got)

	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	sameCredential(t, got, read)
}

func testCredentialList(t *testing.T, s store.Store) {
	for _, p := range []string{"zeta", "github", "gitlab", "azure"} {
		mustUpsert(t, s, newCredential("alice", p))
	}
	mustUpsert(t, s, newCredential("bob", "github"))

	list, err := s.ListCredentials(t.Context(), "alice")
	if err != nil {
		t.Fatalf("ListCredentials: %v", err)
	}
	var providers []string
	for _, c := range list {
		if c.UserID != "alice" {
			t.Errorf("ListCredentials(alice) returned %s's credential", c.UserID)
		}
		checkCredentialTimes(t, c)
		providers = append(providers, c.Provider)
	}
	if want := []string{"azure", "github", "gitlab", "zeta"}; !slices.Equal(providers, want) {
		t.Errorf("providers = %v, want %v (ordered by provider)", providers, want)
	}
	// Every listed row is the full row.
	one, err := s.GetCredential(t.Context(), "alice", "gitlab")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, one, list[2])

	none, err := s.ListCredentials(t.Context(), "carol")
	if err != nil || len(none) != 0 {
		t.Errorf("ListCredentials(carol) = %v, %v; want empty, nil", none, err)
	}
}

func testCredentialUpdate(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	time.Sleep(2 * time.Millisecond)

	var seen store.Credential
	newExpiry := base.Add(3 * time.Hour)
	before := time.Now()
	res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		seen = *c
		c.RefreshToken = []byte("rt-rotated")
		c.AccessToken = nil
		c.AccessExpiresAt = &newExpiry
		c.RefreshExpiresAt = nil
		c.LastRefreshedAt = ptr(base.Add(time.Second))
		c.LastUsedAt = ptr(base.Add(2 * time.Second))
		c.Scopes = []string{"openid"}
		c.TokenType = "DPoP"
		c.Subject = "sub-new"
		c.KeyID = "k9"
		c.State, c.StateReason = store.StateNeedsReauth, "invalid_grant"
		// Identity and bookkeeping are the store's; fn cannot move them.
		c.ID, c.UserID, c.Provider = 12345, "mallory", "elsewhere"
		c.CreatedAt, c.UpdatedAt, c.Version = base, base, 1000
		return store.Write(), nil
	})
	after := time.Now()
	if err != nil {
		t.Fatalf("UpdateCredential: %v", err)
	}
	got := res.Credential
	if !res.Written || res.Audit != store.AuditNone || res.AuditErr != nil {
		t.Errorf("Write outcome: Written %v, Audit %v (%v); want true, none", res.Written, res.Audit, res.AuditErr)
	}
	sameCredential(t, orig, seen) // fn saw the current row

	want := orig
	want.RefreshToken, want.AccessToken = []byte("rt-rotated"), nil
	want.AccessExpiresAt, want.RefreshExpiresAt = normp(&newExpiry), nil
	want.LastRefreshedAt = normp(ptr(base.Add(time.Second)))
	want.LastUsedAt = normp(ptr(base.Add(2 * time.Second)))
	want.Scopes, want.TokenType, want.Subject, want.KeyID = []string{"openid"}, "DPoP", "sub-new", "k9"
	want.State, want.StateReason = store.StateNeedsReauth, "invalid_grant"
	want.Version = orig.Version + 1
	want.UpdatedAt = got.UpdatedAt
	between(t, "UpdatedAt", got.UpdatedAt, before, after)
	sameCredential(t, want, got)
	checkCredentialTimes(t, got)

	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, want, read)
	if _, err := s.GetCredential(t.Context(), "mallory", "elsewhere"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("fn moved the credential to another key: %v", err)
	}

	// A Write of an unchanged row is still a write.
	got2, err := s.UpdateCredential(t.Context(), "alice", "github", func(*store.Credential) (store.Outcome, error) { return store.Write(), nil })
	if err != nil {
		t.Fatal(err)
	}
	if got2.Credential.Version != want.Version+1 || !got2.Written {
		t.Errorf("Version = %d (written %v) after a no-op update, want %d", got2.Credential.Version, got2.Written, want.Version+1)
	}
}

func testCredentialUpdateMissing(t *testing.T, s store.Store) {
	called := false
	_, err := s.UpdateCredential(t.Context(), "alice", "github", func(*store.Credential) (store.Outcome, error) {
		called = true
		return store.Write(), nil
	})
	wantErr(t, "UpdateCredential of a missing credential", err, store.ErrNotFound)
	if called {
		t.Error("fn was called for a missing credential")
	}
}

type fnError struct{ code string }

func (e *fnError) Error() string { return "provider said " + e.code }

func testCredentialUpdateFnError(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	sentinel := &fnError{code: "temporarily_unavailable"}
	_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("must not be saved")
		c.State = store.StateNeedsReauth
		// The error wins over the outcome.
		return store.Write(), sentinel
	})
	// Returned as is: not wrapped, so callers can switch on it directly.
	if err != error(sentinel) {
		t.Errorf("UpdateCredential returned %#v, want fn's error unchanged", err)
	}
	var fe *fnError
	if !errors.As(err, &fe) || fe.code != "temporarily_unavailable" {
		t.Errorf("errors.As failed on %v", err)
	}
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, orig, read) // rolled back: nothing written, Version unchanged

	// The row is not left locked.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.UpdateCredential(ctx, "alice", "github", func(*store.Credential) (store.Outcome, error) { return store.Write(), nil }); err != nil {
		t.Fatalf("UpdateCredential after a failed one: %v", err)
	}
}

func testCredentialUpdateInvalidState(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.State = "bogus"
		return store.Write(), nil
	})
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateCredential with State %q: error %v, want a validation error", "bogus", err)
	}
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, orig, read)
}

// testCredentialUpdateAudited: the event of a WriteAudited outcome is
// stored with the update; none with a Write; neither when fn fails, the
// update is refused or the outcome is Unchanged.
func testCredentialUpdateAudited(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	ev := store.AuditEvent{Time: base, UserID: "alice", Actor: "user:alice", Action: "credential.refresh",
		Provider: "github", Detail: []byte(`{"rotated":true}`)}
	res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("rt-rotated")
		return store.WriteAudited(ev), nil
	})
	if err != nil || res.AuditErr != nil {
		t.Fatalf("UpdateCredential (audited): %v, audit: %v", err, res.AuditErr)
	}
	if !res.Written || res.Audit != store.AuditWritten {
		t.Errorf("WriteAudited outcome: Written %v, Audit %v; want true, written", res.Written, res.Audit)
	}
	got := res.Credential
	if got.Version != orig.Version+1 || string(got.RefreshToken) != "rt-rotated" {
		t.Errorf("UpdateCredential (audited) returned version %d, refresh token %q; want %d, %q",
			got.Version, got.RefreshToken, orig.Version+1, "rt-rotated")
	}
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, got, read)
	events, err := s.ListAudit(t.Context(), "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("%d audit events after one audited update, want 1: %+v", len(events), events)
	}
	ev.ID = events[0].ID
	sameAudit(t, ev, events[0])

	// No event: a plain update. The stamp is the store's when Time is zero.
	if res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		return store.Write(), nil
	}); err != nil || res.AuditErr != nil || res.Audit != store.AuditNone {
		t.Fatalf("UpdateCredential without an event: %v, audit: %v (%v)", err, res.Audit, res.AuditErr)
	}
	before := time.Now()
	if res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		return store.WriteAudited(store.AuditEvent{UserID: "alice", Actor: "system:test", Action: "credential.touch"}), nil
	}); err != nil || res.AuditErr != nil || res.Audit != store.AuditWritten {
		t.Fatalf("UpdateCredential (audited): %v, audit: %v (%v)", err, res.Audit, res.AuditErr)
	}
	after := time.Now()

	// fn's error, an invalid state, or an Unchanged outcome: nothing
	// written, no event.
	sentinel := &fnError{code: "temporarily_unavailable"}
	if _, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("must not be saved")
		return store.WriteAudited(store.AuditEvent{UserID: "alice", Actor: "user:alice", Action: "must.not.be.saved"}), sentinel
	}); err != error(sentinel) {
		t.Errorf("UpdateCredential (audited) returned %#v, want fn's error unchanged", err)
	}
	if _, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.State = "bogus"
		return store.WriteAudited(store.AuditEvent{UserID: "alice", Actor: "user:alice", Action: "must.not.be.saved"}), nil
	}); err == nil {
		t.Error("UpdateCredential (audited) with an invalid state: no error")
	}
	if res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("must not be saved")
		return store.Unchanged(), nil
	}); err != nil || res.Written || res.Audit != store.AuditNone {
		t.Errorf("UpdateCredential (unchanged): %v, written %v, audit %v; want nil, false, none", err, res.Written, res.Audit)
	}
	if _, err := s.UpdateCredential(t.Context(), "nobody", "github", func(c *store.Credential) (store.Outcome, error) {
		t.Error("fn was called for a missing credential")
		return store.Write(), nil
	}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateCredential (audited) of a missing credential: %v, want ErrNotFound", err)
	}
	final, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	if final.Version != orig.Version+3 || string(final.RefreshToken) != "rt-rotated" {
		t.Errorf("after the refused updates: version %d, refresh token %q; want %d, %q",
			final.Version, final.RefreshToken, orig.Version+3, "rt-rotated")
	}
	events, err = s.ListAudit(t.Context(), "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].Action != "credential.touch" || events[1].Action != "credential.refresh" {
		t.Fatalf("audit events %+v, want credential.touch then credential.refresh", events)
	}
	between(t, "stamped audit Time", events[0].Time, before, after)

	// The row is not left locked.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.UpdateCredential(ctx, "alice", "github", func(*store.Credential) (store.Outcome, error) { return store.Write(), nil }); err != nil {
		t.Fatalf("UpdateCredential after the refused ones: %v", err)
	}
}

// testCredentialUpdateUnchanged: an Unchanged outcome writes nothing (what
// fn did to *c is discarded, Version stays), returns the row as read under
// the lock, and lets the lock go, so the next updater runs at once.
func testCredentialUpdateUnchanged(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	var seen store.Credential
	res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		seen = *c
		c.RefreshToken = []byte("must not be saved")
		c.State, c.StateReason = store.StateNeedsReauth, "invalid_grant"
		c.Version = 1000
		return store.Unchanged(), nil
	})
	if err != nil {
		t.Fatalf("UpdateCredential (unchanged): %v", err)
	}
	sameCredential(t, orig, seen)
	if res.Written || res.Audit != store.AuditNone || res.AuditErr != nil {
		t.Errorf("Unchanged outcome: Written %v, Audit %v (%v); want false, none", res.Written, res.Audit, res.AuditErr)
	}
	sameCredential(t, orig, res.Credential) // the row as read, not as fn left it
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, orig, read)
	if events, err := s.ListAudit(t.Context(), "alice", 0, 10); err != nil || len(events) != 0 {
		t.Errorf("ListAudit = %+v, %v after an Unchanged outcome; want none", events, err)
	}
	// The zero Outcome is Unchanged.
	if res, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.TokenType = "must not be saved"
		return store.Outcome{}, nil
	}); err != nil || res.Written || res.Credential.Version != orig.Version {
		t.Errorf("zero Outcome: %v, written %v, version %d; want nil, false, %d", err, res.Written, res.Credential.Version, orig.Version)
	}

	// The row is not left locked.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	res, err = s.UpdateCredential(ctx, "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("rt-after")
		return store.Write(), nil
	})
	if err != nil {
		t.Fatalf("UpdateCredential after an unchanged one: %v", err)
	}
	if !res.Written || res.Credential.Version != orig.Version+1 || string(res.Credential.RefreshToken) != "rt-after" {
		t.Errorf("after an Unchanged outcome: written %v, version %d, refresh token %q; want true, %d, %q",
			res.Written, res.Credential.Version, res.Credential.RefreshToken, orig.Version+1, "rt-after")
	}
}

// testCredentialUpdateNoLostUpdate is the refresh-token guarantee: updaters
// of one credential run fn strictly one after the other, each seeing the
// previous one's result, even though fn is slow (a network round trip).
func testCredentialUpdateNoLostUpdate(t *testing.T, s store.Store) {
	const n = 8
	c := newCredential("alice", "github")
	c.TokenType = "0" // the counter
	orig := mustUpsert(t, s, c)

	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				defer inside.Add(-1)
				v, err := strconv.Atoi(c.TokenType)
				if err != nil {
					return store.Unchanged(), err
				}
				time.Sleep(10 * time.Millisecond)
				c.TokenType = strconv.Itoa(v + 1)
				c.RefreshToken = []byte("rt-" + c.TokenType)
				return store.Write(), nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("UpdateCredential: %v", err)
		}
	}
	got, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	if got.TokenType != strconv.Itoa(n) {
		t.Errorf("counter = %s after %d concurrent increments: lost updates", got.TokenType, n)
	}
	if string(got.RefreshToken) != "rt-"+strconv.Itoa(n) {
		t.Errorf("RefreshToken = %q, want the last writer's", got.RefreshToken)
	}
	if got.Version != orig.Version+n {
		t.Errorf("Version = %d, want %d", got.Version, orig.Version+n)
	}
	if o := overlaps.Load(); o != 0 {
		t.Errorf("fn ran concurrently %d times for one credential", o)
	}
}

// testCredentialUpdateBlocksReplace checks that a key rotation racing a
// refresh cannot write the old tokens back: it waits for the lock and then
// fails its compare-and-swap.
func testCredentialUpdateBlocksReplace(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	inFn := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
			close(inFn)
			<-release
			c.RefreshToken = []byte("rt-rotated-by-refresh")
			return store.Write(), nil
		})
		done <- err
	}()
	<-inFn
	replaced := make(chan error, 1)
	go func() {
		c := orig
		c.KeyID, c.RefreshToken = "k2", []byte("old-rt-under-k2")
		_, err := s.ReplaceCredentialCiphertexts(t.Context(), c)
		replaced <- err
	}()
	// Give the replace time to reach the database; it must not finish first.
	select {
	case err := <-replaced:
		close(release)
		<-done
		t.Fatalf("ReplaceCredentialCiphertexts finished (%v) while UpdateCredential held the row", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("UpdateCredential: %v", err)
	}
	wantErr(t, "ReplaceCredentialCiphertexts after a concurrent update", <-replaced, store.ErrConflict)
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	if string(read.RefreshToken) != "rt-rotated-by-refresh" || read.KeyID != "k1" {
		t.Errorf("row = %q under %s, want the refresh's token under k1", read.RefreshToken, read.KeyID)
	}
}

func testCredentialDelete(t *testing.T, s store.Store) {
	mustUpsert(t, s, newCredential("alice", "github"))
	mustUpsert(t, s, newCredential("alice", "gitlab"))
	if err := s.DeleteCredential(t.Context(), "alice", "github"); err != nil {
		t.Fatalf("DeleteCredential: %v", err)
	}
	_, err := s.GetCredential(t.Context(), "alice", "github")
	wantErr(t, "GetCredential after delete", err, store.ErrNotFound)
	wantErr(t, "second DeleteCredential", s.DeleteCredential(t.Context(), "alice", "github"), store.ErrNotFound)
	if _, err := s.GetCredential(t.Context(), "alice", "gitlab"); err != nil {
		t.Errorf("the other credential went too: %v", err)
	}
	// Linking again after a delete makes a new row.
	again := mustUpsert(t, s, newCredential("alice", "github"))
	if again.Version != 1 {
		t.Errorf("Version = %d for a new row, want 1", again.Version)
	}
}

func testCredentialKeyRotationWalk(t *testing.T, s store.Store) {
	var oldIDs []int64
	for i := range 7 {
		c := newCredential("user"+strconv.Itoa(i), "github")
		if i%3 == 0 {
			c.KeyID = "new"
		} else {
			c.KeyID = "old" + strconv.Itoa(i%2)
		}
		got := mustUpsert(t, s, c)
		if c.KeyID != "new" {
			oldIDs = append(oldIDs, got.ID)
		}
	}
	n, err := s.CountCredentialsNotUnderKey(t.Context(), "new")
	if err != nil {
		t.Fatalf("CountCredentialsNotUnderKey: %v", err)
	}
	if n != int64(len(oldIDs)) {
		t.Errorf("CountCredentialsNotUnderKey = %d, want %d", n, len(oldIDs))
	}

	var walked []int64
	after := int64(0)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("walk does not end")
		}
		batch, err := s.ListCredentialsNotUnderKey(t.Context(), "new", after, 2)
		if err != nil {
			t.Fatalf("ListCredentialsNotUnderKey: %v", err)
		}
		if len(batch) > 2 {
			t.Fatalf("batch of %d, limit 2", len(batch))
		}
		if len(batch) == 0 {
			break
		}
		for _, c := range batch {
			if c.KeyID == "new" {
				t.Errorf("row %d is under the new key", c.ID)
			}
			checkCredentialTimes(t, c)
			walked = append(walked, c.ID)
		}
		after = batch[len(batch)-1].ID
	}
	if !slices.Equal(walked, oldIDs) {
		t.Errorf("walked %v, want %v in id order", walked, oldIDs)
	}

	none, err := s.ListCredentialsNotUnderKey(t.Context(), "new", 0, 0)
	if err != nil || len(none) != 0 {
		t.Errorf("limit 0: %v, %v; want empty", none, err)
	}
	if n, err := s.CountCredentialsNotUnderKey(t.Context(), "nobody-uses-this"); err != nil || n != 7 {
		t.Errorf("Count under an unused key = %d, %v; want 7", n, err)
	}
}

func testCredentialReplaceCiphertexts(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	time.Sleep(2 * time.Millisecond)
	in := orig
	in.KeyID, in.RefreshToken, in.AccessToken = "k2", []byte("rt-under-k2"), []byte("at-under-k2")
	// Everything else in the argument is ignored: only ciphertexts move.
	in.Subject, in.Scopes, in.State, in.TokenType = "x", []string{"x"}, store.StateNeedsReauth, "x"
	in.AccessExpiresAt, in.LastUsedAt = nil, nil
	got, err := s.ReplaceCredentialCiphertexts(t.Context(), in)
	if err != nil {
		t.Fatalf("ReplaceCredentialCiphertexts: %v", err)
	}
	want := orig
	want.KeyID, want.RefreshToken, want.AccessToken = "k2", []byte("rt-under-k2"), []byte("at-under-k2")
	want.Version = orig.Version + 1
	want.UpdatedAt = got.UpdatedAt
	if got.UpdatedAt.Before(orig.UpdatedAt) {
		t.Errorf("UpdatedAt went back: %v -> %v", orig.UpdatedAt, got.UpdatedAt)
	}
	sameCredential(t, want, got)
	checkCredentialTimes(t, got)
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, want, read)

	// An empty access token (nothing cached) stays empty.
	in = read
	in.KeyID, in.AccessToken = "k3", nil
	got, err = s.ReplaceCredentialCiphertexts(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != nil || got.KeyID != "k3" {
		t.Errorf("AccessToken = %q under %s, want nil under k3", got.AccessToken, got.KeyID)
	}
}

func testCredentialReplaceCiphertextsConflict(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	// A refresh lands between the rotation's read and its write.
	refreshed, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("rt-refreshed")
		return store.Write(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stale := orig
	stale.KeyID, stale.RefreshToken = "k2", []byte("stale-rt-under-k2")
	_, err = s.ReplaceCredentialCiphertexts(t.Context(), stale)
	wantErr(t, "ReplaceCredentialCiphertexts with a stale version", err, store.ErrConflict)
	read, err := s.GetCredential(t.Context(), "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	sameCredential(t, refreshed.Credential, read)

	// A re-link (upsert) also invalidates what the rotation read.
	cur := read
	mustUpsert(t, s, newCredential("alice", "github"))
	cur.KeyID = "k2"
	_, err = s.ReplaceCredentialCiphertexts(t.Context(), cur)
	wantErr(t, "ReplaceCredentialCiphertexts after a re-link", err, store.ErrConflict)

	// The version must belong to that row: a row is not addressed by
	// (user, provider) with another row's id.
	other := mustUpsert(t, s, newCredential("bob", "github"))
	mixed := other
	mixed.UserID = "alice"
	mixed.KeyID = "k2"
	if _, err := s.ReplaceCredentialCiphertexts(t.Context(), mixed); err == nil {
		t.Error("ReplaceCredentialCiphertexts wrote through a mismatched id and owner")
	}
}

func testCredentialReplaceCiphertextsMissing(t *testing.T, s store.Store) {
	orig := mustUpsert(t, s, newCredential("alice", "github"))
	if err := s.DeleteCredential(t.Context(), "alice", "github"); err != nil {
		t.Fatal(err)
	}
	orig.KeyID = "k2"
	_, err := s.ReplaceCredentialCiphertexts(t.Context(), orig)
	wantErr(t, "ReplaceCredentialCiphertexts of a deleted row", err, store.ErrNotFound)
}

// testCredentialErrorsHoldNoSecrets provokes the errors a backend can return
// around a credential and checks none quotes a ciphertext.
func testCredentialErrorsHoldNoSecrets(t *testing.T, s store.Store) {
	const secret = "SECRET-CIPHERTEXT-MARKER"
	c := newCredential("alice", "github")
	c.RefreshToken, c.AccessToken = []byte(secret+"-rt"), []byte(secret+"-at")
	orig := mustUpsert(t, s, c)

	var errs []error
	_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.State = "bogus"
		return store.Write(), nil
	})
	errs = append(errs, err)
	stale := orig
	stale.Version = 0
	_, err = s.ReplaceCredentialCiphertexts(t.Context(), stale)
	errs = append(errs, err)
	stale.ID = -1
	_, err = s.ReplaceCredentialCiphertexts(t.Context(), stale)
	errs = append(errs, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = s.UpsertCredential(ctx, c)
	errs = append(errs, err)
	_, err = s.UpdateCredential(ctx, "alice", "github", func(*store.Credential) (store.Outcome, error) { return store.Write(), nil })
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), secret) {
			t.Errorf("case %d: error quotes a ciphertext: %v", i, err)
		}
	}
}

// --- sessions ------------------------------------------------------------

func newSession(id string) store.Session {
	return store.Session{
		ID:         id,
		UserID:     "alice",
		Claims:     []byte(`{"sub":"alice","email":"alice@example.com","name":"Alice"}`),
		CreatedAt:  base,
		ExpiresAt:  base.Add(8 * time.Hour),
		LastSeenAt: base.Add(time.Minute),
	}
}

func sameSession(t *testing.T, want, got store.Session) {
	t.Helper()
	checkTime(t, "CreatedAt", got.CreatedAt)
	checkTime(t, "ExpiresAt", got.ExpiresAt)
	checkTime(t, "LastSeenAt", got.LastSeenAt)
	want.CreatedAt, want.ExpiresAt, want.LastSeenAt = norm(want.CreatedAt), norm(want.ExpiresAt), norm(want.LastSeenAt)
	if len(want.Claims) == 0 {
		want.Claims = nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("session = %+v\n\twant %+v", got, want)
	}
}

func testSession(t *testing.T, s store.Store) {
	in := newSession("h1")
	if err := s.CreateSession(t.Context(), in); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	got, err := s.GetSession(t.Context(), "h1", base)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	sameSession(t, in, got)

	dup := newSession("h1")
	dup.UserID = "mallory"
	wantErr(t, "CreateSession with a taken id", s.CreateSession(t.Context(), dup), store.ErrAlreadyExists)
	got, _ = s.GetSession(t.Context(), "h1", base)
	if got.UserID != "alice" {
		t.Errorf("a failed create changed the session's owner to %q", got.UserID)
	}

	_, err = s.GetSession(t.Context(), "h2", base)
	wantErr(t, "GetSession of a missing session", err, store.ErrNotFound)

	empty := newSession("h3")
	empty.Claims = nil
	if err := s.CreateSession(t.Context(), empty); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetSession(t.Context(), "h3", base)
	if err != nil {
		t.Fatal(err)
	}
	sameSession(t, empty, got)

	if err := s.DeleteSession(t.Context(), "h1"); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	_, err = s.GetSession(t.Context(), "h1", base)
	wantErr(t, "GetSession after delete", err, store.ErrNotFound)
	if err := s.DeleteSession(t.Context(), "h1"); err != nil {
		t.Errorf("DeleteSession of a missing session: %v, want nil", err)
	}
}

func testSessionExpiry(t *testing.T, s store.Store) {
	in := newSession("h1")
	if err := s.CreateSession(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	exp := in.ExpiresAt
	if _, err := s.GetSession(t.Context(), "h1", exp.Add(-time.Microsecond)); err != nil {
		t.Errorf("GetSession just before expiry: %v", err)
	}
	// Expired at ExpiresAt itself, as Grant.Usable: valid while now < ExpiresAt.
	_, err := s.GetSession(t.Context(), "h1", exp)
	wantErr(t, "GetSession at ExpiresAt", err, store.ErrNotFound)
	_, err = s.GetSession(t.Context(), "h1", exp.Add(time.Hour))
	wantErr(t, "GetSession after expiry", err, store.ErrNotFound)

	for i, d := range []time.Duration{-2 * time.Hour, -time.Hour, time.Hour} {
		x := newSession("e" + strconv.Itoa(i))
		x.ExpiresAt = base.Add(d)
		if err := s.CreateSession(t.Context(), x); err != nil {
			t.Fatal(err)
		}
	}
	// base: e0 and e1 expired; at base itself nothing else.
	n, err := s.DeleteExpiredSessions(t.Context(), base)
	if err != nil || n != 2 {
		t.Errorf("DeleteExpiredSessions = %d, %v; want 2, nil", n, err)
	}
	n, err = s.DeleteExpiredSessions(t.Context(), base)
	if err != nil || n != 0 {
		t.Errorf("second DeleteExpiredSessions = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.GetSession(t.Context(), "e2", base); err != nil {
		t.Errorf("unexpired session deleted: %v", err)
	}
	if _, err := s.GetSession(t.Context(), "h1", base); err != nil {
		t.Errorf("unexpired session deleted: %v", err)
	}
	// Exactly at expiry counts as expired, as in GetSession.
	n, err = s.DeleteExpiredSessions(t.Context(), base.Add(time.Hour))
	if err != nil || n != 1 {
		t.Errorf("DeleteExpiredSessions at e2's expiry = %d, %v; want 1, nil", n, err)
	}
}

func testSessionTouch(t *testing.T, s store.Store) {
	in := newSession("h1")
	if err := s.CreateSession(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	seen, exp := base.Add(2*time.Hour+time.Nanosecond), base.Add(10*time.Hour+time.Nanosecond)
	if err := s.TouchSession(t.Context(), "h1", seen, exp); err != nil {
		t.Fatalf("TouchSession: %v", err)
	}
	got, err := s.GetSession(t.Context(), "h1", base)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.LastSeenAt, want.ExpiresAt = seen, exp
	sameSession(t, want, got)
	wantErr(t, "TouchSession of a missing session", s.TouchSession(t.Context(), "nope", seen, exp), store.ErrNotFound)
}

// --- link states ---------------------------------------------------------

func newLinkState(state string) store.LinkState {
	return store.LinkState{
		State:        state,
		SessionID:    "h1",
		Provider:     "github",
		CodeVerifier: []byte("encrypted-verifier"),
		Nonce:        "n-0S6_WzA2Mj",
		ReturnURL:    "https://app.example.com/after?x=1",
		CreatedAt:    base,
		ExpiresAt:    base.Add(10 * time.Minute),
	}
}

func sameLinkState(t *testing.T, want, got store.LinkState) {
	t.Helper()
	checkTime(t, "CreatedAt", got.CreatedAt)
	checkTime(t, "ExpiresAt", got.ExpiresAt)
	want.CreatedAt, want.ExpiresAt = norm(want.CreatedAt), norm(want.ExpiresAt)
	if len(want.CodeVerifier) == 0 {
		want.CodeVerifier = nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("link state = %+v\n\twant %+v", got, want)
	}
}

func testLinkState(t *testing.T, s store.Store) {
	in := newLinkState("st1")
	if err := s.CreateLinkState(t.Context(), in); err != nil {
		t.Fatalf("CreateLinkState: %v", err)
	}
	wantErr(t, "CreateLinkState with a taken state", s.CreateLinkState(t.Context(), newLinkState("st1")), store.ErrAlreadyExists)

	got, err := s.ConsumeLinkState(t.Context(), "st1", base)
	if err != nil {
		t.Fatalf("ConsumeLinkState: %v", err)
	}
	sameLinkState(t, in, got)
	_, err = s.ConsumeLinkState(t.Context(), "st1", base)
	wantErr(t, "second ConsumeLinkState", err, store.ErrNotFound)
	_, err = s.ConsumeLinkState(t.Context(), "never-issued", base)
	wantErr(t, "ConsumeLinkState of an unknown state", err, store.ErrNotFound)

	bare := store.LinkState{State: "st2", SessionID: "h1", Provider: "github", CreatedAt: base, ExpiresAt: base.Add(time.Minute)}
	if err := s.CreateLinkState(t.Context(), bare); err != nil {
		t.Fatal(err)
	}
	got, err = s.ConsumeLinkState(t.Context(), "st2", base)
	if err != nil {
		t.Fatal(err)
	}
	sameLinkState(t, bare, got)
}

func testLinkStateExpired(t *testing.T, s store.Store) {
	in := newLinkState("st1")
	if err := s.CreateLinkState(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	_, err := s.ConsumeLinkState(t.Context(), "st1", in.ExpiresAt)
	wantErr(t, "ConsumeLinkState at expiry", err, store.ErrNotFound)
	// It is gone, not kept for a later "now" that would accept it.
	_, err = s.ConsumeLinkState(t.Context(), "st1", base)
	wantErr(t, "ConsumeLinkState after an expired attempt", err, store.ErrNotFound)

	in = newLinkState("st2")
	if err := s.CreateLinkState(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeLinkState(t.Context(), "st2", in.ExpiresAt.Add(-time.Microsecond)); err != nil {
		t.Errorf("ConsumeLinkState just before expiry: %v", err)
	}
}

func testLinkStateConsumeOnce(t *testing.T, s store.Store) {
	if err := s.CreateLinkState(t.Context(), newLinkState("st1")); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wins, notFound atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := s.ConsumeLinkState(t.Context(), "st1", base)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, store.ErrNotFound):
				notFound.Add(1)
			default:
				t.Errorf("ConsumeLinkState: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if wins.Load() != 1 || notFound.Load() != n-1 {
		t.Errorf("%d callers got the state and %d were refused; want 1 and %d", wins.Load(), notFound.Load(), n-1)
	}
}

func testLinkStateDeleteExpired(t *testing.T, s store.Store) {
	for i, d := range []time.Duration{-time.Minute, 0, time.Minute} {
		l := newLinkState("st" + strconv.Itoa(i))
		l.ExpiresAt = base.Add(d)
		if err := s.CreateLinkState(t.Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteExpiredLinkStates(t.Context(), base)
	if err != nil || n != 2 {
		t.Errorf("DeleteExpiredLinkStates = %d, %v; want 2, nil", n, err)
	}
	if _, err := s.ConsumeLinkState(t.Context(), "st2", base); err != nil {
		t.Errorf("unexpired link state deleted: %v", err)
	}
}

// --- grants --------------------------------------------------------------

func newGrant(user, provider, sa string) store.Grant {
	return store.Grant{
		UserID: user, Provider: provider,
		ServiceAccountNamespace: "team-a", ServiceAccountName: sa,
	}
}

func sameGrant(t *testing.T, want, got store.Grant) {
	t.Helper()
	checkTime(t, "CreatedAt", got.CreatedAt)
	checkTimep(t, "ExpiresAt", got.ExpiresAt)
	checkTimep(t, "RevokedAt", got.RevokedAt)
	want.CreatedAt = norm(want.CreatedAt)
	want.ExpiresAt, want.RevokedAt = normp(want.ExpiresAt), normp(want.RevokedAt)
	if !reflect.DeepEqual(want, got) {
		t.Errorf("grant = %+v\n\twant %+v", got, want)
	}
}

func mustGrant(t *testing.T, s store.Store, g store.Grant) store.Grant {
	t.Helper()
	got, err := s.CreateGrant(t.Context(), g)
	if err != nil {
		t.Fatalf("CreateGrant: %v", err)
	}
	return got
}

func testGrant(t *testing.T, s store.Store) {
	in := newGrant("alice", "github", "ci")
	in.ExpiresAt = ptr(base.Add(24 * time.Hour))
	in.ServiceAccountUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
	in.ID, in.CreatedAt = 999, base.Add(-time.Hour) // the store's to set
	before := time.Now()
	got := mustGrant(t, s, in)
	after := time.Now()
	if got.ID <= 0 || got.ID == 999 {
		t.Errorf("ID = %d, want one the store chose", got.ID)
	}
	between(t, "CreatedAt", got.CreatedAt, before, after)
	want := in
	want.ID, want.CreatedAt = got.ID, got.CreatedAt
	sameGrant(t, want, got)

	read, err := s.GetGrant(t.Context(), got.ID)
	if err != nil {
		t.Fatalf("GetGrant: %v", err)
	}
	sameGrant(t, got, read)
	_, err = s.GetGrant(t.Context(), got.ID+1000)
	wantErr(t, "GetGrant of a missing grant", err, store.ErrNotFound)

	g2 := mustGrant(t, s, newGrant("alice", "gitlab", "deploy"))
	g3 := mustGrant(t, s, newGrant("bob", "github", "ci"))
	if err := s.RevokeGrant(t.Context(), "alice", got.ID, base); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListGrants(t.Context(), "alice")
	if err != nil {
		t.Fatalf("ListGrants: %v", err)
	}
	var ids []int64
	for _, g := range list {
		ids = append(ids, g.ID)
	}
	// Newest first, revoked ones included, nobody else's.
	if want := []int64{g2.ID, got.ID}; !slices.Equal(ids, want) {
		t.Errorf("ListGrants(alice) ids = %v, want %v", ids, want)
	}
	if len(list) == 2 {
		sameGrant(t, g2, list[0])
		if list[1].RevokedAt == nil {
			t.Error("revoked grant listed without RevokedAt")
		}
	}
	list, err = s.ListGrants(t.Context(), "bob")
	if err != nil || len(list) != 1 || list[0].ID != g3.ID {
		t.Errorf("ListGrants(bob) = %+v, %v", list, err)
	}
	list, err = s.ListGrants(t.Context(), "carol")
	if err != nil || len(list) != 0 {
		t.Errorf("ListGrants(carol) = %+v, %v; want empty", list, err)
	}
}

func testGrantFindUsable(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base
	find := func(user, provider, ns, name string) (store.Grant, error) {
		return s.FindUsableGrant(ctx, user, provider, ns, name, "", now)
	}
	_, err := find("alice", "github", "team-a", "ci")
	wantErr(t, "FindUsableGrant with no grants", err, store.ErrNotFound)

	older := mustGrant(t, s, newGrant("alice", "github", "ci"))
	newer := newGrant("alice", "github", "ci")
	newer.ExpiresAt = ptr(now.Add(time.Hour))
	newerG := mustGrant(t, s, newer)
	// Grants that must never be chosen although they are newer still.
	expired := newGrant("alice", "github", "ci")
	expired.ExpiresAt = ptr(now)
	mustGrant(t, s, expired)
	revoked := mustGrant(t, s, newGrant("alice", "github", "ci"))
	if err := s.RevokeGrant(ctx, "alice", revoked.ID, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Near misses on every key.
	mustGrant(t, s, newGrant("bob", "github", "ci"))
	mustGrant(t, s, newGrant("alice", "gitlab", "ci"))
	mustGrant(t, s, newGrant("alice", "github", "other"))
	otherNS := newGrant("alice", "github", "ci")
	otherNS.ServiceAccountNamespace = "team-b"
	mustGrant(t, s, otherNS)

	got, err := find("alice", "github", "team-a", "ci")
	if err != nil {
		t.Fatalf("FindUsableGrant: %v", err)
	}
	sameGrant(t, newerG, got)

	// Once the newer one expires the older, endless one is used.
	now = now.Add(time.Hour)
	got, err = find("alice", "github", "team-a", "ci")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != older.ID {
		t.Errorf("FindUsableGrant chose %d, want %d", got.ID, older.ID)
	}
	if err := s.RevokeGrant(ctx, "alice", older.ID, now); err != nil {
		t.Fatal(err)
	}
	_, err = find("alice", "github", "team-a", "ci")
	wantErr(t, "FindUsableGrant with only revoked and expired grants", err, store.ErrNotFound)
	_, err = find("carol", "github", "team-a", "ci")
	wantErr(t, "FindUsableGrant for another user", err, store.ErrNotFound)
}

// testGrantServiceAccountUID: the uid a grant is bound to is kept (none
// stays none), and FindUsableGrant prefers a grant bound to the caller's
// uid, then one without uid, then one bound to another uid (which the
// caller refuses), newest first within each.
func testGrantServiceAccountUID(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base
	find := func(uid string) store.Grant {
		t.Helper()
		g, err := s.FindUsableGrant(ctx, "alice", "github", "team-a", "ci", uid, now)
		if err != nil {
			t.Fatalf("FindUsableGrant(uid %q): %v", uid, err)
		}
		return g
	}
	bound := func(uid string) store.Grant {
		g := newGrant("alice", "github", "ci")
		g.ServiceAccountUID = uid
		return mustGrant(t, s, g)
	}

	legacy := mustGrant(t, s, newGrant("alice", "github", "ci"))
	if legacy.ServiceAccountUID != "" {
		t.Errorf("grant without uid stored with uid %q", legacy.ServiceAccountUID)
	}
	if read, err := s.GetGrant(ctx, legacy.ID); err != nil || read.ServiceAccountUID != "" {
		t.Errorf("GetGrant of a grant without uid = %+v, %v", read, err)
	}
	if g := find("uid-a"); g.ID != legacy.ID {
		t.Errorf("only a grant without uid: chose %d, want %d", g.ID, legacy.ID)
	}

	a := bound("uid-a")
	if read, err := s.GetGrant(ctx, a.ID); err != nil || read.ServiceAccountUID != "uid-a" {
		t.Errorf("GetGrant = %+v, %v; want uid-a", read, err)
	}
	b := bound("uid-b")
	if g := find("uid-a"); g.ID != a.ID || g.ServiceAccountUID != "uid-a" {
		t.Errorf("caller uid-a: chose %d (uid %q), want %d", g.ID, g.ServiceAccountUID, a.ID)
	}
	if g := find("uid-b"); g.ID != b.ID {
		t.Errorf("caller uid-b: chose %d, want %d", g.ID, b.ID)
	}
	// Another uid: the grant without uid is honoured by name.
	if g := find("uid-c"); g.ID != legacy.ID {
		t.Errorf("caller uid-c: chose %d, want the grant without uid %d", g.ID, legacy.ID)
	}
	if err := s.RevokeGrant(ctx, "alice", legacy.ID, now); err != nil {
		t.Fatal(err)
	}
	// Only grants bound to other uids: the newest is returned and refused
	// by the caller.
	g := find("uid-c")
	if g.ID != b.ID || g.MatchesUID("uid-c") {
		t.Errorf("caller uid-c: chose %d (uid %q), want %d, not matching", g.ID, g.ServiceAccountUID, b.ID)
	}
	if !g.MatchesUID("uid-b") || !legacy.MatchesUID("anything") {
		t.Error("MatchesUID refuses a grant's own uid or a grant without uid")
	}
	if err := s.RevokeGrant(ctx, "alice", a.ID, now); err != nil {
		t.Fatal(err)
	}
	if g := find("uid-a"); g.ID != b.ID || g.MatchesUID("uid-a") {
		t.Errorf("after revoking uid-a's grant, caller uid-a: chose %d (uid %q), want %d, not matching", g.ID, g.ServiceAccountUID, b.ID)
	}
}

func testGrantRevoke(t *testing.T, s store.Store) {
	g := mustGrant(t, s, newGrant("alice", "github", "ci"))
	wantErr(t, "RevokeGrant of someone else's grant", s.RevokeGrant(t.Context(), "mallory", g.ID, base), store.ErrNotFound)
	wantErr(t, "RevokeGrant of a missing grant", s.RevokeGrant(t.Context(), "alice", g.ID+1000, base), store.ErrNotFound)
	read, err := s.GetGrant(t.Context(), g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if read.RevokedAt != nil {
		t.Fatalf("a refused revoke revoked the grant at %v", read.RevokedAt)
	}

	if err := s.RevokeGrant(t.Context(), "alice", g.ID, base); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	read, err = s.GetGrant(t.Context(), g.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := g
	want.RevokedAt = ptr(base)
	sameGrant(t, want, read)
	if read.Usable(base) {
		t.Error("revoked grant is usable")
	}
	// Revoking again succeeds and keeps the first time.
	if err := s.RevokeGrant(t.Context(), "alice", g.ID, base.Add(time.Hour)); err != nil {
		t.Errorf("second RevokeGrant: %v", err)
	}
	read, _ = s.GetGrant(t.Context(), g.ID)
	sameGrant(t, want, read)
}

// Every grant to one ServiceAccount, whoever made it at whichever
// provider, revoked ones included, newest first; none of another
// namespace or name.
func testGrantListByServiceAccount(t *testing.T, s store.Store) {
	a := mustGrant(t, s, newGrant("alice", "github", "ci"))
	mustGrant(t, s, newGrant("alice", "github", "deploy"))
	other := newGrant("bob", "gitlab", "ci")
	other.ServiceAccountNamespace = "team-b"
	mustGrant(t, s, other)
	b := newGrant("bob", "gitlab", "ci")
	b.ServiceAccountUID = "uid-1"
	b = mustGrant(t, s, b)
	if err := s.RevokeGrant(t.Context(), "alice", a.ID, base); err != nil {
		t.Fatal(err)
	}
	a.RevokedAt = ptr(base)
	got, err := s.ListServiceAccountGrants(t.Context(), "team-a", "ci")
	if err != nil {
		t.Fatalf("ListServiceAccountGrants: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("ListServiceAccountGrants = %d grants, want 2: %+v", len(got), got)
	}
	sameGrant(t, b, got[0])
	sameGrant(t, a, got[1])
	none, err := s.ListServiceAccountGrants(t.Context(), "team-a", "nobody")
	if err != nil || len(none) != 0 {
		t.Errorf("ListServiceAccountGrants of an account without grants = %v, %v; want none", none, err)
	}
}

// DeleteUserSessions ends that person's sessions only and counts them.
func testSessionDeleteByUser(t *testing.T, s store.Store) {
	for _, id := range []string{"a1", "a2"} {
		if err := s.CreateSession(t.Context(), newSession(id)); err != nil {
			t.Fatal(err)
		}
	}
	bob := newSession("b1")
	bob.UserID = "bob"
	if err := s.CreateSession(t.Context(), bob); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteUserSessions(t.Context(), "alice")
	if err != nil || n != 2 {
		t.Fatalf("DeleteUserSessions = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"a1", "a2"} {
		_, err := s.GetSession(t.Context(), id, base)
		wantErr(t, "GetSession of a deleted session", err, store.ErrNotFound)
	}
	if _, err := s.GetSession(t.Context(), "b1", base); err != nil {
		t.Errorf("another person's session went too: %v", err)
	}
	if n, err := s.DeleteUserSessions(t.Context(), "alice"); err != nil || n != 0 {
		t.Errorf("second DeleteUserSessions = %d, %v; want 0", n, err)
	}
}

// --- audit ---------------------------------------------------------------

func sameAudit(t *testing.T, want, got store.AuditEvent) {
	t.Helper()
	checkTime(t, "Time", got.Time)
	want.Time = norm(want.Time)
	if len(want.Detail) == 0 {
		want.Detail = nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("audit event = %+v\n\twant %+v", got, want)
	}
}

func testAudit(t *testing.T, s store.Store) {
	var alice []store.AuditEvent
	for i := range 5 {
		e := store.AuditEvent{
			Time: base.Add(time.Duration(i) * time.Second), UserID: "alice",
			Actor: "user:alice", Action: "credential.refresh", Provider: "github",
			Detail: []byte(`{"n":` + strconv.Itoa(i) + `}`),
		}
		got, err := s.AppendAudit(t.Context(), e)
		if err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		if got.ID <= 0 {
			t.Errorf("ID = %d", got.ID)
		}
		e.ID = got.ID
		sameAudit(t, e, got)
		alice = append(alice, got)
		if _, err := s.AppendAudit(t.Context(), store.AuditEvent{
			Time: base, UserID: "bob", Actor: "system:gc", Action: "grant.expire",
		}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Reverse(alice) // newest first

	page, err := s.ListAudit(t.Context(), "alice", 0, 2)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	var all []store.AuditEvent
	for pages := 0; len(page) > 0; pages++ {
		if pages > 5 || len(page) > 2 {
			t.Fatalf("paging does not end (page %d has %d events)", pages, len(page))
		}
		all = append(all, page...)
		page, err = s.ListAudit(t.Context(), "alice", page[len(page)-1].ID, 2)
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(all) != len(alice) {
		t.Fatalf("paged through %d events, want %d", len(all), len(alice))
	}
	for i := range all {
		sameAudit(t, alice[i], all[i])
	}

	one, err := s.ListAudit(t.Context(), "alice", alice[1].ID, 1)
	if err != nil || len(one) != 1 || one[0].ID != alice[2].ID {
		t.Errorf("ListAudit(before %d, 1) = %+v, %v; want event %d", alice[1].ID, one, err, alice[2].ID)
	}
	none, err := s.ListAudit(t.Context(), "alice", 0, 0)
	if err != nil || len(none) != 0 {
		t.Errorf("ListAudit(limit 0) = %+v, %v; want empty", none, err)
	}
	none, err = s.ListAudit(t.Context(), "carol", 0, 10)
	if err != nil || len(none) != 0 {
		t.Errorf("ListAudit(carol) = %+v, %v; want empty", none, err)
	}

	// An event without a time is stamped by the store.
	before := time.Now()
	stamped, err := s.AppendAudit(t.Context(), store.AuditEvent{UserID: "carol", Actor: "system:test", Action: "a"})
	if err != nil {
		t.Fatal(err)
	}
	between(t, "Time", stamped.Time, before, time.Now())
}

// testAuditBatch: many events in one call are stored in the slice's order,
// ids ascending with it, each as AppendAudit would store it.
func testAuditBatch(t *testing.T, s store.Store) {
	first, err := s.AppendAudit(t.Context(), store.AuditEvent{Time: base, UserID: "carol", Actor: "system:test", Action: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// More than one page of the writer's batches, two people interleaved,
	// details empty, nil and set, and one event without a time.
	const n = 300
	in := make([]store.AuditEvent, n)
	for i := range in {
		user := "alice"
		if i%3 == 0 {
			user = "bob"
		}
		in[i] = store.AuditEvent{
			Time: base.Add(time.Duration(i) * time.Millisecond), UserID: user,
			Actor: "serviceaccount:ns/sa", Action: "grant.use", Provider: "github",
		}
		switch i % 4 {
		case 1:
			in[i].Detail = []byte{}
		case 2:
			in[i].Detail = []byte(`{"n":` + strconv.Itoa(i) + `}`)
		}
	}
	in[7].Time = time.Time{}
	before := time.Now()
	got, err := s.AppendAuditBatch(t.Context(), in)
	after := time.Now()
	if err != nil {
		t.Fatalf("AppendAuditBatch: %v", err)
	}
	if len(got) != n {
		t.Fatalf("AppendAuditBatch returned %d events, want %d", len(got), n)
	}
	prev := first.ID
	for i, e := range got {
		if e.ID <= prev {
			t.Fatalf("event %d: ID %d not above the one before (%d): not in the slice's order", i, e.ID, prev)
		}
		prev = e.ID
		want := in[i]
		want.ID = e.ID
		if i == 7 {
			between(t, "Time of the event without one", e.Time, before, after)
			want.Time = e.Time
		}
		sameAudit(t, want, e)
	}
	// What is read back is what was returned.
	for _, user := range []string{"alice", "bob"} {
		listed, err := s.ListAudit(t.Context(), user, 0, n+1)
		if err != nil {
			t.Fatal(err)
		}
		var want []store.AuditEvent
		for _, e := range got {
			if e.UserID == user {
				want = append(want, e)
			}
		}
		slices.Reverse(want)
		if len(listed) != len(want) {
			t.Fatalf("ListAudit(%s): %d events, want %d", user, len(listed), len(want))
		}
		for i := range listed {
			sameAudit(t, want[i], listed[i])
		}
	}
	// Later single events follow the batch.
	last, err := s.AppendAudit(t.Context(), store.AuditEvent{Time: base, UserID: "carol", Actor: "system:test", Action: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if last.ID <= got[n-1].ID {
		t.Errorf("event after the batch has ID %d, the batch's last %d", last.ID, got[n-1].ID)
	}
	// A batch of one is as good as AppendAudit.
	one, err := s.AppendAuditBatch(t.Context(), []store.AuditEvent{{Time: base, UserID: "carol", Actor: "system:test", Action: "c", Detail: []byte(`{}`)}})
	if err != nil || len(one) != 1 || one[0].ID <= last.ID {
		t.Fatalf("AppendAuditBatch(one) = %+v, %v", one, err)
	}
	sameAudit(t, store.AuditEvent{ID: one[0].ID, Time: base, UserID: "carol", Actor: "system:test", Action: "c", Detail: []byte(`{}`)}, one[0])
}

// testAuditBatchEmpty: an empty slice stores nothing and is no error.
func testAuditBatchEmpty(t *testing.T, s store.Store) {
	for _, es := range [][]store.AuditEvent{nil, {}} {
		got, err := s.AppendAuditBatch(t.Context(), es)
		if err != nil || len(got) != 0 {
			t.Errorf("AppendAuditBatch(%#v) = %+v, %v; want none, nil", es, got, err)
		}
	}
	// Not even with a context that has ended: no database is touched.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.AppendAuditBatch(ctx, nil); err != nil {
		t.Errorf("AppendAuditBatch(ended context, nil) = %v", err)
	}
	next, err := s.AppendAudit(t.Context(), store.AuditEvent{Time: base, UserID: "alice", Actor: "system:test", Action: "a"})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := s.ListAudit(t.Context(), "alice", 0, 10)
	if err != nil || len(listed) != 1 || listed[0].ID != next.ID {
		t.Errorf("ListAudit = %+v, %v; want only %d", listed, err, next.ID)
	}
}

// testAuditBatchCanceled: a batch that fails stores none of its events.
func testAuditBatchCanceled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	es := []store.AuditEvent{
		{Time: base, UserID: "alice", Actor: "system:test", Action: "a"},
		{Time: base, UserID: "alice", Actor: "system:test", Action: "b"},
	}
	if got, err := s.AppendAuditBatch(ctx, es); err == nil {
		t.Fatalf("AppendAuditBatch(ended context) = %+v, nil; want an error", got)
	}
	listed, err := s.ListAudit(t.Context(), "alice", 0, 10)
	if err != nil || len(listed) != 0 {
		t.Errorf("ListAudit after a failed batch = %+v, %v; want none", listed, err)
	}
}

func testAuditPrune(t *testing.T, s store.Store) {
	for i := range 4 {
		if _, err := s.AppendAudit(t.Context(), store.AuditEvent{
			Time: base.Add(time.Duration(i) * time.Hour), UserID: "alice", Actor: "user:alice", Action: "a",
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Strictly older than before: the event at base+2h stays.
	n, err := s.PruneAudit(t.Context(), base.Add(2*time.Hour))
	if err != nil || n != 2 {
		t.Errorf("PruneAudit = %d, %v; want 2, nil", n, err)
	}
	left, err := s.ListAudit(t.Context(), "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || !left[1].Time.Equal(norm(base.Add(2*time.Hour))) {
		t.Errorf("left after prune: %+v", left)
	}
}

func testCredentialCount(t *testing.T, s store.Store) {
	got, err := s.CountCredentials(t.Context())
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	mustUpsert(t, s, newCredential("alice", "github"))
	mustUpsert(t, s, newCredential("bob", "github"))
	mustUpsert(t, s, newCredential("alice", "google"))
	if _, err := s.UpdateCredential(t.Context(), "bob", "github", func(c *store.Credential) (store.Outcome, error) {
		c.State, c.StateReason = store.StateNeedsReauth, "invalid_grant"
		return store.Write(), nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err = s.CountCredentials(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []store.CredentialCount{
		{Provider: "github", State: store.StateActive, Count: 1},
		{Provider: "github", State: store.StateNeedsReauth, Count: 1},
		{Provider: "google", State: store.StateActive, Count: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("CountCredentials = %v, want %v", got, want)
	}
}

// claimIDs claims for provider p and returns the claimed users, sorted.
func claimIDs(t *testing.T, s store.Store, c store.RefreshClaim) []string {
	t.Helper()
	got, err := s.ClaimCredentialsForRefresh(t.Context(), c)
	if err != nil {
		t.Fatalf("ClaimCredentialsForRefresh: %v", err)
	}
	var users []string
	for _, g := range got {
		if g.Provider != c.Provider {
			t.Errorf("claimed a credential of %s for %s", g.Provider, c.Provider)
		}
		if len(g.RefreshToken) == 0 || g.State != store.StateActive {
			t.Errorf("claimed %s: not refreshable (state %s)", g.UserID, g.State)
		}
		users = append(users, g.UserID)
	}
	sort.Strings(users)
	return users
}

func testCredentialClaimForRefresh(t *testing.T, s store.Store) {
	mk := func(user, provider string, accessExp, lastRefresh time.Time) {
		c := newCredential(user, provider)
		c.AccessExpiresAt = ptr(accessExp)
		c.LastRefreshedAt = ptr(lastRefresh)
		mustUpsert(t, s, c)
	}
	mk("soon", "p", base.Add(2*time.Minute), base)                     // access lapses within the window
	mk("later", "p", base.Add(2*time.Hour), base)                      // fresh, recently refreshed
	mk("idle", "p", base.Add(2*time.Hour), base.Add(-90*24*time.Hour)) // refresh token near its idle death
	mk("other", "q", base.Add(time.Minute), base)                      // another provider
	mk("dead", "p", base.Add(time.Minute), base)
	if _, err := s.UpdateCredential(t.Context(), "dead", "p", func(c *store.Credential) (store.Outcome, error) {
		c.State = store.StateNeedsReauth
		return store.Write(), nil
	}); err != nil {
		t.Fatal(err)
	}
	norefresh := newCredential("norefresh", "p")
	norefresh.RefreshToken = nil
	norefresh.AccessExpiresAt = ptr(base.Add(time.Minute))
	mustUpsert(t, s, norefresh)

	claim := store.RefreshClaim{Provider: "p", ExpiringBefore: base.Add(5 * time.Minute), Now: base, LeaseUntil: base.Add(time.Minute), Limit: 10}
	if got := claimIDs(t, s, claim); fmt.Sprint(got) != "[soon]" {
		t.Errorf("by expiry: claimed %v, want [soon]", got)
	}
	// Leased: not handed out again while the lease runs...
	if got := claimIDs(t, s, claim); len(got) != 0 {
		t.Errorf("while leased: claimed %v, want none", got)
	}
	// ...and again once it has run out.
	claim.Now, claim.LeaseUntil = base.Add(2*time.Minute), base.Add(3*time.Minute)
	if got := claimIDs(t, s, claim); fmt.Sprint(got) != "[soon]" {
		t.Errorf("after the lease: claimed %v, want [soon]", got)
	}
	// Idleness alone.
	idle := store.RefreshClaim{Provider: "p", IdleBefore: base.Add(-80 * 24 * time.Hour), Now: base.Add(time.Hour), LeaseUntil: base.Add(2 * time.Hour), Limit: 10}
	if got := claimIDs(t, s, idle); fmt.Sprint(got) != "[idle]" {
		t.Errorf("by idleness: claimed %v, want [idle]", got)
	}
	// No criterion: nothing, rather than everything.
	if got := claimIDs(t, s, store.RefreshClaim{Provider: "p", Now: base.Add(time.Hour), LeaseUntil: base.Add(2 * time.Hour), Limit: 10}); len(got) != 0 {
		t.Errorf("without criteria: claimed %v", got)
	}
	// The claim leaves the credential as it was.
	c, err := s.GetCredential(t.Context(), "soon", "p")
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || !c.AccessExpiresAt.Equal(norm(base.Add(2*time.Minute))) {
		t.Errorf("claimed credential changed: version %d, access expiry %v", c.Version, c.AccessExpiresAt)
	}
}

// testCredentialRefreshExpiring: the credential.expiring scan lists active
// refreshable credentials whose refresh token expires before the bound, in
// id order, resumably, and leaves rows without an expiry alone.
func testCredentialRefreshExpiring(t *testing.T, s store.Store) {
	mk := func(user, provider string, refreshExp *time.Time) store.Credential {
		c := newCredential(user, provider)
		c.RefreshExpiresAt = refreshExp
		return mustUpsert(t, s, c)
	}
	a := mk("a", "p", ptr(base.Add(3*24*time.Hour)))
	mk("later", "p", ptr(base.Add(30*24*time.Hour)))
	mk("never", "p", nil)
	b := mk("b", "q", ptr(base.Add(-time.Hour))) // already expired: still listed
	mk("dead", "p", ptr(base.Add(time.Hour)))
	if _, err := s.UpdateCredential(t.Context(), "dead", "p", func(c *store.Credential) (store.Outcome, error) {
		c.State = store.StateNeedsReauth
		return store.Write(), nil
	}); err != nil {
		t.Fatal(err)
	}
	norefresh := newCredential("norefresh", "p")
	norefresh.RefreshToken = nil
	norefresh.RefreshExpiresAt = ptr(base.Add(time.Hour))
	mustUpsert(t, s, norefresh)
	c := mk("c", "p", ptr(base.Add(6*24*time.Hour)))

	before := base.Add(7 * 24 * time.Hour)
	var got []string
	after := int64(0)
	for range 10 {
		batch, err := s.ListCredentialsRefreshExpiringBefore(t.Context(), before, after, 2)
		if err != nil {
			t.Fatalf("ListCredentialsRefreshExpiringBefore: %v", err)
		}
		if len(batch) > 2 {
			t.Fatalf("batch of %d, limit 2", len(batch))
		}
		for _, cr := range batch {
			if cr.ID <= after {
				t.Errorf("id %d not after %d", cr.ID, after)
			}
			after = cr.ID
			checkTimep(t, "RefreshExpiresAt", cr.RefreshExpiresAt)
			got = append(got, cr.UserID)
		}
		if len(batch) < 2 {
			break
		}
	}
	want := []string{}
	for _, cr := range []store.Credential{a, b, c} {
		want = append(want, cr.UserID)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listed %v, want %v (id order)", got, want)
	}
	first, err := s.ListCredentialsRefreshExpiringBefore(t.Context(), before, 0, 1)
	if err != nil || len(first) != 1 || first[0].RefreshExpiresAt == nil || !first[0].RefreshExpiresAt.Equal(norm(base.Add(3*24*time.Hour))) {
		t.Errorf("first = %+v, %v", first, err)
	}
	if none, err := s.ListCredentialsRefreshExpiringBefore(t.Context(), before, 0, 0); err != nil || len(none) != 0 {
		t.Errorf("limit 0: %d rows, %v", len(none), err)
	}
}

// testCredentialClaimConcurrent: claimants racing for one batch share it
// out; no credential is claimed twice.
func testCredentialClaimConcurrent(t *testing.T, s store.Store) {
	const n = 40
	for i := range n {
		c := newCredential(fmt.Sprintf("u%02d", i), "p")
		c.AccessExpiresAt = ptr(base)
		mustUpsert(t, s, c)
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				got, err := s.ClaimCredentialsForRefresh(t.Context(), store.RefreshClaim{Provider: "p",
					ExpiringBefore: base.Add(time.Minute), Now: base, LeaseUntil: base.Add(time.Hour), Limit: 3})
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					seen[c.UserID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("%d credentials claimed, want %d", len(seen), n)
	}
	for u, k := range seen {
		if k != 1 {
			t.Errorf("%s claimed %d times", u, k)
		}
	}
}
