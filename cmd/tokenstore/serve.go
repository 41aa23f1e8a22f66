package main

import (
	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/settings"
)

func newServeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the API server",
		Long: `Runs the HTTP API on LISTEN_ADDRESS against DATABASE_URL, with tokens sealed
under CRYPTOKEY and people signing in at OIDC_DISCOVERY_URL. Token providers
come from PROVIDERS_FILE (TokenProvider and Secret manifests) and/or the
TokenProviders of WATCH_NAMESPACE in Kubernetes. With MIGRATE_ON_START=true
pending migrations are applied first. Stops gracefully on SIGTERM: no new
requests, in-flight ones finish.

Every setting can be given in the settings file, as a TOKENSTORE_ environment
variable or as the flag listed below.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, log, err := loadSettings(cmd, settings.RequireCryptoKey, settings.RequireLogin)
			if err != nil {
				return err
			}
			svc, err := app.New(cmd.Context(), s, log, app.Options{Version: version, Migrate: s.MigrateOnStart})
			if err != nil {
				return err
			}
			defer svc.Close()
			log.Info("starting", "version", version, "providers", app.DescribeSources(s))
			return svc.Run(cmd.Context())
		},
	}
	settings.AddFlags(c.Flags())
	return c
}
