package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/server/config"
	"github.com/tokenstore/tokenstore/server/crypto"
)

func newDevCmd() *cobra.Command {
	var dataDir string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run tokenstore locally on embedded defaults (SQLite, loopback only)",
		Long: `Runs the whole service in one process on this machine, for trying it out and
for development: the store is SQLite in --data-dir (kept across restarts), an
encryption key is generated there on first start, migrations run at start, and
the API listens on loopback only (it refuses any other address).

Settings (file, TOKENSTORE_ variables, flags) still apply on top of these
defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return fmt.Errorf("dev: data dir: %w", err)
			}
			key, err := devKey(filepath.Join(dataDir, "cryptokey"))
			if err != nil {
				return err
			}
			// Embedded defaults, below anything the user set.
			defaults := map[string]string{
				"LISTEN_ADDRESS": "127.0.0.1:8080",
				"EXTERNAL_URL":   "http://127.0.0.1:8080",
				"DATABASE_URL":   "sqlite://" + filepath.Join(dataDir, "tokenstore.db"),
				"CRYPTOKEY":      key,
				"LOG_FORMAT":     "text",
			}
			lookup := func(k string) (string, bool) {
				if v, ok := os.LookupEnv(k); ok {
					return v, true
				}
				v, ok := defaults[strings.TrimPrefix(k, config.EnvPrefix)]
				return v, ok && strings.HasPrefix(k, config.EnvPrefix)
			}
			s, err := config.Load(cmd.Flags(), lookup)
			if err != nil {
				return err
			}
			log := newLogger(s)
			if err := requireLoopback(s.ListenAddress); err != nil {
				return err
			}
			svc, err := newService(cmd.Context(), s, log, true)
			if err != nil {
				return err
			}
			defer svc.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "tokenstore dev: open %s (data in %s)\n  health: curl %s/readyz\n", s.ExternalURL, dataDir, s.ExternalURL)
			return svc.Run(cmd.Context())
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", ".tokenstore-dev", "folder for the SQLite database and the generated key")
	config.AddFlags(c.Flags())
	return c
}

// devKey reads the development encryption key, creating it on first start so
// tokens stored by an earlier run still open.
func devKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("dev: read key: %w", err)
	}
	k, err := crypto.GenerateKey()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(k+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dev: write key: %w", err)
	}
	return k, nil
}

// requireLoopback refuses to expose the development server beyond this
// machine: it has demo defaults that must never face a network.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDRESS: %q is not host:port: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("LISTEN_ADDRESS: dev mode listens on loopback only (127.0.0.1 or ::1), not %q; use `tokenstore serve` for anything reachable from other machines", addr)
}
