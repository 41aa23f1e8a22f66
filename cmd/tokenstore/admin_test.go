package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

// TestAdminCommands runs `tokenstore admin` in-process against a SQLite
// database and a providers file naming the in-process OP: a person's
// credential is revoked at the provider and forgotten, a ServiceAccount's
// grants are revoked, and the trail names the operator.
func TestAdminCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbURL := "sqlite://" + filepath.Join(dir, "ts.db")
	op := providertest.Start(t, "http://127.0.0.1/cb")
	manifests := fmt.Sprintf(`apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: idp}
spec:
  discoveryURL: %s
  clientID: %s
  clientSecretRef: {name: idp-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: idp-secret}
stringData: {clientSecret: %s}
`, op.DiscoveryURL(), providertest.ClientID, op.ClientSecret)
	providersFile := filepath.Join(dir, "providers.yaml")
	if err := os.WriteFile(providersFile, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	key, _ := crypto.GenerateKey()
	t.Setenv("TOKENSTORE_DATABASE_URL", dbURL)
	t.Setenv("TOKENSTORE_CRYPTOKEY", key)
	t.Setenv("TOKENSTORE_PROVIDERS_FILE", providersFile)
	t.Setenv("TOKENSTORE_LOG_LEVEL", "error")
	if _, _, err := run(t, "migrate", "up"); err != nil {
		t.Fatal(err)
	}

	// A linked credential (a real code flow at the OP) and grants, written
	// as the server would.
	st, err := storeopen.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, _ := crypto.ParseKeyRing(key)
	oidcP, err := oidc.NewProvider(ctx, op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	p := &providers.Provider{ID: "idp", ClientID: providertest.ClientID, ClientSecret: op.ClientSecret,
		AuthMethod: providers.AuthMethodClientSecretBasic, Endpoint: oidcP.Endpoint(), Issuer: op.Issuer,
		Scopes: []string{"openid", "offline_access"}, PKCE: providers.PKCES256, Version: "1"}
	reg := providers.NewRegistry()
	reg.Set(p)
	b, err := broker.New(broker.Options{Store: st, Keys: keys, Providers: reg})
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.OAuth2Config(op.RedirectURL)
	v := oauth2.GenerateVerifier()
	q, err := op.Login(ctx, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(v)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(v))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("code exchange: %v", err)
	}
	if err := b.Link(ctx, "alice", "idp", "", "user:alice", tok); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		if _, err := st.CreateGrant(ctx, store.Grant{UserID: user, Provider: "idp", ServiceAccountNamespace: "team-a", ServiceAccountName: "ci"}); err != nil {
			t.Fatal(err)
		}
	}

	out, _, err := run(t, "admin", "users", "show", "alice", "--actor", "jdoe")
	if err != nil || !strings.Contains(out, "idp") || !strings.Contains(out, "team-a/ci") || strings.Contains(out, tok.RefreshToken) {
		t.Fatalf("users show: %v\n%s", err, out)
	}
	if _, _, err := run(t, "admin", "users", "show", "nobody", "--actor", "jdoe"); err == nil || !strings.Contains(err.Error(), "no credential or grant") {
		t.Fatalf("an unknown person: %v", err)
	}
	if _, _, err := run(t, "admin", "credentials", "revoke", "alice", "--actor", "jdoe"); err == nil || !strings.Contains(err.Error(), "--all") {
		t.Fatalf("revoke without provider or --all: %v", err)
	}
	if _, _, err := run(t, "admin", "credentials", "list", "alice", "-o", "yaml"); err == nil || !strings.Contains(err.Error(), "table or json") {
		t.Fatalf("a bad --output: %v", err)
	}

	out, _, err = run(t, "admin", "credentials", "revoke", "alice", "idp", "--actor", "jdoe", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var crs []admin.CredentialRevocation
	if err := json.Unmarshal([]byte(out), &crs); err != nil || len(crs) != 1 || !crs[0].AtProvider {
		t.Fatalf("credentials revoke: %v\n%s", err, out)
	}
	// The provider saw it.
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Error("the OP still takes the revoked refresh token")
	}
	if _, err := st.GetCredential(ctx, "alice", "idp"); err == nil {
		t.Error("the credential is still stored")
	}

	out, _, err = run(t, "admin", "serviceaccount", "revoke", "team-a/ci", "--actor", "jdoe", "-o", "json")
	var grs []admin.GrantRevocation
	if err != nil || json.Unmarshal([]byte(out), &grs) != nil || len(grs) != 2 {
		t.Fatalf("serviceaccount revoke: %v\n%s", err, out)
	}
	out, _, err = run(t, "admin", "grants", "list", "--service-account", "team-a/ci", "--actor", "jdoe")
	if err != nil || strings.Count(out, "revoked") != 2 {
		t.Fatalf("grants list: %v\n%s", err, out)
	}

	evs, err := st.ListAudit(ctx, "alice", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Actor == "cli:jdoe" {
			got = append(got, evs[i].Action)
		}
	}
	if strings.Join(got, ",") != "admin.inspect,credential.revoke,grant.revoke" {
		t.Errorf("alice's events by cli:jdoe = %q", got)
	}
}
