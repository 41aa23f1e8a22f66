package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/internal/crypto"
)

// The login cookie: it round-trips the pending login for its own state
// only, within pendingLifetime, and is refused (invalid_state) when
// tampered with, expired, sealed under a key no longer in CRYPTOKEY, or
// sealed with the data key itself rather than the login subkey.
func TestLoginCookie(t *testing.T) {
	e := newBearerEnv(t)
	ctx := context.Background()
	a := e.authenticator(e.settings())
	// The longest return URL accepted, of characters JSON would escape:
	// the cookie must still fit a browser's 4096 bytes.
	ret := "https://app.example/?" + strings.Repeat("a&<", (MaxReturnURL-21)/3)
	authURL, cookie, err := a.StartLogin(ctx, ret)
	if err != nil {
		t.Fatal(err)
	}
	if len("tokenstore_login=")+len(cookie)+len("; Path=/api/oidc; Max-Age=600; HttpOnly; Secure; SameSite=Lax") > 4096 {
		t.Fatalf("login cookie of %d bytes", len(cookie))
	}
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	state := u.Query().Get("state")
	if state == "" || u.Query().Get("nonce") == "" || u.Query().Get("code_challenge") == "" {
		t.Fatalf("authorization URL %s", authURL)
	}
	if strings.Contains(cookie, state) {
		t.Fatal("the cookie shows the state")
	}

	got, err := a.AbortLogin(ctx, cookie, state)
	if err != nil || got != ret {
		t.Fatalf("AbortLogin: %q, %v", got, err)
	}
	p, err := a.openLogin(cookie, state)
	if err != nil || p.Verifier == "" || u.Query().Get("nonce") != p.Nonce {
		t.Fatalf("openLogin: %+v, %v", p, err)
	}

	raw, _ := base64.RawURLEncoding.DecodeString(cookie)
	for i := 0; i < len(raw); i += 97 {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x20
		if _, err := a.openLogin(base64.RawURLEncoding.EncodeToString(b), state); !errors.Is(err, ErrInvalidState) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for what, c := range map[string]string{"empty": "", "not base64": "!!", "truncated": cookie[:len(cookie)/2]} {
		if _, err := a.openLogin(c, state); !errors.Is(err, ErrInvalidState) {
			t.Fatalf("%s cookie: %v", what, err)
		}
	}
	if _, err := a.openLogin(cookie, state+"x"); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("another state: %v", err)
	}
	if _, err := a.openLogin(cookie, ""); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("no state: %v", err)
	}

	// Sealed with CRYPTOKEY's data key rather than the login subkey.
	direct, err := e.ring.Seal(pendingLogin{State: state, Expires: e.clock.Now().Add(pendingLifetime)}.encode(), loginBindingAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.openLogin(base64.RawURLEncoding.EncodeToString(direct), state); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("sealed with the data key: %v", err)
	}

	// Key rotation: a ring that still lists the old key opens it; one
	// without it does not.
	newKey := []byte(strings.Repeat("n", crypto.KeySize))
	rotated, _ := crypto.NewKeyRing(newKey, []byte(strings.Repeat("k", crypto.KeySize)))
	b, err := New(Options{Settings: e.settings(), Store: &linkStore{}, Keys: rotated, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.openLogin(cookie, state); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	dropped, _ := crypto.NewKeyRing(newKey)
	c, _ := New(Options{Settings: e.settings(), Store: &linkStore{}, Keys: dropped, Now: e.clock.Now})
	if _, err := c.openLogin(cookie, state); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("old key dropped: %v", err)
	}

	// Expired: the replay window ends with pendingLifetime.
	e.clock.Add(pendingLifetime)
	if _, err := a.openLogin(cookie, state); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("expired: %v", err)
	}
	if _, _, err := a.FinishLogin(ctx, cookie, state, "code"); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("FinishLogin with an expired cookie: %v", err)
	}
}

// decodePending never accepts a malformed plaintext.
func FuzzDecodePending(f *testing.F) {
	f.Add(pendingLogin{State: "s", Pending: Pending{Nonce: "n", Verifier: "v", ReturnURL: "/r"}}.encode())
	f.Add([]byte{pendingVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePending(b)
		if err != nil {
			return
		}
		if got := p.encode(); string(got) != string(b) {
			t.Fatalf("decoded %x to %+v, which encodes to %x", b, p, got)
		}
	})
}
