package settings

import (
	"strings"
	"testing"
)

func TestTracingOffByDefault(t *testing.T) {
	s, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.TracingEndpoint != "" || s.TracingSampleRatio != 1 || s.TracingServiceName != "tokenstore" {
		t.Fatalf("tracing defaults: endpoint %q ratio %v name %q", s.TracingEndpoint, s.TracingSampleRatio, s.TracingServiceName)
	}
}

func TestTracingSettings(t *testing.T) {
	s, err := Load(nil, env(map[string]string{
		"TOKENSTORE_TRACING_ENDPOINT":     "http://otel-collector:4318",
		"TOKENSTORE_TRACING_SAMPLE_RATIO": "0.25",
		"TOKENSTORE_TRACING_SERVICE_NAME": "tokenstore-eu",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.TracingEndpoint != "http://otel-collector:4318" || s.TracingSampleRatio != 0.25 || s.TracingServiceName != "tokenstore-eu" {
		t.Fatalf("got %+v", s)
	}
}

func TestTracingBadValuesNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"TOKENSTORE_TRACING_SAMPLE_RATIO": "1.5"}, "TRACING_SAMPLE_RATIO (from $TOKENSTORE_TRACING_SAMPLE_RATIO): want a number from 0 to 1"},
		{map[string]string{"TOKENSTORE_TRACING_SAMPLE_RATIO": "half"}, "TRACING_SAMPLE_RATIO"},
		{map[string]string{"TOKENSTORE_TRACING_ENDPOINT": "otel-collector:4318"}, "TRACING_ENDPOINT: want an absolute http(s) URL"},
		{map[string]string{"TOKENSTORE_TRACING_ENDPOINT": "http://c:4318", "TOKENSTORE_TRACING_SERVICE_NAME": " "}, "TRACING_SERVICE_NAME"},
	} {
		_, err := Load(nil, env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error with %q, got %v", tc.env, tc.want, err)
		}
	}
}
