package settings

import (
	"strings"
	"testing"
	"time"
)

// TestHTTPHardeningSettings: the listener timeouts, rate limits and the
// metrics listener default to what docs/security.md says, and values that
// would undo them are refused.
func TestHTTPHardeningSettings(t *testing.T) {
	s, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.MetricsAddress != ":9090" || s.HTTPReadTimeout != 30*time.Second || s.HTTPWriteTimeout != time.Minute ||
		s.HTTPIdleTimeout != 2*time.Minute || s.RateLimitPerAddress != 600 || s.RateLimitPerPrincipal != 6000 || s.RateLimitBurst != 100 {
		t.Fatalf("defaults: %+v", s)
	}
	if s, err := Load(nil, env(map[string]string{"TOKENSTORE_METRICS_ADDRESS": "", "TOKENSTORE_RATE_LIMIT_PER_ADDRESS": "0"})); err != nil ||
		s.MetricsAddress != "" || s.RateLimitPerAddress != 0 {
		t.Fatalf("metrics off, address limit off: %v %+v", err, s)
	}
	_, err = Load(nil, env(map[string]string{
		"TOKENSTORE_METRICS_ADDRESS":          ":8080",
		"TOKENSTORE_HTTP_READ_TIMEOUT":        "0",
		"TOKENSTORE_RATE_LIMIT_PER_PRINCIPAL": "-1",
		"TOKENSTORE_RATE_LIMIT_BURST":         "0",
	}))
	if err == nil {
		t.Fatal("accepted metrics on the API's address, no read timeout, a negative rate and no burst")
	}
	for _, want := range []string{"METRICS_ADDRESS: must differ from LISTEN_ADDRESS", "HTTP_READ_TIMEOUT: must be above 0",
		"RATE_LIMIT_PER_PRINCIPAL (from $TOKENSTORE_RATE_LIMIT_PER_PRINCIPAL): want a whole number", "RATE_LIMIT_BURST: must be 1 or more"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
