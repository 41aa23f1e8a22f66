package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// keyErrorShape is every message ParseKeyRing may return. Only numbers
// (positions and lengths) vary, so no byte of the key material can be in one.
var keyErrorShape = regexp.MustCompile(`^CRYPTOKEY: (` +
	"no key given; generate one with `tokenstore keys generate`" + `|` +
	`no key given|` +
	`key \d+ is listed twice|` +
	`key \d+: (64 characters but not hex|4[34] characters but not base64 of 32 bytes|` +
	`\d+ characters; want 32 raw bytes, 44 \(or 43\) base64 characters, or 64 hex characters|` +
	`\d+ bytes, want 32))$`)

// FuzzParseKeyRing: ParseKeyRing never panics; an error has one of the known
// shapes and quotes no key (nor any part of the value); an accepted value
// has one key per listed part, in order, the first sealing and every one
// opening, with the binding enforced.
func FuzzParseKeyRing(f *testing.F) {
	a := bytes.Repeat([]byte{'a'}, KeySize)
	b := []byte("0123456789abcdef0123456789abcdef")
	for _, s := range []string{
		string(a), base64.StdEncoding.EncodeToString(a), base64.URLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(a), base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b),
		hex.EncodeToString(a) + "," + string(b), " " + string(a) + " , ,", string(a) + "," + hex.EncodeToString(a),
		// hostile
		"", ",", " , ", "short-secret-value", strings.Repeat("z", 64), strings.Repeat("!", 44), strings.Repeat("A", 43),
		strings.Repeat("A", 42) + "==", base64.StdEncoding.EncodeToString(a[:31]) + "AAAA", strings.Repeat("\xff", 32),
		strings.Repeat("é", 16), string(a) + "\x00", hex.EncodeToString(a)[:63] + "g", "secret-" + strings.Repeat("k", 25),
	} {
		f.Add(s)
	}
	bnd := Binding{Owner: "o", Provider: "p", Purpose: PurposeAccessToken}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseKeyRing(s)
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		if err != nil {
			// The shape admits digits only where the value could show, so
			// matching it proves the message quotes none of the value.
			if msg := err.Error(); !keyErrorShape.MatchString(msg) {
				t.Fatalf("ParseKeyRing(%q): error %q is not a known shape (does it quote the value?)", s, msg)
			}
			return
		}
		ids := r.KeyIDs()
		if len(ids) != len(parts) || r.PrimaryKeyID() != ids[0] {
			t.Fatalf("ParseKeyRing(%q): %d keys (primary %s), %d parts", s, len(ids), r.PrimaryKeyID(), len(parts))
		}
		pt := []byte("refresh-token")
		ct, err := r.Seal(pt, bnd)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := KeyIDOf(ct); id != ids[0] {
			t.Fatalf("sealed under %s, primary is %s", id, ids[0])
		}
		for i, p := range parts {
			one, err := ParseKeyRing(p)
			if err != nil || one.PrimaryKeyID() != ids[i] {
				t.Fatalf("part %d alone: %v", i+1, err)
			}
			// Every key opens: what part i sealed alone, the ring opens.
			c, _ := one.Seal(pt, bnd)
			if got, err := r.Open(c, bnd); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("key %d does not open with the ring: %v", i+1, err)
			}
			if i == 0 {
				if got, err := one.Open(ct, bnd); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("primary key alone does not open the ring's ciphertext: %v", err)
				}
			}
		}
		if _, err := r.Open(ct, Binding{Owner: "o", Provider: "p", Purpose: PurposeRefreshToken}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("opened under another binding: %v", err)
		}
	})
}
