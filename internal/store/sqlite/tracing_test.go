package sqlite_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tokenstore/tokenstore/internal/store"
)

// TestTracing: with tracing on, each statement of the SQLite store is a
// client span under the caller's span, named by its sqlc query (inside
// transactions too), and no span carries an argument: not the user id,
// not a ciphertext. A row not found is not a failed statement.
func TestTracing(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)

	s := open(t, migratedFile(t))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	const user, secret = "user-7f3a", "CIPHERTEXT-BYTES-9c1e"
	if _, err := s.UpsertCredential(ctx, store.Credential{UserID: user, Provider: "github", KeyID: "k1", RefreshToken: []byte(secret)}); err != nil {
		t.Fatalf("UpsertCredential: %v", err)
	}
	if _, err := s.UpdateCredential(ctx, user, "github", func(c *store.Credential) (store.Outcome, error) {
		c.AccessToken = []byte(secret)
		return store.Write(), nil
	}); err != nil {
		t.Fatalf("UpdateCredential: %v", err)
	}
	if _, err := s.GetCredential(ctx, "nobody", "github"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetCredential of nobody: %v, want ErrNotFound", err)
	}
	parent.End()

	byName := map[string]tracetest.SpanStub{}
	for _, sp := range exp.GetSpans() {
		if sp.Name == "request" {
			continue
		}
		byName[sp.Name] = sp
		if sp.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %s is not a child of the caller's span", sp.Name)
		}
		system := ""
		for _, a := range sp.Attributes {
			v := a.Value.String()
			if strings.Contains(v, user) || strings.Contains(v, secret) || strings.Contains(v, "nobody") {
				t.Errorf("span %s attribute %s carries an argument: %q", sp.Name, a.Key, v)
			}
			if a.Key == "db.system.name" {
				system = v
			}
		}
		if system != "sqlite" {
			t.Errorf("span %s: db.system.name %q, want sqlite", sp.Name, system)
		}
		if strings.Contains(sp.Name, " ") || strings.Contains(sp.Name, user) {
			t.Errorf("span name %q is not a query name", sp.Name)
		}
	}
	// CredentialUpdate runs only inside UpdateCredential's transaction.
	for _, want := range []string{"CredentialUpsert", "CredentialGet", "CredentialUpdate"} {
		if _, ok := byName[want]; !ok {
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			t.Errorf("no %s span; spans: %v", want, names)
		}
	}
	for n, sp := range byName {
		if sp.Status.Code == codes.Error {
			t.Errorf("span %s failed (%s); a row not found is not a failure", n, sp.Status.Description)
		}
	}
}
