package providers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"strconv"
)

// fingerprintKey keys the Version hash. Version covers the client secret so
// that a rotated secret yields a new version; keying the hash with a random
// per-process key makes a logged version useless for guessing a weak secret.
// Versions are compared only within one process, so they need not agree
// across replicas.
var fingerprintKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("providers: no randomness for the fingerprint key: " + err.Error())
	}
	return k
}()

// Fingerprint returns a short string that changes whenever any configuration
// field of p changes. Derived values (Verifier, OIDC), Version itself and
// DiscoveredAt are left out, so that re-fetching an unchanged discovery
// document does not make a new version.
func Fingerprint(p *Provider) string {
	h := hmac.New(sha256.New, fingerprintKey)
	f := fingerprinter{h: h}
	f.str(p.ID, p.Source, p.ClientID, p.ClientSecret, p.AuthMethod)
	f.str(p.Endpoint.AuthURL, p.Endpoint.TokenURL, p.Endpoint.DeviceAuthURL, strconv.Itoa(int(p.Endpoint.AuthStyle)))
	f.str(p.RevocationURL, p.UserinfoURL, p.JWKSURL, p.Issuer)
	f.list(p.Scopes)
	keys := make([]string, 0, len(p.AuthorizationParams))
	for k := range p.AuthorizationParams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	f.list(keys)
	for _, k := range keys {
		f.str(p.AuthorizationParams[k])
	}
	f.str(p.PKCE, p.Metadata.Name, p.Metadata.Description, p.Metadata.URL, p.Metadata.Icon, p.Metadata.Logo)
	f.n(len(p.ServiceAccounts))
	for _, sa := range p.ServiceAccounts {
		f.str(sa.Namespace, sa.Name)
	}
	f.list(p.ServiceScopes)
	f.n(int(p.RefreshIdleTimeout))
	if p.RequireSameSubject {
		f.n(1)
	} else {
		f.n(0)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// fingerprinter writes length-prefixed fields so that no two different
// field sequences hash the same input.
type fingerprinter struct{ h hash.Hash }

func (f fingerprinter) n(v int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	f.h.Write(b[:])
}

func (f fingerprinter) str(ss ...string) {
	for _, s := range ss {
		f.n(len(s))
		f.h.Write([]byte(s))
	}
}

func (f fingerprinter) list(ss []string) {
	f.n(len(ss))
	f.str(ss...)
}
