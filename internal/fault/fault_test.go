package fault_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/tokenstore/tokenstore/internal/fault"
)

var errNotLinked = &fault.Error{Status: http.StatusBadRequest, Code: "not_linked", OAuth: "invalid_grant", Relink: true, Message: "No account."}

type refusal struct{ code string }

func (r *refusal) Error() string { return "refused: " + r.code }
func (r *refusal) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusConflict, Code: "reauthorization_required", OAuth: "invalid_grant", Message: "Link again (" + fault.SafeCode(r.code) + ")."}
}

func TestAsFindsErrorsAndFaultersThroughWrapping(t *testing.T) {
	wrapped := fmt.Errorf("token for alice: %w", errNotLinked.For("github"))
	fe := fault.As(wrapped)
	if fe == nil || fe.Code != "not_linked" || fe.Provider != "github" || fe.Status != http.StatusBadRequest {
		t.Fatalf("As(wrapped sentinel) = %+v", fe)
	}
	if !errors.Is(wrapped, errNotLinked) {
		t.Fatal("a copy made with For no longer matches its sentinel with errors.Is")
	}
	if errNotLinked.Provider != "" {
		t.Fatal("For changed the sentinel itself")
	}
	fe = fault.As(fmt.Errorf("refresh: %w", &refusal{code: "invalid_grant"}))
	if fe == nil || fe.Code != "reauthorization_required" || fe.Message != "Link again (invalid_grant)." {
		t.Fatalf("As(wrapped Faulter) = %+v", fe)
	}
	if fault.As(errors.New("disk full")) != nil {
		t.Fatal("As answered for an error that is not a refusal")
	}
}

func TestOAuthRendering(t *testing.T) {
	cases := []struct {
		err    *fault.Error
		code   string
		status int
	}{
		{errNotLinked, "invalid_grant", http.StatusBadRequest},
		{&fault.Error{Status: http.StatusBadGateway}, "temporarily_unavailable", http.StatusServiceUnavailable},
		{&fault.Error{Status: http.StatusServiceUnavailable}, "temporarily_unavailable", http.StatusServiceUnavailable},
		{fault.Internal, "server_error", http.StatusInternalServerError},
		{&fault.Error{Status: http.StatusForbidden, OAuth: "unauthorized_client"}, "unauthorized_client", http.StatusForbidden},
		{&fault.Error{Status: http.StatusUnauthorized, OAuth: "invalid_request", OAuthStatus: http.StatusUnauthorized}, "invalid_request", http.StatusUnauthorized},
		{&fault.Error{Status: http.StatusNotFound}, "invalid_request", http.StatusBadRequest},
	}
	for _, c := range cases {
		if got, st := c.err.OAuthCode(), c.err.OAuthHTTPStatus(); got != c.code || st != c.status {
			t.Errorf("%+v: OAuth answer %d %s, want %d %s", c.err, st, got, c.status, c.code)
		}
	}
}

func TestErrorKeepsCauseOutOfTheAnswerButInTheLog(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:443: connection refused")
	fe := (&fault.Error{Status: http.StatusBadGateway, Code: "provider_unavailable", Message: "Try again."}).Because(cause)
	if !errors.Is(fe, cause) || fe.Message != "Try again." {
		t.Fatalf("Because: %+v", fe)
	}
	if got := fe.Error(); got != "provider_unavailable: Try again.: "+cause.Error() {
		t.Fatalf("Error() = %q", got)
	}
}

func TestSafeCode(t *testing.T) {
	for in, want := range map[string]string{
		"invalid_grant":                 "invalid_grant",
		"":                              "error",
		"<script>":                      "script",
		"a b\r\nc":                      "abc",
		string(make([]byte, 100)) + "x": "x",
	} {
		if got := fault.SafeCode(in); got != want {
			t.Errorf("SafeCode(%q) = %q, want %q", in, got, want)
		}
	}
	long := ""
	for range 100 {
		long += "a"
	}
	if got := fault.SafeCode(long); len(got) != 64 {
		t.Errorf("SafeCode kept %d characters of 100, want 64", len(got))
	}
}
