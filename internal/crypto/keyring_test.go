package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

var (
	rawA = bytes.Repeat([]byte{'a'}, 32)
	rawB = []byte("0123456789abcdef0123456789abcdef")
	bind = Binding{Owner: "alice", Provider: "github", Purpose: PurposeRefreshToken}
)

func TestParseKeyRingFormats(t *testing.T) {
	for name, in := range map[string]string{
		"raw":        string(rawA),
		"base64":     base64.StdEncoding.EncodeToString(rawA),
		"base64url":  base64.URLEncoding.EncodeToString(rawA),
		"raw base64": base64.RawStdEncoding.EncodeToString(rawA),
		"hex":        hex.EncodeToString(rawA),
		"padded":     "  " + hex.EncodeToString(rawA) + " , ",
	} {
		r, err := ParseKeyRing(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ref, _ := NewKeyRing(rawA)
		if r.PrimaryKeyID() != ref.PrimaryKeyID() {
			t.Errorf("%s: decoded to a different key", name)
		}
	}
}

func TestParseKeyRingErrorsSayWhichKeyAndNeverTheKey(t *testing.T) {
	secret := hex.EncodeToString(rawA)
	for in, want := range map[string]string{
		"":                         "no key given",
		secret + "," + secret[:63]: "key 2: 63 characters",
		strings.Repeat("z", 64):    "key 1: 64 characters but not hex",
		secret + "," + secret:      "key 2 is listed twice",
		strings.Repeat("!", 44):    "not base64",
	} {
		_, err := ParseKeyRing(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeyRing(%q) = %v, want %q", in, err, want)
			continue
		}
		if strings.Contains(err.Error(), secret[:20]) {
			t.Errorf("error reveals key material: %v", err)
		}
	}
}

func TestSealOpenRoundTripAndRotation(t *testing.T) {
	old, _ := NewKeyRing(rawA)
	ct, err := old.Seal([]byte("refresh-token-value"), bind)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("refresh-token-value")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	// New key first, old key still listed: old ciphertexts open, new ones use the new key.
	ring, _ := NewKeyRing(rawB, rawA)
	pt, err := ring.Open(ct, bind)
	if err != nil || string(pt) != "refresh-token-value" {
		t.Fatalf("open with rotated ring: %q %v", pt, err)
	}
	id, _ := KeyIDOf(ct)
	if id != old.PrimaryKeyID() || id == ring.PrimaryKeyID() {
		t.Fatalf("ciphertext names key %s", id)
	}
	ct2, _ := ring.Seal(pt, bind)
	if id2, _ := KeyIDOf(ct2); id2 != ring.PrimaryKeyID() {
		t.Fatalf("new ciphertext under %s, want primary", id2)
	}
	// Two seals of the same plaintext differ (random nonce).
	ct3, _ := ring.Seal(pt, bind)
	if bytes.Equal(ct2, ct3) {
		t.Fatal("nonce reuse")
	}
}

func TestOpenRefusesMovedCorruptAndUnknown(t *testing.T) {
	ring, _ := NewKeyRing(rawA)
	ct, _ := ring.Seal([]byte("tok"), bind)
	for name, b := range map[string]Binding{
		"other owner":    {Owner: "bob", Provider: "github", Purpose: PurposeRefreshToken},
		"other provider": {Owner: "alice", Provider: "google", Purpose: PurposeRefreshToken},
		"other purpose":  {Owner: "alice", Provider: "github", Purpose: PurposeAccessToken},
		"shifted parts":  {Owner: "alicegithub", Provider: "", Purpose: PurposeRefreshToken},
	} {
		if _, err := ring.Open(ct, b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: want ErrCorrupt, got %v", name, err)
		}
	}
	flipped := bytes.Clone(ct)
	flipped[len(flipped)-1] ^= 1
	if _, err := ring.Open(flipped, bind); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bit flip: %v", err)
	}
	if _, err := ring.Open(ct[:10], bind); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
	other, _ := NewKeyRing(rawB)
	if _, err := other.Open(ct, bind); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
}

func TestGenerateKeyParses(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyRing(k); err != nil {
		t.Fatalf("generated key does not parse: %v", err)
	}
}

// FuzzOpen: no input makes Open panic, and only real ciphertexts open.
func FuzzOpen(f *testing.F) {
	ring, _ := NewKeyRing(rawA)
	ct, _ := ring.Seal([]byte("x"), bind)
	f.Add(ct)
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		pt, err := ring.Open(data, bind)
		if err == nil && !bytes.Equal(data, ct) && string(pt) != "x" {
			t.Fatalf("forged ciphertext opened: %q", pt)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	ring, _ := NewKeyRing(rawA)
	pt := bytes.Repeat([]byte("t"), 1024)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := ring.Seal(pt, bind); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	ring, _ := NewKeyRing(rawA)
	pt := bytes.Repeat([]byte("t"), 1024)
	ct, _ := ring.Seal(pt, bind)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := ring.Open(ct, bind); err != nil {
			b.Fatal(err)
		}
	}
}
