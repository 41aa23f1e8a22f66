// Package tracing sets up optional OpenTelemetry tracing: with
// TRACING_ENDPOINT set, spans of the HTTP handler, the database and the calls
// to providers are exported over OTLP/HTTP; without it nothing is installed
// and the instrumentation talks to OpenTelemetry's global no-op provider.
//
// Spans never carry a token, an authorization code, a state, a query string
// or a header: the HTTP middleware names spans by route template, database
// spans by sqlc query name (see pgtrace), and provider calls go through
// Transport, which strips query strings from whatever otelhttp records.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// Scope is the instrumentation scope of tokenstore's own spans.
const Scope = "github.com/tokenstore/tokenstore"

// untraced is OpenTelemetry's global TracerProvider before anyone installs
// one (Setup does, when TRACING_ENDPOINT is set; tests install their own).
var untraced = otel.GetTracerProvider()

// Installed reports whether a TracerProvider was installed. Without one
// every span is a no-op, and tokenstore's instrumentation (the request
// middleware, pgtrace, sqltrace) makes none: a no-op span still costs a
// context, a tracer lookup and an allocation or two per request or query.
func Installed() bool { return otel.GetTracerProvider() != untraced }

// Enabled reports whether the settings turn tracing on.
func Enabled(s *settings.Settings) bool { return s != nil && s.TracingEndpoint != "" }

// Setup installs the global TracerProvider and propagators when
// TRACING_ENDPOINT is set and returns the function that flushes and stops
// it (call it on exit). Without TRACING_ENDPOINT it installs nothing and
// returns a shutdown that does nothing. version goes into the resource
// (service.version); log hears export failures (nil: slog.Default()).
func Setup(ctx context.Context, s *settings.Settings, version string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !Enabled(s) {
		return noop, nil
	}
	if log == nil {
		log = slog.Default()
	}
	exp, err := otlptracehttp.New(ctx, ExporterOptions(s.TracingEndpoint)...)
	if err != nil {
		return noop, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	name := s.TracingServiceName
	if name == "" {
		name = "tokenstore"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", name),
		attribute.String("service.version", version),
	))
	if err != nil {
		return noop, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Sampler(s.TracingSampleRatio)),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: exporting spans failed", "error", RedactURLs(err.Error()))
	}))
	log.Info("tracing on", "endpoint", redactEndpoint(s.TracingEndpoint), "sample_ratio", s.TracingSampleRatio, "service_name", name)
	return tp.Shutdown, nil
}

// Sampler samples a new trace with probability ratio and follows the
// caller's decision when a request arrives with a traceparent.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// ExporterURL is where spans are posted: the endpoint, with the OTLP/HTTP
// traces path /v1/traces when it names no path (http://otel-collector:4318
// becomes http://otel-collector:4318/v1/traces).
func ExporterURL(endpoint string) string {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return endpoint
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String()
}

// ExporterOptions configures the OTLP/HTTP exporter for endpoint; plain
// http:// endpoints are used without TLS. Headers (for example an
// authorization for a hosted collector) come from the standard
// OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS variables.
func ExporterOptions(endpoint string) []otlptracehttp.Option {
	return []otlptracehttp.Option{otlptracehttp.WithEndpointURL(ExporterURL(endpoint))}
}

// redactEndpoint drops user info and query from the endpoint for the log.
func redactEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "(unparsable)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
