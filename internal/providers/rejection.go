package providers

import (
	"fmt"
	"net/http"

	"github.com/tokenstore/tokenstore/internal/fault"
)

// Grants tokenstore makes at a provider's token endpoint, as they are
// named on the wire and in a ClientRejection.
const (
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// clientRejectionCodes are the OAuth error codes (RFC 6749 §5.2; and
// unsupported_response_type, §4.1.2.1, which some token endpoints send) by
// which a token endpoint refuses tokenstore's client itself rather than
// the token it presented: the client id or secret, the grant type or the
// scopes configured for it. The same request cannot succeed until someone
// changes the TokenProvider or the client's registration at the provider,
// so retrying it is pointless and the person is not to blame.
// invalid_grant and invalid_request are not among them: they refuse the
// refresh token (the broker marks the credential for re-authorization).
var clientRejectionCodes = map[string]bool{
	"invalid_client":            true,
	"unauthorized_client":       true,
	"unsupported_grant_type":    true,
	"invalid_scope":             true,
	"unsupported_response_type": true,
}

// RejectsClient reports whether a token endpoint's error answer, its HTTP
// status and OAuth error code, refuses tokenstore's client. A 5xx or 429
// never does, whatever code it carries: the provider is failing or busy,
// and that passes.
func RejectsClient(status int, code string) bool {
	return status < http.StatusInternalServerError && status != http.StatusTooManyRequests && clientRejectionCodes[code]
}

// ClientRejectedError says that provider's token endpoint refused
// tokenstore's client for grant (RejectsClient). Code is one of a fixed
// list, never text the provider chose, so it may be shown to anyone; the
// provider's error_description is not kept (it may echo a secret).
type ClientRejectedError struct {
	Provider string
	Grant    string
	Status   int
	Code     string
}

func (e *ClientRejectedError) Error() string {
	return fmt.Sprintf("provider %s refused tokenstore's client for the %s grant: %d %s", e.Provider, e.Grant, e.Status, e.Code)
}

// ReasonClientRejected is the code of a provider's refusal of tokenstore's
// client: the REST answer's error, the token exchange's reason.
const ReasonClientRejected = "provider_rejected_client"

// Fault is a 400 and RFC 8693's invalid_target (tokenstore cannot issue a
// token for that target), not a 503 that clients retry, and not
// reauthorization_required: linking again fails the same way, whoever
// asked, until the TokenProvider's client settings or the client's
// registration at the provider are fixed. The message names the provider
// and its code (one of a fixed list), never what else the provider said.
func (e *ClientRejectedError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusBadRequest, Code: ReasonClientRejected, OAuth: "invalid_target", Provider: e.Provider, Err: e,
		Message: "Provider " + e.Provider + " refused tokenstore's client for the " + e.Grant + " grant (" + fault.SafeCode(e.Code) +
			"); the stored authorization is intact, and linking again will not help: the TokenProvider's client settings " +
			"or the client's registration at the provider must be fixed."}
}
