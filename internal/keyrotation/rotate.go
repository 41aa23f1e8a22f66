// Package keyrotation re-encrypts stored credentials under the key ring's
// first key (`tokenstore keys rotate`).
//
// It walks the credentials still sealed under another key in batches ordered
// by id and replaces each row's ciphertexts with a compare-and-swap on the
// row's version. Every row is its own atomic step, so a rotation stopped half
// way loses nothing and a second run simply continues with what is left; a
// refresh that rewrites a row meanwhile wins, and the row is read again.
package keyrotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/store"
)

// Progress is reported after every batch.
type Progress struct {
	// Total is the number of rows that needed rotation when the run began.
	Total int64
	// Done counts rows re-encrypted so far; Failed rows that could not be
	// opened (they are left as they are and reported).
	Done, Failed int64
}

// Options tune a run.
type Options struct {
	// BatchSize rows are read at a time (default 500).
	BatchSize int
	// OnProgress, if set, is called after each batch.
	OnProgress func(Progress)
	// OnFailure, if set, is called for each row that could not be rotated.
	// The error never contains key or token material.
	OnFailure func(c store.Credential, err error)
}

// Rotate re-encrypts every credential not yet under ring's primary key.
// It returns the final progress; an error only when the store fails (rows
// that cannot be opened are counted in Failed and reported, not fatal).
func Rotate(ctx context.Context, st store.Store, ring *crypto.KeyRing, opt Options) (Progress, error) {
	if opt.BatchSize <= 0 {
		opt.BatchSize = 500
	}
	primary := ring.PrimaryKeyID()
	total, err := st.CountCredentialsNotUnderKey(ctx, primary)
	if err != nil {
		return Progress{}, fmt.Errorf("keys rotate: count: %w", err)
	}
	p := Progress{Total: total}
	var after int64
	for {
		batch, err := st.ListCredentialsNotUnderKey(ctx, primary, after, opt.BatchSize)
		if err != nil {
			return p, fmt.Errorf("keys rotate: list after id %d: %w", after, err)
		}
		if len(batch) == 0 {
			return p, nil
		}
		for _, c := range batch {
			after = c.ID
			if err := ctx.Err(); err != nil {
				return p, err
			}
			err := rotateOne(ctx, st, ring, c)
			switch {
			case err == nil:
				p.Done++
			case errors.Is(err, crypto.ErrCorrupt), errors.Is(err, crypto.ErrUnknownKey):
				p.Failed++
				if opt.OnFailure != nil {
					opt.OnFailure(c, err)
				}
			default:
				return p, err
			}
		}
		if opt.OnProgress != nil {
			opt.OnProgress(p)
		}
	}
}

// rotateOne re-seals one row, re-reading it when a concurrent write moved
// its version, until it is under the primary key.
func rotateOne(ctx context.Context, st store.Store, ring *crypto.KeyRing, c store.Credential) error {
	primary := ring.PrimaryKeyID()
	for attempt := 0; ; attempt++ {
		if c.KeyID == primary {
			return nil // a refresh re-sealed it meanwhile
		}
		next, err := Reseal(ring, c)
		if err != nil {
			return fmt.Errorf("credential %d (user %q, provider %q): %w", c.ID, c.UserID, c.Provider, err)
		}
		_, err = st.ReplaceCredentialCiphertexts(ctx, next)
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil // revoked meanwhile: nothing left to protect
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 10 {
			return fmt.Errorf("keys rotate: credential %d: %w", c.ID, err)
		}
		if c, err = st.GetCredential(ctx, c.UserID, c.Provider); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return fmt.Errorf("keys rotate: re-read credential %d: %w", c.ID, err)
		}
	}
}

// Reseal returns c with both ciphertexts opened and sealed again under the
// ring's primary key, and KeyID set to it.
func Reseal(ring *crypto.KeyRing, c store.Credential) (store.Credential, error) {
	refresh := crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeRefreshToken}
	access := crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeAccessToken}
	out := c
	for _, f := range []struct {
		ct *[]byte
		b  crypto.Binding
	}{{&out.RefreshToken, refresh}, {&out.AccessToken, access}} {
		if len(*f.ct) == 0 {
			continue
		}
		pt, err := ring.Open(*f.ct, f.b)
		if err != nil {
			return c, fmt.Errorf("open %s: %w", f.b.Purpose, err)
		}
		if *f.ct, err = ring.Seal(pt, f.b); err != nil {
			return c, err
		}
	}
	out.KeyID = ring.PrimaryKeyID()
	return out, nil
}
