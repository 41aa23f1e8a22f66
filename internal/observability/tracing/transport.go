package tracing

import (
	"context"
	"errors"
	"net/http"
	"regexp"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Transport wraps base (nil: http.DefaultTransport) so that every outgoing
// request (to token providers, the login issuer, discovery documents) is a
// client span, child of the request or refresh that made it. Spans are
// named "HTTP {method} {host}"; the query string is removed from url.full
// and from error messages before they reach the span (otelhttp records the
// whole URL, and a URL's query may carry a code or a state). Only the W3C
// traceparent goes out to providers, never baggage.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(redactingProvider{}),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return "HTTP " + r.Method + " " + r.URL.Host
		}),
	)
}

// urlQuery matches the query (and fragment) of an absolute URL in text.
var urlQuery = regexp.MustCompile(`(?i)(\b[a-z][a-z0-9+.-]*://[^\s"'?#]*)[?#][^\s"']*`)

// RedactURLs removes the query string and fragment of every URL in s.
func RedactURLs(s string) string { return urlQuery.ReplaceAllString(s, "$1") }

// redactAttrs strips queries from string attributes and drops url.query.
func redactAttrs(kvs []attribute.KeyValue) []attribute.KeyValue {
	out := kvs[:0:0]
	for _, kv := range kvs {
		switch {
		case kv.Key == "url.query" || kv.Key == "http.target":
			continue
		case kv.Value.Type() == attribute.STRING:
			out = append(out, attribute.String(string(kv.Key), RedactURLs(kv.Value.AsString())))
		default:
			out = append(out, kv)
		}
	}
	return out
}

// redactingProvider hands otelhttp tracers that redact what it records; it
// resolves the global provider at each span, so Setup may run after
// Transport.
type redactingProvider struct{ embedded.TracerProvider }

func (redactingProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return redactingTracer{name: name, opts: opts}
}

type redactingTracer struct {
	embedded.Tracer
	name string
	opts []trace.TracerOption
}

func (t redactingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	if attrs := cfg.Attributes(); len(attrs) > 0 {
		opts = append(opts, trace.WithAttributes(redactAttrs(attrs)...))
	}
	ctx, span := otel.GetTracerProvider().Tracer(t.name, t.opts...).Start(ctx, RedactURLs(name), opts...)
	if !span.IsRecording() {
		return ctx, span
	}
	rs := redactingSpan{Span: span}
	return trace.ContextWithSpan(ctx, rs), rs
}

// redactingSpan passes everything to the real span, queries removed.
type redactingSpan struct{ trace.Span }

func (s redactingSpan) SetAttributes(kv ...attribute.KeyValue) {
	s.Span.SetAttributes(redactAttrs(kv)...)
}

func (s redactingSpan) SetStatus(code codes.Code, description string) {
	s.Span.SetStatus(code, RedactURLs(description))
}

func (s redactingSpan) SetName(name string) { s.Span.SetName(RedactURLs(name)) }

func (s redactingSpan) RecordError(err error, opts ...trace.EventOption) {
	if err != nil {
		err = errors.New(RedactURLs(err.Error()))
	}
	s.Span.RecordError(err, opts...)
}

func (s redactingSpan) AddEvent(name string, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.Span.AddEvent(name, trace.WithTimestamp(cfg.Timestamp()), trace.WithStackTrace(cfg.StackTrace()),
		trace.WithAttributes(redactAttrs(cfg.Attributes())...))
}
