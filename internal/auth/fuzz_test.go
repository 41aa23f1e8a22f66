package auth

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
)

// fuzzAllowed is the allow-list of FuzzReturnURL: EXTERNAL_URL (with a path)
// and two ALLOWED_RETURN_URLS origins.
var fuzzAllowed = map[string]bool{
	"https://tokens.example": true,
	"https://app.example":    true,
	"http://localhost:3000":  true,
}

// FuzzReturnURL: Check never panics, and every URL it accepts is absolute,
// http(s), without userinfo, and its origin is in the allow-list both as Go
// parses it and as a browser reads the start of the string (scheme://host
// then end, '/', '?' or '#'), so "//evil", backslashes, control characters
// and "allowed@evil" tricks cannot get through. An accepted URL is accepted
// again unchanged, and adding outcome parameters keeps its origin.
func FuzzReturnURL(f *testing.F) {
	r, err := NewReturnURLs("https://tokens.example/app/", []string{"https://app.example", " http://localhost:3000 ", "not a url", ""})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"", "/", "/x?y=1#z", "/app/../../x", "https://tokens.example/a", "https://APP.example/b", "http://localhost:3000/cb",
		"HTTPS://TOKENS.EXAMPLE/", "https://app.example?x", "https://app.example#frag",
		// hostile
		"//evil.example", "///evil.example", "/\\evil.example", "\\\\evil", "/\t/evil.example", " //evil.example",
		"https://app.example@evil.example/", "https://evil.example\\@app.example/", "https://evil.example#@app.example",
		"https://evil.example?@app.example", "https://app.example.evil.example/", "https://app.example:443/",
		"https:evil.example", "https:/evil.example", "https:///evil.example", "http://app.example/", "javascript:alert(1)",
		"JaVaScRiPt://app.example/%0aalert(1)", "data:text/html,x", "/%2F%2Fevil.example", "/%5C%5Cevil.example",
		"/a\r\nSet-Cookie: x", "https://app.example%2eevil.example/", "https://[::1]/", "https://app.example:/",
		"https://%61pp.example/", "https://app。example/", "https://tokens.example\x00.evil/", "/\u2215\u2215evil.example",
		"https://user:pass@tokens.example/", "https://tokens.example:8443/", "relative/path", "?x=1", "#x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := r.Check(raw)
		if err != nil {
			if !errors.Is(err, ErrBadReturnURL) || out != "" {
				t.Fatalf("Check(%q) = %q, %v", raw, out, err)
			}
			return
		}
		assertAllowedURL(t, raw, out)
		again, err := r.Check(out)
		if err != nil || again != out {
			t.Fatalf("Check(%q) = %q, but Check(%q) = %q, %v", raw, out, out, again, err)
		}
		assertAllowedURL(t, raw, WithParams(out, "error", raw, "provider", raw))
	})
}

func assertAllowedURL(t *testing.T, raw, out string) {
	t.Helper()
	u, err := url.Parse(out)
	if err != nil {
		t.Fatalf("Check(%q) accepted %q, which does not parse: %v", raw, out, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil || u.Opaque != "" {
		t.Fatalf("Check(%q) accepted %q: scheme %q host %q user %v opaque %q", raw, out, u.Scheme, u.Host, u.User, u.Opaque)
	}
	if o := strings.ToLower(u.Scheme + "://" + u.Host); !fuzzAllowed[o] {
		t.Fatalf("Check(%q) accepted %q, origin %q is not allowed", raw, out, o)
	}
	for _, c := range []byte(out) {
		// A space may stay in the query (Go keeps RawQuery as given);
		// control characters (header injection) and backslashes may not.
		if c < ' ' || c == 0x7f || c == '\\' {
			t.Fatalf("Check(%q) accepted %q, which holds byte %#x", raw, out, c)
		}
	}
	// What a browser sees: the authority runs to the first '/', '?', '#'
	// (or '\'); it must be exactly an allowed origin's.
	lower := strings.ToLower(out)
	for o := range fuzzAllowed {
		if rest, ok := strings.CutPrefix(lower, o); ok && (rest == "" || strings.ContainsRune("/?#", rune(rest[0]))) {
			return
		}
	}
	t.Fatalf("Check(%q) accepted %q, whose authority is not an allowed origin", raw, out)
}

// linkStore keeps link states in memory: the two Store methods Begin and
// Consume use, with the store's contract (consumed once, expired = gone).
type linkStore struct {
	store.Store // nil: any other method panics
	mu          sync.Mutex
	states      map[string]store.LinkState
}

func (s *linkStore) CreateLinkState(_ context.Context, l store.LinkState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.states[l.State]; dup {
		return errors.New("duplicate state")
	}
	s.states[l.State] = l
	return nil
}

func (s *linkStore) ConsumeLinkState(_ context.Context, state string, now time.Time) (store.LinkState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.states[state]
	delete(s.states, state)
	if !ok || !now.Before(l.ExpiresAt) {
		return store.LinkState{}, store.ErrNotFound
	}
	return l, nil
}

// FuzzState: Consume never panics; a state that is not the one Begin
// handed out, or that comes back for another binding (session or login
// browser) or provider, or too late, or a second time, never verifies; the
// real one round-trips the PKCE verifier, nonce and return URL exactly.
func FuzzState(f *testing.F) {
	ring, err := crypto.NewKeyRing(bytes.Repeat([]byte("s"), crypto.KeySize))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("session-hash-1", "drive", "https://app.example/x", "", "session-hash-1", "drive")
	f.Add("login:abc", LoginProvider, "", "AAAA", "login:abd", LoginProvider)
	f.Add("s", "p", "/", "\x00", "s", "q")
	f.Add("", "", "", "", "", "")
	f.Add("sess", "drive", "/r", strings.Repeat("A", 43), "sess", "drive")
	f.Add("a\x00b", "c", "", "=", "a", "\x00bc")
	f.Fuzz(func(t *testing.T, binding, provider, returnURL, forged, otherBinding, otherProvider string) {
		now := time.Unix(1_700_000_000, 0)
		st := &linkStore{states: map[string]store.LinkState{}}
		a, err := New(Options{Settings: &settings.Settings{}, Store: st, Keys: ring, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		begin := func() (string, Pending) {
			state, p, err := a.Begin(ctx, binding, provider, returnURL)
			if err != nil {
				t.Fatal(err)
			}
			if state == "" || p.Verifier == "" || p.Nonce == "" || p.ReturnURL != returnURL {
				t.Fatalf("Begin: state %q pending %+v", state, p)
			}
			return state, p
		}
		state, want := begin()
		// Tampered: any other string, including state with a changed,
		// dropped or added byte.
		for _, bad := range []string{forged, state[:len(state)-1], state + forged, flip(state, forged)} {
			if bad == state {
				continue
			}
			if p, err := a.Consume(ctx, bad, binding, provider); !errors.Is(err, ErrInvalidState) {
				t.Fatalf("tampered state %q verified: %+v, %v", bad, p, err)
			}
		}
		// Another binding or provider: refused, and the state is spent.
		if otherBinding != binding || otherProvider != provider {
			if p, err := a.Consume(ctx, state, otherBinding, otherProvider); !errors.Is(err, ErrInvalidState) {
				t.Fatalf("state of (%q, %q) verified for (%q, %q): %+v, %v", binding, provider, otherBinding, otherProvider, p, err)
			}
			if _, err := a.Consume(ctx, state, binding, provider); !errors.Is(err, ErrInvalidState) {
				t.Fatalf("state verified after a foreign use spent it: %v", err)
			}
			state, want = begin()
		}
		got, err := a.Consume(ctx, state, binding, provider)
		if err != nil || got != want {
			t.Fatalf("real state: got %+v, %v; want %+v", got, err, want)
		}
		if _, err := a.Consume(ctx, state, binding, provider); !errors.Is(err, ErrInvalidState) {
			t.Fatalf("state verified twice: %v", err)
		}
		// Too late.
		state, _ = begin()
		now = now.Add(pendingLifetime)
		if _, err := a.Consume(ctx, state, binding, provider); !errors.Is(err, ErrInvalidState) {
			t.Fatalf("expired state verified: %v", err)
		}
	})
}

// flip changes one byte of s, chosen by seed.
func flip(s, seed string) string {
	if s == "" {
		return "x"
	}
	i := len(seed) % len(s)
	b := []byte(s)
	b[i] ^= 1 | byte(len(seed))
	return string(b)
}
