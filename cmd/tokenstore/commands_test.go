package main

import (
	"bytes"
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/crypto"
	sqlfiles "github.com/tokenstore/tokenstore/sql"
)

// run executes the root command in-process with args and the given
// environment (t.Setenv), returning stdout, stderr and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// TestEveryCommandHasHelp walks the command tree: each command says what it
// does, so `tokenstore help X` is never empty.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		seen++
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("command %q has no short help", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(sub)
		}
	}
	walk(newRootCmd())
	for _, want := range []string{"serve", "dev", "migrate", "keys", "providers", "import", "version"} {
		if _, _, err := newRootCmd().Find([]string{want}); err != nil {
			t.Errorf("no %s command: %v", want, err)
		}
	}
	if seen < 10 {
		t.Errorf("walked only %d commands", seen)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "tokenstore dev") {
		t.Fatalf("version: %q %v", out, err)
	}
}

func TestKeysGenerateGivesAUsableKey(t *testing.T) {
	out, _, err := run(t, "keys", "generate")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.ParseKeyRing(strings.TrimSpace(out)); err != nil {
		t.Fatalf("generated key %q does not parse: %v", out, err)
	}
}

// TestMigrateAndRotateOnSQLite runs the operator's commands against a real
// database file: status before and after, up, rotate with progress, down.
func TestMigrateAndRotateOnSQLite(t *testing.T) {
	db := "sqlite://" + filepath.Join(t.TempDir(), "ts.db")
	t.Setenv("TOKENSTORE_DATABASE_URL", db)

	out, _, err := run(t, "migrate", "status")
	if err != nil || !strings.Contains(out, "00001_init.sql") || !strings.Contains(out, "pending") {
		t.Fatalf("status before: %q %v", out, err)
	}
	if out, _, err = run(t, "migrate", "up"); err != nil || !strings.Contains(out, "applied 00001_init.sql") {
		t.Fatalf("up: %q %v", out, err)
	}
	if out, _, err = run(t, "migrate", "up"); err != nil || strings.Contains(out, "applied") {
		t.Fatalf("second up should do nothing: %q %v", out, err)
	}

	k1, _ := crypto.GenerateKey()
	k2, _ := crypto.GenerateKey()
	t.Setenv("TOKENSTORE_CRYPTOKEY", k2+","+k1)
	_, errOut, err := run(t, "keys", "rotate")
	if err != nil || !strings.Contains(errOut, "done: 0 re-encrypted") {
		t.Fatalf("rotate on an empty store: %q %v", errOut, err)
	}

	// A flag beats the environment.
	other := "sqlite://" + filepath.Join(t.TempDir(), "other.db")
	if out, _, err = run(t, "migrate", "status", "--database-url", other); err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("status of the flag's database: %q %v", out, err)
	}
	// down undoes the newest embedded migration.
	names, err := fs.Glob(sqlfiles.SQLiteMigrations(), "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("embedded migrations: %v %v", names, err)
	}
	newest := names[len(names)-1]
	if out, _, err = run(t, "migrate", "down"); err != nil || !strings.Contains(out, "undid "+newest) {
		t.Fatalf("down: %q %v", out, err)
	}
}

func TestServeRefusesMissingSettingsNamingThem(t *testing.T) {
	t.Setenv("TOKENSTORE_DATABASE_URL", "sqlite://"+filepath.Join(t.TempDir(), "ts.db"))
	_, _, err := run(t, "serve")
	if err == nil {
		t.Fatal("serve started without CRYPTOKEY and login settings")
	}
	for _, want := range []string{"CRYPTOKEY: missing", "OIDC_DISCOVERY_URL: missing", "OIDC_CLIENT_ID: missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	t.Setenv("TOKENSTORE_CRYPTOKEY", "too-short")
	t.Setenv("TOKENSTORE_OIDC_DISCOVERY_URL", "https://idp.example/.well-known/openid-configuration")
	t.Setenv("TOKENSTORE_OIDC_CLIENT_ID", "tokenstore")
	_, _, err = run(t, "serve")
	if err == nil || !strings.Contains(err.Error(), "CRYPTOKEY: key 1: 9 characters") || strings.Contains(err.Error(), "too-short") {
		t.Fatalf("bad key: %v", err)
	}
}
