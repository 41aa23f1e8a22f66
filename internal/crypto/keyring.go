// Package crypto seals tokens at rest with AES-256-GCM.
//
// Keys come as the Flask service's CRYPTOKEY: a comma-separated list of 32-byte keys,
// each given raw (32 characters), base64 (standard or URL alphabet, padded or
// not: 43 or 44 characters) or hex (64 characters). The first key seals; every
// key opens, so keys can be rotated without downtime.
//
// A ciphertext is: version (1 byte) | key id (4 bytes) | nonce (12 bytes) |
// AES-GCM sealed data. The additional data binds it to its owner, provider
// and purpose, so a ciphertext copied into another row, or from the refresh
// token column into the access token column, fails to open.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const (
	// KeySize is the size of every key: AES-256.
	KeySize   = 32
	version   = 1
	idSize    = 4
	nonceSize = 12
	// Overhead is how many bytes sealing adds to a plaintext.
	Overhead = 1 + idSize + nonceSize + 16
)

var (
	// ErrUnknownKey means the ciphertext names a key that is not in the ring.
	ErrUnknownKey = errors.New("sealed with a key that is not in CRYPTOKEY")
	// ErrCorrupt means the ciphertext is damaged, truncated, or bound to
	// another owner, provider or purpose.
	ErrCorrupt = errors.New("ciphertext is corrupt or belongs to another record")
)

// Purpose says what a ciphertext holds; it is part of the additional data.
type Purpose string

const (
	PurposeRefreshToken Purpose = "refresh_token"
	PurposeAccessToken  Purpose = "access_token"
	PurposePKCEVerifier Purpose = "pkce_verifier"
)

// Binding is what a ciphertext is bound to.
type Binding struct {
	Owner    string
	Provider string
	Purpose  Purpose
}

// additionalData length-prefixes each part so that ("ab","c") and ("a","bc")
// never give the same bytes.
// It is made with one allocation of the exact size: it is built for every
// Open, so on the token hot path.
func (b Binding) additionalData() []byte {
	parts := [...]string{"tokenstore/v1", b.Owner, b.Provider, string(b.Purpose)}
	n := 0
	for _, p := range parts {
		n += 4 + len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out
}

type key struct {
	id   [idSize]byte
	aead cipher.AEAD
	raw  []byte
}

// KeyRing holds the keys of CRYPTOKEY. It is safe for concurrent use.
type KeyRing struct {
	keys []key
}

// Derive returns a ring of subkeys for one use (purpose names it): each key
// of r gives one by HKDF-SHA256, in the same order, so the derived ring
// seals with the subkey of CRYPTOKEY's first key and opens with any. A
// subkey reveals nothing of its key, and data sealed under one use cannot
// be opened as another's, whatever its binding says.
func (r *KeyRing) Derive(purpose string) (*KeyRing, error) {
	raw := make([][]byte, len(r.keys))
	for i, k := range r.keys {
		sub, err := hkdf.Key(sha256.New, k.raw, nil, "tokenstore subkey\x00"+purpose, KeySize)
		if err != nil {
			return nil, fmt.Errorf("crypto: deriving a %s key: %w", purpose, err)
		}
		raw[i] = sub
	}
	return NewKeyRing(raw...)
}

// ParseKeyRing reads a CRYPTOKEY value. Errors say which key is wrong and
// how, never what it holds.
func ParseKeyRing(s string) (*KeyRing, error) {
	var raw [][]byte
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, err := decodeKey(part)
		if err != nil {
			return nil, fmt.Errorf("CRYPTOKEY: key %d: %w", i+1, err)
		}
		raw = append(raw, k)
	}
	if len(raw) == 0 {
		return nil, errors.New("CRYPTOKEY: no key given; generate one with `tokenstore keys generate`")
	}
	return NewKeyRing(raw...)
}

// NewKeyRing builds a ring from raw 32-byte keys; the first one seals.
func NewKeyRing(raw ...[]byte) (*KeyRing, error) {
	r := &KeyRing{}
	seen := map[[idSize]byte]bool{}
	for i, k := range raw {
		if len(k) != KeySize {
			return nil, fmt.Errorf("CRYPTOKEY: key %d: %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("CRYPTOKEY: key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("CRYPTOKEY: key %d: %w", i+1, err)
		}
		id := keyID(k)
		if seen[id] {
			return nil, fmt.Errorf("CRYPTOKEY: key %d is listed twice", i+1)
		}
		seen[id] = true
		r.keys = append(r.keys, key{id: id, aead: aead, raw: slices.Clone(k)})
	}
	if len(r.keys) == 0 {
		return nil, errors.New("CRYPTOKEY: no key given")
	}
	return r, nil
}

func decodeKey(s string) ([]byte, error) {
	switch len(s) {
	case KeySize:
		return []byte(s), nil
	case 64:
		k, err := hex.DecodeString(s)
		if err != nil {
			return nil, errors.New("64 characters but not hex")
		}
		return k, nil
	case 43, 44:
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
				return k, nil
			}
		}
		return nil, fmt.Errorf("%d characters but not base64 of 32 bytes", len(s))
	}
	return nil, fmt.Errorf("%d characters; want 32 raw bytes, 44 (or 43) base64 characters, or 64 hex characters", len(s))
}

// keyID names a key without revealing it: a hash of a 256-bit random key
// gives nothing away, and 4 bytes tell a handful of keys apart.
func keyID(k []byte) [idSize]byte {
	sum := sha256.Sum256(append([]byte("tokenstore key id\x00"), k...))
	var id [idSize]byte
	copy(id[:], sum[:idSize])
	return id
}

// PrimaryKeyID is the id of the key that seals, as stored in KeyID columns.
func (r *KeyRing) PrimaryKeyID() string { return hex.EncodeToString(r.keys[0].id[:]) }

// KeyIDs lists every key's id, the sealing key first.
func (r *KeyRing) KeyIDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = hex.EncodeToString(k.id[:])
	}
	return ids
}

// Seal encrypts plaintext under the first key, bound to b.
func (r *KeyRing) Seal(plaintext []byte, b Binding) ([]byte, error) {
	k := r.keys[0]
	out := make([]byte, 1+idSize+nonceSize, Overhead+len(plaintext))
	out[0] = version
	copy(out[1:], k.id[:])
	if _, err := rand.Read(out[1+idSize:]); err != nil {
		return nil, fmt.Errorf("crypto: nonce: %w", err)
	}
	return k.aead.Seal(out, out[1+idSize:], plaintext, b.additionalData()), nil
}

// Open decrypts a ciphertext made by Seal with any key of the ring, checking
// that it is bound to b.
func (r *KeyRing) Open(ciphertext []byte, b Binding) ([]byte, error) {
	if len(ciphertext) < Overhead {
		return nil, fmt.Errorf("crypto: open: %w (too short)", ErrCorrupt)
	}
	if ciphertext[0] != version {
		return nil, fmt.Errorf("crypto: open: %w (unknown format version %d)", ErrCorrupt, ciphertext[0])
	}
	id := ciphertext[1 : 1+idSize]
	for _, k := range r.keys {
		if string(k.id[:]) != string(id) {
			continue
		}
		nonce := ciphertext[1+idSize : 1+idSize+nonceSize]
		pt, err := k.aead.Open(nil, nonce, ciphertext[1+idSize+nonceSize:], b.additionalData())
		if err != nil {
			return nil, fmt.Errorf("crypto: open: %w", ErrCorrupt)
		}
		return pt, nil
	}
	return nil, fmt.Errorf("crypto: open: %w (key id %s)", ErrUnknownKey, hex.EncodeToString(id))
}

// KeyIDOf returns the id of the key a ciphertext names, without opening it.
func KeyIDOf(ciphertext []byte) (string, error) {
	if len(ciphertext) < Overhead || ciphertext[0] != version {
		return "", ErrCorrupt
	}
	return hex.EncodeToString(ciphertext[1 : 1+idSize]), nil
}

// GenerateKey returns a new random key, base64 encoded (URL alphabet, as
// Fernet keys are, so the same value works for both).
func GenerateKey() (string, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("crypto: generate key: %w", err)
	}
	return base64.URLEncoding.EncodeToString(k), nil
}
