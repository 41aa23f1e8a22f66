package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fernet/fernet-go"

	"github.com/tokenstore/tokenstore/internal/crypto"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

// The command wires settings, old keys and progress output around
// flaskimport.Run, and fails at the end when a row could not be read.
func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	oldPath := filepath.Join(dir, "old.db")
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k := new(fernet.Key)
	copy(k[:], raw)
	tok, err := fernet.EncryptAndSign([]byte("rt-secret-value"), k)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+oldPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE refresh_token (id INTEGER PRIMARY KEY, provider TEXT, token BLOB, expires_in INTEGER, expires_at FLOAT, user_id TEXT)`,
		`INSERT INTO refresh_token (provider, token, user_id) VALUES ('idp1', x'` + hex.EncodeToString(tok) + `', 'alice')`,
		`INSERT INTO refresh_token (provider, token, user_id) VALUES ('idp1', x'00', 'bob')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

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
	t.Setenv("TOKENSTORE_OLD_CRYPTOKEY", hex.EncodeToString(raw))
	t.Setenv("TOKENSTORE_LOG_FORMAT", "text")

	run := func() (string, error) {
		cmd := newImportCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--from", "sqlite:///" + oldPath, "--progress-every", "1"})
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run()
	if err == nil || !strings.Contains(err.Error(), "1 rows could not be read") {
		t.Fatalf("want a failure for the corrupt row, got %v\n%s", err, out)
	}
	for _, want := range []string{"1/2 rows", "2/2 rows", "1 imported, 0 unchanged, 0 kept, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rt-secret-value") || strings.Contains(out, hex.EncodeToString(raw)) {
		t.Fatal("output shows a token or key")
	}
	out, _ = run()
	if !strings.Contains(out, "0 imported, 1 unchanged") {
		t.Errorf("second run:\n%s", out)
	}

	t.Setenv("TOKENSTORE_OLD_CRYPTOKEY", "")
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "TOKENSTORE_OLD_CRYPTOKEY") {
		t.Errorf("missing old key: %v", err)
	}
}
