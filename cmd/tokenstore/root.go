package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/settings"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tokenstore",
		Short: "Keep OAuth2 refresh tokens safe; hand out fresh access tokens",
		Long: `tokenstore keeps people's OAuth2 / OpenID Connect refresh tokens, encrypted,
and hands out fresh access tokens to their apps and to in-cluster workloads.

Settings are read, each overriding the one before, from built-in defaults, the
file named by $TOKENSTORE_SETTINGS (or --settings: the Flask service's Python
settings file, or YAML; docs/migrating.md), TOKENSTORE_-prefixed
environment variables (TOKENSTORE_DATABASE_URL, TOKENSTORE_CRYPTOKEY, ...) and
flags. Run 'tokenstore serve --help' for the full list.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCmd(),
		newDevCmd(),
		newMigrateCmd(),
		newKeysCmd(),
		newProvidersCmd(),
		newImportCmd(),
		newVersionCmd(),
		newProbeCmd(),
		newAdminCmd(),
	)
	return root
}

// loadSettings reads the settings for cmd, whose flags were added with
// settings.AddFlags, checks that reqs are met (every fault in one error),
// and logs any warnings about them.
func loadSettings(cmd *cobra.Command, reqs ...settings.Requirement) (*settings.Settings, *slog.Logger, error) {
	s, err := settings.Load(cmd.Flags(), os.LookupEnv, reqs...)
	if err != nil {
		return nil, nil, err
	}
	return s, warnedLogger(s), nil
}

// warnedLogger returns the logger s asks for, having logged s's warnings
// with it: every command that loads settings says what it ignores.
func warnedLogger(s *settings.Settings) *slog.Logger {
	log := app.NewLogger(s)
	for _, w := range s.Warnings {
		log.Warn(w)
	}
	return log
}
