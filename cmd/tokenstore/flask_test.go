package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/internal/crypto"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// The Flask service's settings file and database, as testdata/flask/generate.py
// wrote them with Python's cryptography, go through `providers convert` and
// `import`: every token decrypts under the Flask service's CRYPTOKEY key
// formats, the relative sqlite:///tokenstore.db is found from the working
// directory, and a row whose provider is not converted is warned about.
func TestFlaskServiceMigration(t *testing.T) {
	fixture, err := filepath.Abs("../../testdata/flask")
	if err != nil {
		t.Fatal(err)
	}
	var expected struct {
		CryptoKey string `json:"cryptokey"`
		Rows      []struct {
			ID       int64  `json:"id"`
			Provider string `json:"provider"`
			UserID   string `json:"user_id"`
			Token    string `json:"token"`
		} `json:"rows"`
	}
	raw, err := os.ReadFile(filepath.Join(fixture, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	db, err := os.ReadFile(filepath.Join(fixture, "tokenstore.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("tokenstore.db", db, 0o600); err != nil {
		t.Fatal(err)
	}

	// providers convert, from the settings file alone.
	convert := newProvidersCmd()
	var cout, cerr bytes.Buffer
	convert.SetOut(&cout)
	convert.SetErr(&cerr)
	convert.SetArgs([]string{"convert", "--settings", filepath.Join(fixture, "settings.py"), "--env=false", "-o", "providers.yaml"})
	if err := convert.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("convert: %v\n%s", err, cerr.String())
	}
	if !strings.Contains(cerr.String(), `provider "public" has no PUBLIC_CLIENT_SECRET: converted as a public client`) {
		t.Errorf("convert warnings:\n%s", cerr.String())
	}
	manifests, err := os.ReadFile("providers.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: tern-keycloak\n", "id: tern_keycloak\n", "name: google\n", "id: Google\n", "tokenEndpointAuthMethod: none\n"} {
		if !strings.Contains(string(manifests), want) {
			t.Errorf("manifests lack %q:\n%s", want, manifests)
		}
	}

	// import, with the database URL as the Flask service had it.
	newURL := "sqlite://" + filepath.Join(dir, "new.db")
	mg, err := storeopen.NewMigrator(newURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mg.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	mg.Close()
	newKey, _ := crypto.GenerateKey()
	t.Setenv("TOKENSTORE_DATABASE_URL", newURL)
	t.Setenv("TOKENSTORE_CRYPTOKEY", newKey)
	t.Setenv("TOKENSTORE_OLD_CRYPTOKEY", expected.CryptoKey)
	t.Setenv("TOKENSTORE_LOG_FORMAT", "text")
	imp := newImportCmd()
	var iout bytes.Buffer
	imp.SetOut(&iout)
	imp.SetErr(&iout)
	imp.SetArgs([]string{"--from", "sqlite+pysqlite:///tokenstore.db", "--providers", "providers.yaml"})
	if err := imp.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("import: %v\n%s", err, iout.String())
	}
	for _, want := range []string{"5 imported, 0 unchanged, 0 kept, 0 failed of 5 rows", "1 rows belong to providers no TokenProvider in providers.yaml serves"} {
		if !strings.Contains(iout.String(), want) {
			t.Errorf("import output lacks %q:\n%s", want, iout.String())
		}
	}

	st, err := storeopen.Open(context.Background(), newURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ring, err := crypto.ParseKeyRing(newKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range expected.Rows {
		c, err := st.GetCredential(context.Background(), r.UserID, r.Provider)
		if err != nil {
			t.Fatalf("row %d: %v", r.ID, err)
		}
		plain, err := ring.Open(c.RefreshToken, crypto.Binding{Owner: r.UserID, Provider: r.Provider, Purpose: crypto.PurposeRefreshToken})
		if err != nil || string(plain) != r.Token {
			t.Errorf("row %d: token %q, %v; want the one Python encrypted", r.ID, plain, err)
		}
	}
}

// migrate (and serve, which reads the same setting) open
// SQLALCHEMY_DATABASE_URI as SQLAlchemy does: a +driver is dropped, and
// sqlite:///x.db is x.db in the working directory.
func TestMigrateSQLAlchemyURL(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, url := range []string{
		"sqlite+pysqlite:///relative.db",
		strings.Replace(pgtest.NewDatabase(t), "postgres://", "postgresql+psycopg2://", 1),
	} {
		t.Setenv("TOKENSTORE_SQLALCHEMY_DATABASE_URI", url)
		cmd := newMigrateCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"up"})
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("migrate up: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "database schema is up to date") {
			t.Fatalf("migrate up:\n%s", out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "relative.db")); err != nil {
		t.Fatalf("sqlite:///relative.db was not created in the working directory: %v", err)
	}
}

// A provider setting the reader cannot read stops the conversion, naming
// its line: read as missing, a client secret would make a public client.
func TestConvertUnreadableProviderSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "settings.py")
	if err := os.WriteFile(file, []byte(`import os
TOKEN_PROVIDERS = "idp1"
IDP1_DISCOVERY_URL = "https://idp1.example.com/.well-known/openid-configuration"
IDP1_CLIENT_ID = "idp1"
IDP1_CLIENT_SECRET = os.environ["IDP1_SECRET_hunter2"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		c := newProvidersCmd()
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs([]string{"convert", "--settings", file})
		err := c.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run()
	if err == nil || !strings.Contains(err.Error(), "settings.py:5: IDP1_CLIENT_SECRET") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("want an error naming line 5, got %v\n%s", err, out)
	}
	// Given in the environment, as the Flask service would have read it.
	t.Setenv("TOKENSTORE_IDP1_CLIENT_SECRET", "from-env")
	out, err = run()
	if err != nil || !strings.Contains(out, "clientSecret: from-env") || !strings.Contains(out, "settings.py:1: an import") {
		t.Fatalf("with the environment: %v\n%s", err, out)
	}
	if n := strings.Count(out, "settings.py:1: an import"); n != 1 {
		t.Errorf("the unreadable import is noted %d times, want once:\n%s", n, out)
	}
	// The line the environment made up for is not noted at all.
	if strings.Contains(out, "settings.py:5:") {
		t.Errorf("the unreadable IDP1_CLIENT_SECRET line is noted although the environment set it:\n%s", out)
	}
}
