package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenstore/tokenstore/internal/observability/tracing"
)

// startTracedInstance starts one more instance whose provider calls go
// through tracing.Transport, as cmd builds it when tracing is on.
func (e *env) startTracedInstance() *instance {
	return e.serve(nil, Options{HTTPClient: &http.Client{Timeout: 20 * time.Second, Transport: tracing.Transport(http.DefaultTransport)}}, nil)
}

// TestTracing: with a provider installed, a token request that refreshes
// is one trace: the server span named by its route, the database queries
// (named by sqlc) and the call to the provider below it; and no span of
// the whole flow carries a token, code, state, cookie or query string.
func TestTracing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})

	e := newEnv(t)
	b := e.browser()
	b.loginAt(e.instances[0], "")
	user := b.whoami(e.instances[0])
	b.link(e.instances[0], "alpha")
	e.credential(user, "alpha")
	in := e.startTracedInstance()
	e.expire(user, "alpha")
	before := e.providers["alpha"].refresh.Load()

	r := b.do(http.MethodGet, in.url+"/api/v1.0/alpha/token?min_valid=61", map[string]string{"X-Request-Id": "trace-req-1"})
	if r.status != http.StatusOK {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	var ta tokenAnswer
	r.json(t, &ta)
	e.see("access_token", ta.AccessToken)
	if n := e.providers["alpha"].refresh.Load() - before; n != 1 {
		t.Fatalf("want one refresh at the provider, got %d", n)
	}
	e.credential(user, "alpha") // the rotated refresh token, as seen

	spans := exp.GetSpans()
	var server *tracetest.SpanStub
	for i, s := range spans {
		if s.SpanKind == trace.SpanKindServer && attr(s, "request_id") == "trace-req-1" {
			server = &spans[i]
		}
	}
	if server == nil {
		t.Fatalf("no server span for the token request among %d spans", len(spans))
	}
	if server.Name != "GET /api/v1.0/:provider/token" || attr(*server, "http.route") != "/api/v1.0/:provider/token" ||
		attr(*server, "http.request.method") != "GET" || attr(*server, "http.response.status_code") != "200" {
		t.Errorf("server span: %s %v", server.Name, server.Attributes)
	}
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	under := func(s tracetest.SpanStub) bool {
		for p := s.Parent; p.IsValid(); p = byID[p.SpanID()].Parent {
			if p.SpanID() == server.SpanContext.SpanID() {
				return true
			}
			if _, ok := byID[p.SpanID()]; !ok {
				return false
			}
		}
		return false
	}
	var dbNames []string
	var providerCall bool
	for _, s := range spans {
		if s.SpanContext.TraceID() != server.SpanContext.TraceID() || !under(s) {
			continue
		}
		switch {
		case attr(s, "db.system.name") == "postgresql":
			dbNames = append(dbNames, s.Name)
		case s.SpanKind == trace.SpanKindClient && strings.HasPrefix(s.Name, "HTTP POST "):
			providerCall = attr(s, "http.response.status_code") == "200"
		}
	}
	if !providerCall {
		t.Error("no client span for the refresh at the provider in the request's trace")
	}
	named := false
	for _, n := range dbNames {
		named = named || strings.HasPrefix(n, "Credential")
	}
	if !named {
		t.Errorf("no database span named by a sqlc query in the request's trace: %v", dbNames)
	}

	// Nothing secret in any span of the flow (login, link, refresh).
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	if len(e.seen) < 5 {
		t.Fatalf("the test saw too few secrets to check: %d", len(e.seen))
	}
	for _, s := range spans {
		for _, text := range spanText(s) {
			for v, kind := range e.seen {
				if len(v) >= 8 && strings.Contains(text, v) {
					t.Errorf("span %q carries a %s: %s", s.Name, kind, text)
				}
			}
			if strings.Contains(text, "min_valid") || strings.Contains(text, "?") {
				t.Errorf("span %q carries a query string: %s", s.Name, text)
			}
		}
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// spanText is every string a span would export.
func spanText(s tracetest.SpanStub) []string {
	out := []string{s.Name, s.Status.Description}
	for _, kv := range s.Attributes {
		out = append(out, string(kv.Key)+"="+kv.Value.String())
	}
	for _, ev := range s.Events {
		out = append(out, ev.Name)
		for _, kv := range ev.Attributes {
			out = append(out, string(kv.Key)+"="+kv.Value.String())
		}
	}
	for _, l := range s.Links {
		for _, kv := range l.Attributes {
			out = append(out, string(kv.Key)+"="+kv.Value.String())
		}
	}
	return out
}
