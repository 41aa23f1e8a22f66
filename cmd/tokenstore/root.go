package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/server/config"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tokenstore",
		Short: "Keep OAuth2 refresh tokens safe; hand out fresh access tokens",
		Long: `tokenstore keeps people's OAuth2 / OpenID Connect refresh tokens, encrypted,
and hands out fresh access tokens to their apps and to in-cluster workloads.

Settings are read, each overriding the one before, from built-in defaults, the
YAML file named by $TOKENSTORE_SETTINGS (or --settings), TOKENSTORE_-prefixed
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
	)
	return root
}

// loadSettings reads the settings for cmd, whose flags were added with
// config.AddFlags, and logs any warnings about them.
func loadSettings(cmd *cobra.Command) (*config.Settings, *slog.Logger, error) {
	s, err := config.Load(cmd.Flags(), os.LookupEnv)
	if err != nil {
		return nil, nil, err
	}
	log := newLogger(s)
	for _, w := range s.Warnings {
		log.Warn(w)
	}
	return s, log, nil
}

func newLogger(s *config.Settings) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(s.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if s.LogFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	return l
}
