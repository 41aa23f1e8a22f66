package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeNamed(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The Flask service's settings file loads, once its providers are
// converted: its values are read without running it, and the Flask keys
// tokenstore has no use for are accepted with one warning each.
func TestFlaskSettingsFileLoads(t *testing.T) {
	src, err := os.ReadFile("../../testdata/flask/settings.py")
	if err != nil {
		t.Fatal(err)
	}
	// Every line but the providers' (which stop the start: see
	// TestProviderSettingsStopTheStart).
	var kept []string
	for _, l := range strings.Split(string(src), "\n") {
		if !strings.HasPrefix(l, "TOKEN_PROVIDERS") && !strings.HasPrefix(l, "TERN_KEYCLOAK_") && !strings.HasPrefix(l, "GOOGLE_") && !strings.HasPrefix(l, "PUBLIC_") {
			kept = append(kept, l)
		}
	}
	// No extension: the Flask service's file "does not need to end in .py".
	file := writeNamed(t, "tokenstore.conf", strings.Join(kept, "\n"))
	s, err := Load(nil, env(map[string]string{SettingsEnv: file}), RequireCryptoKey, RequireLogin)
	if err != nil {
		t.Fatal(err)
	}
	if s.OIDCDiscoveryURL != "https://auth.example.com/auth/realms/example/.well-known/openid-configuration" || s.OIDCClientSecret != "tokenstore_client_secret" {
		t.Errorf("OIDC settings: %q %q", s.OIDCDiscoveryURL, s.OIDCClientSecret)
	}
	if s.DatabaseURL != "sqlite://tokenstore.db" {
		t.Errorf("SQLAlchemy URL read as %q, want the relative sqlite://tokenstore.db", s.DatabaseURL)
	}
	if len(s.CORSOrigins) != 2 || s.SessionLifetime.Hours() != 24 {
		t.Errorf("CORS_ORIGINS %v, lifetime %s", s.CORSOrigins, s.SessionLifetime)
	}
	warned := strings.Join(s.Warnings, "\n")
	for _, name := range []string{"SECRET_KEY", "DEBUG", "PREFERRED_URL_SCHEME", "SESSION_TYPE", "SESSION_FILE_DIR", "SESSION_PERMANENT", "SQLALCHEMY_TRACK_MODIFICATIONS", "SQLALCHEMY_ENGINE_OPTIONS", "OIDC_USE_REFRESH_TOKEN"} {
		n := 0
		for _, w := range s.Warnings {
			if strings.HasPrefix(w, name+" ") || strings.HasPrefix(w, name+"=") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d warnings, want 1:\n%s", name, n, warned)
		}
	}
	if strings.Contains(warned, "flask-cookie-key") {
		t.Errorf("a warning shows SECRET_KEY's value:\n%s", warned)
	}
}

func TestSettingsFileFormats(t *testing.T) {
	for name, body := range map[string]string{
		"s.yaml":    "LOG_LEVEL: warn\n",
		"s.yml":     "LOG_LEVEL: warn\n",
		"s.json":    `{"LOG_LEVEL": "warn"}`,
		"s.py":      "LOG_LEVEL = 'warn'\n",
		"s.cfg":     "LOG_LEVEL = \"warn\"  # Flask's development.cfg style\n",
		"noext":     "LOG_LEVEL = 'warn'\n",
		"noext.txt": "LOG_LEVEL: warn\n",
	} {
		s, err := Load(nil, env(map[string]string{SettingsEnv: writeNamed(t, name, body)}))
		if err != nil || s.LogLevel != "warn" {
			t.Errorf("%s: %v %v", name, s, err)
		}
	}
	// A .py file is Python even where it would parse as YAML.
	_, err := Load(nil, env(map[string]string{SettingsEnv: writeNamed(t, "s.py", "LOG_LEVEL: warn\n")}))
	if err == nil || !strings.Contains(err.Error(), "s.py:1") {
		t.Errorf("YAML in a .py file: %v", err)
	}
}

// A line that cannot be read without running the file stops the start,
// naming the line; the secret it held never shows.
func TestPythonLinesThatCannotBeRead(t *testing.T) {
	file := writeNamed(t, "settings.py", `import os
OIDC_CLIENT_SECRET = os.environ["SECRET_hunter2"]
CRYPTOKEY = f"{os.getcwd()}hunter2"
LOG_LEVEL = 'debug'
`)
	_, err := Load(nil, env(map[string]string{SettingsEnv: file}))
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	for _, want := range []string{"settings.py:1: an import", "settings.py:2: OIDC_CLIENT_SECRET", "settings.py:3: CRYPTOKEY: an f-string"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error shows a value:\n%s", msg)
	}
}

// A name close to a real setting is a typo and fails, naming the setting;
// another unknown name is warned about.
func TestUnknownNames(t *testing.T) {
	file := writeNamed(t, "settings.py", "OIDC_CLIENT_SECRT = 'x'\nMY_APP_COLOUR = 'blue'\n")
	_, err := Load(nil, env(map[string]string{SettingsEnv: file}))
	if err == nil || !strings.Contains(err.Error(), "OIDC_CLIENT_SECRT (in "+file+":1): unknown setting (did you mean OIDC_CLIENT_SECRET?)") {
		t.Fatalf("typo: %v", err)
	}
	file = writeNamed(t, "settings.py", "MY_APP_COLOUR = 'blue'\n")
	s, err := Load(nil, env(map[string]string{SettingsEnv: file}))
	if err != nil || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "MY_APP_COLOUR") {
		t.Fatalf("unknown name: %v %v", s, err)
	}
}

func TestIgnoredFlaskSettingsInTheEnvironment(t *testing.T) {
	t.Setenv("TOKENSTORE_SECRET_KEY", "flask-cookie-key")
	t.Setenv("TOKENSTORE_SQLALCHEMY_POOL_SIZE", "5")
	s, err := Load(nil, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(s.Warnings, "\n")
	if !strings.Contains(w, "SECRET_KEY ($TOKENSTORE_SECRET_KEY) is ignored") || !strings.Contains(w, "SQLALCHEMY_POOL_SIZE") || strings.Contains(w, "flask-cookie-key") {
		t.Fatalf("warnings: %s", w)
	}
}

// TOKEN_PROVIDERS and IDPn_* stop the start with directions to `providers
// convert`, from the environment as from a file.
func TestProviderSettingsStopTheStart(t *testing.T) {
	t.Setenv("TOKENSTORE_IDP1_CLIENT_ID", "idp1")
	t.Setenv("TOKENSTORE_IDP1_MD_NAME", "Provider 1")
	_, err := Load(nil, os.LookupEnv)
	if err == nil || !strings.Contains(err.Error(), "$TOKENSTORE_IDP1_CLIENT_ID, $TOKENSTORE_IDP1_MD_NAME: token providers are now TokenProvider manifests: run `tokenstore providers convert`") {
		t.Fatalf("IDPn_* in the environment: %v", err)
	}

	_, err = Load(nil, env(map[string]string{SettingsEnv: "../../testdata/flask/settings.py"}))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"TOKEN_PROVIDERS (../../testdata/flask/settings.py:", "GOOGLE_CLIENT_SECRET (", "tokenstore providers convert"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "g\\oogle-secret") || strings.Contains(err.Error(), "tern-client-secret") {
		t.Errorf("error shows a client secret:\n%v", err)
	}
}

// Several faults at once, in different settings and sources, come in one
// message: a malformed CRYPTOKEY is not held back until the login settings
// are fixed.
func TestEveryFaultInOneMessage(t *testing.T) {
	_, err := Load(nil, env(map[string]string{
		"TOKENSTORE_CRYPTOKEY":          "not-a-key-hunter2",
		"TOKENSTORE_OIDC_DISCOVERY_URL": "https://idp.example/.well-known/openid-configuration",
		"TOKENSTORE_LOG_LEVEL":          "loud",
	}), RequireCryptoKey, RequireLogin)
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	for _, want := range []string{"CRYPTOKEY: key 1", "OIDC_CLIENT_ID: missing", "LOG_LEVEL: want debug"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error shows the key:\n%s", msg)
	}
}

func TestDatabaseURL(t *testing.T) {
	for _, c := range []struct {
		in         string
		sqlalchemy bool
		want       string
	}{
		{"postgresql+psycopg2://u:p@h:5432/db?sslmode=require", true, "postgresql://u:p@h:5432/db?sslmode=require"},
		{"postgresql+asyncpg://u@h/db", false, "postgresql://u@h/db"},
		{"postgres://u@h/db", true, "postgresql://u@h/db"},
		{"sqlite:///relative.db", true, "sqlite://relative.db"},
		{"sqlite:///sub/dir/x.db?check_same_thread=false", true, "sqlite://sub/dir/x.db"},
		{"sqlite:////abs/path.db", true, "sqlite:///abs/path.db"},
		{"sqlite+pysqlite:///relative.db", false, "sqlite://relative.db"},
		{"sqlite+pysqlite:////abs/path.db", false, "sqlite:///abs/path.db"},
		{"sqlite://", true, "sqlite::memory:"},
		{"sqlite:///:memory:", true, "sqlite::memory:"},
		// tokenstore's own DATABASE_URL keeps its meaning.
		{"sqlite:///abs/path.db", false, "sqlite:///abs/path.db"},
		{"sqlite://relative.db", false, "sqlite://relative.db"},
		{"postgres://u@h/db", false, "postgres://u@h/db"},
	} {
		got, err := DatabaseURL(c.in, c.sqlalchemy)
		if err != nil || got != c.want {
			t.Errorf("DatabaseURL(%q, %v) = %q, %v; want %q", c.in, c.sqlalchemy, got, err, c.want)
		}
	}
	for _, in := range []string{"postgresql+mysqldb://u:hunter2@h/db", "sqlite://host/x.db", "postgresql+psycopg2:u:hunter2@h"} {
		if _, err := DatabaseURL(in, true); err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("DatabaseURL(%q): %v", in, err)
		}
	}
}
