package providers

import (
	"fmt"
	"strings"
	"time"
)

// TokenEndpointFailingMessage is the Ready condition's message for a
// provider whose token endpoint is failing (reason TokenEndpointFailing),
// for both sources.
func TokenEndpointFailingMessage(f EndpointFailure) string {
	return fmt.Sprintf("the last %d refreshes at the token endpoint failed, since %s (last: %s); discovery answers, and access tokens still valid are served",
		f.Failures, f.Since.UTC().Format(time.RFC3339), f.Reason)
}

// ClientRejectedMessage is the Ready condition's message for a provider
// whose token endpoint refuses tokenstore's client (reason
// ClientRejected), for both sources. It names the grant and the
// provider's error code (one of a fixed list) and what to fix; it stays
// the same while the refusals go on, so that each one does not rewrite
// the status.
func ClientRejectedMessage(r ClientRejection) string {
	who := "people's tokens (refresh_token grant)"
	if r.Grant == GrantClientCredentials {
		who = "workloads' service tokens (client_credentials grant)"
	}
	return fmt.Sprintf("the token endpoint refused tokenstore's client for %s with %s, since %s: check clientID and the clientSecretRef "+
		"Secret, the scopes, and the client's registration at the provider (is it allowed this grant?); until then these requests "+
		"are answered with a permanent error (provider_rejected_client), not retried",
		who, r.Code, r.Since.UTC().Format(time.RFC3339))
}

// IDConflictMessage is the status message of a provider whose id is
// claimed by others too (their descriptions, e.g. from
// SourceWriter.Conflict).
func IDConflictMessage(id string, others []string) string {
	return fmt.Sprintf("provider id %q is also claimed by %s; provider ids must be unique across TokenProviders and the providers file, so neither is served until one of them changes its id (spec.id) or goes away",
		id, strings.Join(others, " and "))
}
