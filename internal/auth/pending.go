package auth

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
)

// A login in progress is kept in the browser, not in the store: its state,
// nonce, PKCE verifier, return URL and expiry are sealed (AES-256-GCM under
// a subkey of CRYPTOKEY kept for this use alone) into the login cookie. An
// anonymous GET /api/oidc/login therefore writes nothing durable.
//
// Without storage a pending login cannot be spent server-side; what stands
// in for that: the callback's state must equal the sealed one, the cookie
// is cleared by the callback, the authorization code is single-use at the
// issuer, and the sealed expiry bounds any replay of a captured cookie and
// callback URL to pendingLifetime.

// loginSealPurpose names the subkey and the binding of sealed logins.
const loginSealPurpose = "login_pending"

var loginBindingAD = crypto.Binding{Owner: "login", Provider: LoginProvider, Purpose: loginSealPurpose}

// pendingLogin is what the login cookie holds.
type pendingLogin struct {
	State   string
	Expires time.Time
	Pending Pending
}

const pendingVersion = 1

// encode lays the fields out as version | expiry (unix seconds, 8 bytes) |
// four length-prefixed strings (uint16): compact, so that a return URL of
// MaxReturnURL bytes still fits a cookie (JSON would escape & and <).
func (p pendingLogin) encode() []byte {
	fields := [...]string{p.State, p.Pending.Nonce, p.Pending.Verifier, p.Pending.ReturnURL}
	n := 1 + 8
	for _, f := range fields {
		n += 2 + len(f)
	}
	out := make([]byte, 0, n)
	out = append(out, pendingVersion)
	out = binary.BigEndian.AppendUint64(out, uint64(p.Expires.Unix()))
	for _, f := range fields {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	return out
}

var errBadPending = errors.New("malformed pending login")

func decodePending(b []byte) (pendingLogin, error) {
	if len(b) < 9 || b[0] != pendingVersion {
		return pendingLogin{}, errBadPending
	}
	exp := int64(binary.BigEndian.Uint64(b[1:9]))
	b = b[9:]
	var fields [4]string
	for i := range fields {
		if len(b) < 2 {
			return pendingLogin{}, errBadPending
		}
		l := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < l {
			return pendingLogin{}, errBadPending
		}
		fields[i], b = string(b[:l]), b[l:]
	}
	if len(b) != 0 {
		return pendingLogin{}, errBadPending
	}
	return pendingLogin{State: fields[0], Expires: time.Unix(exp, 0),
		Pending: Pending{Nonce: fields[1], Verifier: fields[2], ReturnURL: fields[3]}}, nil
}

// sealLogin makes the login cookie's value.
func (a *Authenticator) sealLogin(p pendingLogin) (string, error) {
	if len(p.Pending.ReturnURL) > 0xffff {
		return "", ErrBadReturnURL
	}
	sealed, err := a.loginKeys.Seal(p.encode(), loginBindingAD)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

// openLogin reads the login cookie and checks it against the callback's
// state: ErrInvalidState when it is missing, tampered with, sealed by a key
// no longer in CRYPTOKEY, expired, or for another state.
func (a *Authenticator) openLogin(cookie, state string) (Pending, error) {
	if cookie == "" || state == "" {
		return Pending{}, ErrInvalidState
	}
	raw, err := base64.RawURLEncoding.DecodeString(cookie)
	if err != nil {
		return Pending{}, ErrInvalidState
	}
	pt, err := a.loginKeys.Open(raw, loginBindingAD)
	if err != nil {
		return Pending{}, ErrInvalidState
	}
	p, err := decodePending(pt)
	if err != nil {
		return Pending{}, ErrInvalidState
	}
	if !a.opt.Now().Before(p.Expires) || subtle.ConstantTimeCompare([]byte(p.State), []byte(state)) != 1 {
		return Pending{}, ErrInvalidState
	}
	return p.Pending, nil
}
