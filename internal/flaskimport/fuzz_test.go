package flaskimport

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fernet/fernet-go"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/store"
)

// credStore keeps credentials in memory: the two Store methods importRow
// uses.
type credStore struct {
	store.Store // nil: any other method panics
	creds       map[[2]string]store.Credential
}

func (s *credStore) GetCredential(_ context.Context, user, provider string) (store.Credential, error) {
	c, ok := s.creds[[2]string{user, provider}]
	if !ok {
		return store.Credential{}, store.ErrNotFound
	}
	return c, nil
}

func (s *credStore) UpsertCredential(_ context.Context, c store.Credential) (store.Credential, error) {
	s.creds[[2]string{c.UserID, c.Provider}] = c
	return c, nil
}

// oldKeyError is every message ParseOldKeys may return: only the key's
// position varies.
var oldKeyError = regexp.MustCompile(`^old CRYPTOKEY: (no keys given|key \d+ is not 32 bytes \(raw\), 44 characters of base64 or 64 of hex)$`)

// maxImportedExpiry is the latest refresh expiry an import records
// (9999-12-31T23:59:59Z); later ones are taken as unknown.
var maxImportedExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// FuzzImportRow feeds the old service's key setting and one old row (the
// Fernet ciphertext as the old database holds it, and its expires_at) to
// ParseOldKeys and importRow. Properties: no panic; a key error has a fixed
// shape (it quotes no key); a row either fails with a reason that holds
// neither ciphertext nor plaintext, or is imported as exactly the Fernet
// plaintext, sealed for its owner, with its expiry to the second when that
// is a real date (year 9999 at most, else none), and importing it again
// changes nothing.
func FuzzImportRow(f *testing.F) {
	raw := []byte("0123456789abcdef0123456789ABCDEF")
	k := new(fernet.Key)
	copy(k[:], raw)
	other := new(fernet.Key)
	copy(other[:], bytes.Repeat([]byte("o"), 32))
	keysB64 := base64.StdEncoding.EncodeToString(raw)
	keysAll := base64.URLEncoding.EncodeToString(other[:]) + " , " + string(raw) + "," + hex.EncodeToString(bytes.Repeat([]byte("h"), 32))
	tok, _ := fernet.EncryptAndSign([]byte("old-refresh-token"), k)
	empty, _ := fernet.EncryptAndSign(nil, k)
	foreign, _ := fernet.EncryptAndSign([]byte("x"), other)
	flipped := bytes.Clone(tok)
	flipped[len(flipped)/2] ^= 1
	for _, s := range []struct {
		keys  string
		token []byte
		exp   float64
		valid bool
	}{
		{keysB64, tok, 1.7e9, true},
		{keysAll, append([]byte("  "), append(tok, '\n')...), 1.7e9 + 0.25, true},
		{string(raw), tok, 0, false},
		{keysB64, tok, 0, true},
		{keysB64, tok, -1, true},
		{keysB64, tok, math.Inf(1), true},
		{keysB64, tok, math.NaN(), true},
		{keysB64, tok, 1e300, true},
		{keysB64, tok, 9.3e18, true},
		{keysB64, tok, 253402300799.9, true},
		{keysB64, tok, 253402300800, true},
		{keysB64, empty, 0, false},
		{keysB64, foreign, 0, false},
		{keysB64, flipped, 0, false},
		{keysB64, tok[:len(tok)-3], 0, false},
		{keysB64, []byte("gAAAAA"), 0, false},
		{keysB64, []byte("not-a-fernet-token-but-maybe-a-secret"), 0, false},
		{keysB64, nil, 0, false},
		{"", tok, 0, false},
		{"short-old-secret", tok, 0, false},
		{strings.Repeat("!", 44), tok, 0, false},
		{strings.Repeat("g", 64), tok, 0, false},
	} {
		f.Add(s.keys, s.token, s.exp, s.valid)
	}
	ring, err := crypto.NewKeyRing(bytes.Repeat([]byte("n"), crypto.KeySize))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, keySetting string, token []byte, exp float64, valid bool) {
		keys, err := ParseOldKeys(keySetting)
		if err != nil {
			if !oldKeyError.MatchString(err.Error()) {
				t.Fatalf("ParseOldKeys(%q): error %q is not a known shape (does it quote a key?)", keySetting, err)
			}
			return
		}
		st := &credStore{creds: map[[2]string]store.Credential{}}
		opt := Options{OldKeys: keys, Ring: ring, Store: st}
		r := Row{ID: 1, UserID: "u", Provider: "p"}
		expiresAt := sql.NullFloat64{Float64: exp, Valid: valid}
		ctx := context.Background()
		o, reason, err := importRow(ctx, opt, r, token, expiresAt)
		if err != nil {
			t.Fatalf("importRow: %v (only a failing store may stop the run)", err)
		}
		plain := fernet.VerifyAndDecrypt(bytes.TrimSpace(token), 0, keys)
		switch o {
		case Failed:
			if len(plain) != 0 && len(token) != 0 {
				t.Fatalf("a token that decrypts failed: %s", reason)
			}
			if reason == "" {
				t.Fatal("failed without a reason")
			}
			for _, secret := range [][]byte{bytes.TrimSpace(token), plain} {
				if len(secret) >= 4 && strings.Contains(reason, string(secret)) {
					t.Fatalf("reason %q quotes the token", reason)
				}
			}
			if len(st.creds) != 0 {
				t.Fatal("a failed row was stored")
			}
			return
		case Imported:
		default:
			t.Fatalf("outcome %q (%s) on an empty store", o, reason)
		}
		c, ok := st.creds[[2]string{"u", "p"}]
		if !ok || len(plain) == 0 {
			t.Fatalf("imported, stored %v, plaintext %d bytes", ok, len(plain))
		}
		got, err := ring.Open(c.RefreshToken, crypto.Binding{Owner: "u", Provider: "p", Purpose: crypto.PurposeRefreshToken})
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("stored token does not open to the Fernet plaintext: %v", err)
		}
		if c.KeyID != ring.PrimaryKeyID() || c.State != store.StateActive || c.AccessToken != nil {
			t.Fatalf("credential %+v", c)
		}
		realDate := valid && exp > 0 && exp < float64(maxImportedExpiry.Unix()+1)
		switch {
		case c.RefreshExpiresAt == nil:
			if realDate {
				t.Fatalf("expires_at %v was dropped", exp)
			}
		case !realDate:
			t.Fatalf("expires_at %v (valid %v) recorded as %v", exp, valid, c.RefreshExpiresAt)
		case c.RefreshExpiresAt.Unix() != int64(math.Floor(exp)) || c.RefreshExpiresAt.Unix() > maxImportedExpiry.Unix():
			t.Fatalf("expires_at %v recorded as %v", exp, c.RefreshExpiresAt)
		}
		if o, reason, err := importRow(ctx, opt, r, token, expiresAt); o != Unchanged || err != nil {
			t.Fatalf("second import: %s %s %v", o, reason, err)
		}
	})
}
