package tracing

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// keepGlobals restores OpenTelemetry's globals after a test changed them.
func keepGlobals(t *testing.T) {
	tp, prop := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTracerProvider(tp); otel.SetTextMapPropagator(prop) })
}

func TestSetupWithoutEndpointInstallsNothing(t *testing.T) {
	keepGlobals(t)
	before, beforeProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	shutdown, err := Setup(context.Background(), &settings.Settings{TracingSampleRatio: 1, TracingServiceName: "tokenstore"}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := otel.GetTracerProvider(); after != before {
		t.Fatalf("a tracer provider was installed: %T", after)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatal("the SDK provider is installed")
	}
	if otel.GetTextMapPropagator() != beforeProp {
		t.Fatal("propagators were installed")
	}
	_, span := otel.Tracer("x").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("spans are recorded with tracing off")
	}
	span.End()
}

func TestExporterURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://otel-collector:4318":              "http://otel-collector:4318/v1/traces",
		"http://otel-collector:4318/":             "http://otel-collector:4318/v1/traces",
		"https://otlp.example.com/otlp/v1/traces": "https://otlp.example.com/otlp/v1/traces",
	} {
		if got := ExporterURL(in); got != want {
			t.Errorf("ExporterURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSetupExportsOverOTLPHTTP runs Setup against an OTLP/HTTP receiver
// (an HTTP handler decoding the protobuf export request, as a collector
// does) and checks the span, its resource and the path it was posted to.
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	keepGlobals(t)
	var (
		mu   sync.Mutex
		got  []*coltrace.ExportTraceServiceRequest
		path string
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &coltrace.ExportTraceServiceRequest{}
		if r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got, path = append(got, req), r.URL.Path
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer recv.Close()

	s := &settings.Settings{TracingEndpoint: recv.URL, TracingSampleRatio: 1, TracingServiceName: "tokenstore-test"}
	shutdown, err := Setup(context.Background(), s, "v9.9.9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); !ok {
		t.Fatalf("provider is %T", otel.GetTracerProvider())
	}
	_, span := otel.Tracer(Scope).Start(context.Background(), "GET /api/whoami")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown (flush): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 {
		t.Fatal("the receiver got nothing")
	}
	if path != "/v1/traces" {
		t.Errorf("posted to %q, want /v1/traces", path)
	}
	rs := got[0].ResourceSpans[0]
	res := map[string]string{}
	for _, kv := range rs.Resource.Attributes {
		res[kv.Key] = kv.Value.GetStringValue()
	}
	if res["service.name"] != "tokenstore-test" || res["service.version"] != "v9.9.9" {
		t.Errorf("resource: %v", res)
	}
	if n := rs.ScopeSpans[0].Spans[0].Name; n != "GET /api/whoami" {
		t.Errorf("span name %q", n)
	}
	// W3C trace context and baggage are the propagators.
	fields := strings.Join(otel.GetTextMapPropagator().Fields(), ",")
	if !strings.Contains(fields, "traceparent") || !strings.Contains(fields, "baggage") {
		t.Errorf("propagator fields: %s", fields)
	}
}

func TestSampler(t *testing.T) {
	if d := Sampler(0).Description(); !strings.Contains(d, "ParentBased") {
		t.Errorf("sampler %s is not parent-based", d)
	}
}

// TestTransportRedactsQueries calls a server through Transport with a
// query and a failing request, and checks no span keeps the query.
func TestTransportRedactsQueries(t *testing.T) {
	keepGlobals(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	var traceparent, baggage string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceparent, baggage = r.Header.Get("Traceparent"), r.Header.Get("Baggage")
		_, _ = io.WriteString(w, "{}")
	}))
	defer srv.Close()
	client := &http.Client{Transport: Transport(nil)}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "parent")
	resp, err := client.Get(srv.URL + "/userinfo?code=SECRETCODE&state=SECRETSTATE")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:1/token?code=SECRETCODE2", nil)
	if _, err := client.Do(req); err == nil {
		t.Fatal("want a connection error")
	}
	parent.End()
	if traceparent == "" || baggage != "" {
		t.Errorf("traceparent %q baggage %q: want traceparent only", traceparent, baggage)
	}

	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("want 3 spans, got %d", len(spans))
	}
	var client2 trace.SpanKind
	for _, s := range spans {
		if s.Name == "HTTP POST 127.0.0.1:1" {
			client2 = s.SpanKind
			if s.Parent.SpanID() != parent.SpanContext().SpanID() {
				t.Error("client span is not the caller's child")
			}
		}
		for _, text := range spanText(s) {
			if strings.Contains(text, "SECRET") {
				t.Errorf("span %q carries a query: %s", s.Name, text)
			}
		}
	}
	if client2 != trace.SpanKindClient {
		t.Errorf("no client span for the failed POST: %v", spans)
	}
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
	return out
}

func TestRedactURLs(t *testing.T) {
	in := `Post "https://idp.example/token?code=abc&state=def": dial tcp: refused; see http://x/y#frag`
	want := `Post "https://idp.example/token": dial tcp: refused; see http://x/y`
	if got := RedactURLs(in); got != want {
		t.Errorf("got %q", got)
	}
	if err := errors.New(RedactURLs("no url here?x=1")); err.Error() != "no url here?x=1" {
		t.Errorf("text without URL changed: %v", err)
	}
}
