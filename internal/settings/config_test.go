package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "settings.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	s, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.ListenAddress != ":8080" || s.DatabaseURL != "sqlite://tokenstore.db" || s.SessionCookieSameSite != "Lax" {
		t.Fatalf("unexpected defaults: %+v", s)
	}
	if s.SessionLifetime != 744*time.Hour {
		t.Fatalf("session lifetime default = %s", s.SessionLifetime)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	file := writeFile(t, "LISTEN_ADDRESS: ':1000'\noidc_client_id: from-file\nOIDC_DISCOVERY_URL: https://idp.example/.well-known/openid-configuration\nCORS_ORIGINS: [https://a.example, https://b.example]\n")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--listen-address=:3000"}); err != nil {
		t.Fatal(err)
	}
	s, err := Load(fs, env(map[string]string{
		SettingsEnv:                             file,
		"TOKENSTORE_LISTEN_ADDRESS":             ":2000",
		"TOKENSTORE_OIDC_CLIENT_ID":             "from-env",
		"TOKENSTORE_PERMANENT_SESSION_LIFETIME": "3600",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.ListenAddress != ":3000" {
		t.Errorf("flag should win: %q", s.ListenAddress)
	}
	if s.OIDCClientID != "from-env" {
		t.Errorf("env should beat file: %q", s.OIDCClientID)
	}
	if s.OIDCDiscoveryURL == "" {
		t.Errorf("file value lost")
	}
	if len(s.CORSOrigins) != 2 || s.CORSOrigins[1] != "https://b.example" {
		t.Errorf("list from YAML: %v", s.CORSOrigins)
	}
	if s.SessionLifetime != time.Hour {
		t.Errorf("seconds as in Flask: %s", s.SessionLifetime)
	}
}

func TestSQLAlchemyAlias(t *testing.T) {
	s, err := Load(nil, env(map[string]string{"TOKENSTORE_SQLALCHEMY_DATABASE_URI": "postgresql://u@h/db"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.DatabaseURL != "postgresql://u@h/db" {
		t.Fatalf("alias not applied: %q", s.DatabaseURL)
	}
	// Read as SQLAlchemy reads it: three slashes and a relative path.
	file := writeFile(t, "SQLALCHEMY_DATABASE_URI: sqlite:///tmp/x.db\n")
	s, err = Load(nil, env(map[string]string{SettingsEnv: file}))
	if err != nil || s.DatabaseURL != "sqlite://tmp/x.db" {
		t.Fatalf("alias in file: %v %v", s, err)
	}
}

func TestErrorsNameTheSettingAndHideSecrets(t *testing.T) {
	file := writeFile(t, "LISTEN_ADRESS: ':1'\nTOKEN_PROVIDERS: idp1\n")
	_, err := Load(nil, env(map[string]string{
		SettingsEnv:                        file,
		"TOKENSTORE_MIGRATE_ON_START":      "yes please",
		"TOKENSTORE_DATABASE_URL":          "mysql://root:hunter2@db/x",
		"TOKENSTORE_SESSION_COOKIE_SECURE": "maybe",
	}))
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	for _, want := range []string{
		"LISTEN_ADRESS", "did you mean LISTEN_ADDRESS?",
		"TOKEN_PROVIDERS", "tokenstore providers convert",
		"MIGRATE_ON_START (from $TOKENSTORE_MIGRATE_ON_START): want true or false",
		"DATABASE_URL: want postgres://",
		"SESSION_COOKIE_SECURE",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error leaks the database password:\n%s", msg)
	}
}

func TestRequire(t *testing.T) {
	s, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Require(RequireCryptoKey, RequireLogin)
	if err == nil {
		t.Fatal("want missing settings")
	}
	for _, want := range []string{"CRYPTOKEY: missing", "OIDC_DISCOVERY_URL: missing", "OIDC_CLIENT_ID: missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestSessionTypeFromSeedIsAcceptedWithWarning(t *testing.T) {
	file := writeFile(t, "SESSION_TYPE: filesystem\nSESSION_FILE_DIR: /tmp/sessions\n")
	s, err := Load(nil, env(map[string]string{SettingsEnv: file}))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) != 2 {
		t.Fatalf("want two warnings, got %v", s.Warnings)
	}
}

func TestMissingSettingsFile(t *testing.T) {
	_, err := Load(nil, env(map[string]string{SettingsEnv: "/nonexistent/settings.yaml"}))
	if err == nil || !strings.Contains(err.Error(), SettingsEnv) {
		t.Fatalf("want an error naming %s, got %v", SettingsEnv, err)
	}
}

// A command's own defaults (tokenstore dev) sit above the built-in ones and
// below the settings file, the environment and the flags.
func TestLoadWithDefaultsOrder(t *testing.T) {
	file := writeFile(t, "LOG_FORMAT: json\n")
	defaults := map[string]string{"LOG_FORMAT": "text", "LISTEN_ADDRESS": "127.0.0.1:9", "LOG_LEVEL": "debug"}
	s, err := LoadWithDefaults(nil, env(map[string]string{SettingsEnv: file, "TOKENSTORE_LOG_LEVEL": "warn"}), defaults)
	if err != nil {
		t.Fatal(err)
	}
	if s.LogFormat != "json" {
		t.Errorf("the settings file should beat the command's default: %q", s.LogFormat)
	}
	if s.LogLevel != "warn" {
		t.Errorf("the environment should beat the command's default: %q", s.LogLevel)
	}
	if s.ListenAddress != "127.0.0.1:9" {
		t.Errorf("the command's default should beat the built-in one: %q", s.ListenAddress)
	}
	if _, err := LoadWithDefaults(nil, env(nil), map[string]string{"MIGRATE_ON_START": "maybe"}); err == nil || !strings.Contains(err.Error(), "MIGRATE_ON_START") {
		t.Errorf("a bad command default is reported by name: %v", err)
	}
}
