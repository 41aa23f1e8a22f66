package flaskconvert

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/filesource"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
)

func validator(t *testing.T) *filesource.Validator {
	t.Helper()
	v, err := filesource.DefaultValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestConvertFromEnvironment(t *testing.T) {
	env := []string{
		"PATH=/usr/bin",
		"TOKENSTORE_TOKEN_PROVIDERS=idp1, idp2",
		"TOKENSTORE_IDP1_DISCOVERY_URL=https://auth-idp1.example.com/auth/realms/example/.well-known/openid-configuration",
		"TOKENSTORE_IDP1_CLIENT_ID=idp1",
		"TOKENSTORE_IDP1_CLIENT_SECRET=idp1_client_secret",
		"TOKENSTORE_IDP1_MD_NAME=IDP1 Display Name",
		"TOKENSTORE_IDP1_MD_DESCRIPTION=IDP1 description text",
		"TOKENSTORE_IDP1_MD_URL=IDP1 Home page",
		"TOKENSTORE_IDP1_MD_ICON=IDP1 Icon url",
		"TOKENSTORE_IDP1_MD_LOGO=IDP1 Logo url",
		// Unprefixed names are read too; the prefixed one wins.
		"IDP2_DISCOVERY_URL=https://auth-idp2.example.com/.well-known/openid-configuration",
		"IDP2_CLIENT_ID=unprefixed-loses",
		"TOKENSTORE_IDP2_CLIENT_ID=idp2",
		"IDP2_CLIENT_SECRET=idp2_client_secret",
		"IDP2_SCOPE=openid profile offline_access",
		"TOKENSTORE_IDP2_COLOR=blue",
		"IDP2_TOKEN=not-a-setting-and-not-ours",
	}
	res, err := Convert(FromEnviron(env), Options{Namespace: "tokenstore"})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if len(res.Providers) != 2 || len(res.Secrets) != 2 {
		t.Fatalf("got %d providers and %d secrets", len(res.Providers), len(res.Secrets))
	}
	p1, p2 := res.Providers[0], res.Providers[1]
	if p1.Name != "idp1" || p1.Namespace != "tokenstore" || p1.Spec.ClientID != "idp1" ||
		p1.Spec.DiscoveryURL != "https://auth-idp1.example.com/auth/realms/example/.well-known/openid-configuration" {
		t.Errorf("idp1: %+v", p1)
	}
	md := p1.Spec.Metadata
	if md.Name != "IDP1 Display Name" || md.Description != "IDP1 description text" || md.URL != "IDP1 Home page" || md.Icon != "IDP1 Icon url" || md.Logo != "IDP1 Logo url" {
		t.Errorf("idp1 metadata: %+v", md)
	}
	if p1.Spec.Scopes != nil {
		t.Errorf("idp1 without IDP1_SCOPE got scopes %v; want none, so the CRD default applies", p1.Spec.Scopes)
	}
	if p2.Spec.ClientID != "idp2" {
		t.Errorf("the prefixed IDP2_CLIENT_ID must win, got %q", p2.Spec.ClientID)
	}
	if !slices.Equal(p2.Spec.Scopes, []string{"openid", "profile", "offline_access"}) {
		t.Errorf("idp2 scopes %v", p2.Spec.Scopes)
	}
	s1 := res.Secrets[0]
	if s1.Name != "tokenstore-provider-idp1" || s1.Namespace != "tokenstore" || s1.StringData[SecretKey] != "idp1_client_secret" {
		t.Errorf("secret 1: %s/%s", s1.Namespace, s1.Name)
	}
	if ref := p1.Spec.ClientSecretRef; ref.Name != s1.Name || ref.Key != SecretKey {
		t.Errorf("idp1 refers to %+v", ref)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "IDP2_COLOR (environment variable TOKENSTORE_IDP2_COLOR) is not a setting the converter knows") {
		t.Errorf("warnings: %v", res.Warnings)
	}
	if err := res.Check(context.Background(), validator(t)); err != nil {
		t.Errorf("the output does not validate: %v", err)
	}
}

const pythonSettings = `# settings of the old tokenstore
import os

SQLALCHEMY_DATABASE_URI = "postgresql://postgres:postgres@postgres:5432/tokenstore"
TOKEN_PROVIDERS = "idp1, idp2"  # the ids used in the API

IDP1_DISCOVERY_URL = 'https://auth-idp1.example.com/auth/realms/example/.well-known/openid-configuration'
IDP1_CLIENT_ID = "idp1"
IDP1_CLIENT_SECRET = "s3cr\"et-1"
IDP1_MD_NAME = "IDP1 " 'Display Name'
IDP1_SCOPE = ["openid", "email"]

IDP2_DISCOVERY_URL = r"https://auth-idp2.example.com/.well-known/openid-configuration"
IDP2_CLIENT_ID = """idp2"""
IDP2_CLIENT_SECRET = os.environ["IDP2_SECRET_VALUE_XYZ"]
IDP2_MD_DESCRIPTION = "IDP2 \u00e9 text"
local_helper = 42
SESSION_PERMANENT = True
CORS = {
    "origins": ["https://app.example.com"],
}
`

func TestPythonSettingsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "settings")
	if err := os.WriteFile(path, []byte(pythonSettings), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, err := ReadSettingsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Read as serve reads it (settings.ReadFile): literals of any kind
	// are read (SESSION_PERMANENT = True, the CORS dict); the import and the
	// name reference are not, each noted with its line.
	probs := s.Problems()
	if len(probs) != 2 || !strings.HasPrefix(probs[0], path+":2: an import") || !strings.HasPrefix(probs[1], path+":15: IDP2_CLIENT_SECRET: ") {
		t.Errorf("problems: %q, want the import on line 2 and IDP2_CLIENT_SECRET on line 15", probs)
	}
	for _, p := range s.Problems() {
		if strings.Contains(p, "IDP2_SECRET_VALUE_XYZ") {
			t.Errorf("a problem quotes a value: %s", p)
		}
	}

	// IDP2's secret is an expression: the error says where and how to fix it.
	_, err = Convert(s, Options{})
	if err == nil {
		t.Fatal("converted without IDP2's client secret")
	}
	if want := `IDP2_CLIENT_SECRET (` + path + `:15) could not be read: write it as IDP2_CLIENT_SECRET = "..."`; err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}

	// With the secret from the environment, as the old service would have
	// had it, the conversion succeeds.
	s.Merge(FromEnviron([]string{"TOKENSTORE_IDP2_CLIENT_SECRET=from-env"}))
	if got := s.Problems(); slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "IDP2_CLIENT_SECRET") }) {
		t.Errorf("a warning about IDP2_CLIENT_SECRET stayed after the environment set it: %q", got)
	}
	res, err := Convert(s, Options{SecretNameFormat: "%s-oauth"})
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := res.Providers[0], res.Providers[1]
	if p1.Spec.DiscoveryURL != "https://auth-idp1.example.com/auth/realms/example/.well-known/openid-configuration" || p1.Spec.Metadata.Name != "IDP1 Display Name" {
		t.Errorf("idp1: %+v", p1.Spec)
	}
	if !slices.Equal(p1.Spec.Scopes, []string{"openid", "email"}) {
		t.Errorf("idp1 scopes %v", p1.Spec.Scopes)
	}
	if res.Secrets[0].StringData[SecretKey] != `s3cr"et-1` || res.Secrets[0].Name != "idp1-oauth" {
		t.Errorf("idp1 secret %s not read right", res.Secrets[0].Name)
	}
	if p2.Spec.ClientID != "idp2" || res.Secrets[1].StringData[SecretKey] != "from-env" {
		t.Errorf("idp2: client id %q", p2.Spec.ClientID)
	}
	if err := res.Check(context.Background(), validator(t)); err != nil {
		t.Errorf("the output does not validate: %v", err)
	}
}

func TestYAMLSettingsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "settings.yaml")
	data := `TOKEN_PROVIDERS: [google]
GOOGLE_DISCOVERY_URL: https://accounts.google.com/.well-known/openid-configuration
GOOGLE_CLIENT_ID: "1234.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET: abc
GOOGLE_SCOPE: [openid, email]
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, err := ReadSettingsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Providers[0]; p.Name != "google" || p.Spec.ClientID != "1234.apps.googleusercontent.com" || !slices.Equal(p.Spec.Scopes, []string{"openid", "email"}) {
		t.Errorf("google: %+v", p.Spec)
	}
}

func TestConvertErrorsNameTheSetting(t *testing.T) {
	s := FromEnviron([]string{
		"TOKEN_PROVIDERS=idp1,idp2,Bad_ID",
		"IDP1_DISCOVERY_URL=https://a.example.com/.well-known/openid-configuration",
		"IDP1_CLIENT_SECRET=do-not-print-me",
		"IDP2_DISCOVERY_URL=https://b.example.com/.well-known/openid-configuration",
		"IDP2_CLIENT_ID=idp2",
		"IDP2_CLIENT_SECRET=",
		"BAD_ID_DISCOVERY_URL=https://c.example.com/.well-known/openid-configuration",
		"BAD_ID_CLIENT_ID=c",
		"BAD_ID_CLIENT_SECRET=do-not-print-me",
	})
	_, err := Convert(s, Options{})
	if err == nil {
		t.Fatal("converted with missing settings")
	}
	msg := err.Error()
	for _, want := range []string{
		`IDP1_CLIENT_ID is not set: it is the client id of provider "idp1" (listed in TOKEN_PROVIDERS)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "do-not-print-me") {
		t.Errorf("an error shows a client secret:\n%s", msg)
	}

	if _, err := Convert(NewSettings(), Options{}); err == nil || !strings.HasPrefix(err.Error(), "TOKEN_PROVIDERS is not set") {
		t.Errorf("no TOKEN_PROVIDERS: %v", err)
	}
	if _, err := Convert(s, Options{SecretNameFormat: "secret"}); err == nil || !strings.Contains(err.Error(), "--secret-name-format") {
		t.Errorf("bad format: %v", err)
	}
}

func TestCheckNamesTheSetting(t *testing.T) {
	s := FromEnviron([]string{
		"TOKEN_PROVIDERS=idp1",
		"IDP1_DISCOVERY_URL=auth.example.com/.well-known/openid-configuration",
		"IDP1_CLIENT_ID=x",
		"IDP1_CLIENT_SECRET=do-not-print-me",
	})
	res, err := Convert(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = res.Check(context.Background(), validator(t))
	if err == nil || !strings.Contains(err.Error(), "check IDP1_DISCOVERY_URL: ") || !strings.Contains(err.Error(), "spec.discoveryURL") {
		t.Fatalf("bad discovery URL: %v", err)
	}
	if strings.Contains(err.Error(), "do-not-print-me") {
		t.Errorf("an error shows a client secret")
	}
}

// TestRoundTrip converts settings, validates the output as
// `providers validate` does, and loads it with the file source against a
// real OpenID Provider.
func TestRoundTrip(t *testing.T) {
	op := providertest.Start(t, "")
	s := FromEnviron([]string{
		"TOKENSTORE_TOKEN_PROVIDERS=idp1",
		"TOKENSTORE_IDP1_DISCOVERY_URL=" + op.DiscoveryURL(),
		"TOKENSTORE_IDP1_CLIENT_ID=" + providertest.ClientID,
		"TOKENSTORE_IDP1_CLIENT_SECRET=" + op.ClientSecret,
		"TOKENSTORE_IDP1_MD_NAME=Test IdP",
	})
	res, err := Convert(s, Options{Namespace: "tokenstore"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	m, err := filesource.Load(ctx, validator(t), path, filesource.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if errs := m.Errors(); len(errs) > 0 || len(m.Objects) != 2 {
		t.Fatalf("%d objects, errors %v\n%s", len(m.Objects), errs, out)
	}

	reg := providers.NewRegistry()
	src, err := filesource.New(filesource.Options{Path: path, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-src.ReadyC():
	case <-time.After(20 * time.Second):
		t.Fatal("file source not ready")
	}
	p, ok := reg.Get("idp1")
	if !ok {
		t.Fatalf("idp1 not in the registry; statuses %+v", src.Statuses())
	}
	if p.Issuer != op.Issuer || p.ClientSecret != op.ClientSecret || p.Metadata.Name != "Test IdP" {
		t.Errorf("idp1 loaded wrong: %v", p)
	}
	if !slices.Equal(p.Scopes, []string{"openid", "email", "offline_access"}) {
		t.Errorf("idp1 scopes %v, want the Flask service's default", p.Scopes)
	}
	st, _ := src.Status("idp1")
	if ready, reason, msg := st.Ready(); !ready {
		t.Errorf("idp1 not ready: %s %s", reason, msg)
	}
}

// A provider without a client secret becomes a public client, with a
// warning; ids that cannot be Kubernetes names keep their id as spec.id
// under a valid, unique name.
func TestConvertPublicClientsAndIDs(t *testing.T) {
	s := FromEnviron([]string{
		"TOKEN_PROVIDERS=tern_keycloak, Google, tern-keycloak",
		"TERN_KEYCLOAK_DISCOVERY_URL=https://a.example.com/.well-known/openid-configuration",
		"TERN_KEYCLOAK_CLIENT_ID=a",
		"GOOGLE_DISCOVERY_URL=https://accounts.google.com/.well-known/openid-configuration",
		"GOOGLE_CLIENT_ID=g",
		"GOOGLE_CLIENT_SECRET=do-not-print-me",
		"TERN-KEYCLOAK_DISCOVERY_URL=https://b.example.com/.well-known/openid-configuration",
		"TERN-KEYCLOAK_CLIENT_ID=b",
		"TERN-KEYCLOAK_CLIENT_SECRET=s",
	})
	r, err := Convert(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(context.Background(), validator(t)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range r.Providers {
		names = append(names, tp.Name)
	}
	if want := []string{"tern-keycloak", "google", "tern-keycloak-2"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	if r.Providers[0].Spec.TokenEndpointAuthMethod != "none" || r.Providers[0].Spec.ClientSecretRef != nil || r.Secrets[0] != nil {
		t.Errorf("tern_keycloak is not a public client: %+v", r.Providers[0].Spec)
	}
	if !strings.Contains(strings.Join(r.Warnings, "\n"), `provider "tern_keycloak" has no TERN_KEYCLOAK_CLIENT_SECRET: converted as a public client`) {
		t.Errorf("warnings: %v", r.Warnings)
	}
	out, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	y := string(out)
	for _, want := range []string{"id: tern_keycloak\n", "id: Google\n", "name: tokenstore-provider-google\n", "tokenEndpointAuthMethod: none\n"} {
		if !strings.Contains(y, want) {
			t.Errorf("output lacks %q:\n%s", want, y)
		}
	}
	if strings.Count(y, "\n  id: ") != 3 {
		t.Errorf("spec.id only where the name differs from the id:\n%s", y)
	}
}
