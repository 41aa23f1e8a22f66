//go:build dev

// The dev command and the development OpenID Provider it runs
// (internal/devidp) are compiled only with -tags dev: demo users with printed
// passwords and an endpoint that trades a password for a token must never
// ship in the production binary or image. dev_off.go stands in for this
// command in every other build.

package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/settings"
)

func newDevCmd() *cobra.Command {
	var dataDir, idpAddress string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run tokenstore locally with a demo identity provider (SQLite, loopback only)",
		Long: `Runs the whole service in one process on this machine, for trying it out and
for development:

  - the API and the web page on LISTEN_ADDRESS (default 127.0.0.1:8080);
  - the store in SQLite in --data-dir (kept across restarts), with an
    encryption key generated there on first start; migrations run at start;
  - a development OpenID Provider on --idp-address (default: the API's port
    plus one) that signs people in and plays two demo token providers, with
    demo users whose passwords are printed at start;
  - the token providers from <data-dir>/providers.yaml, written on first
    start (TokenProvider and Secret manifests); edit it while this runs.

Everything listens on loopback only; other addresses are refused. Settings
(TOKENSTORE_ variables, flags) still apply on top of these defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The listen address is needed before the settings load: the
			// external URL, the provider's address and the redirect URIs
			// derive from it.
			listen := userSetting(cmd, "LISTEN_ADDRESS", "127.0.0.1:8080")
			return app.RunDev(cmd.Context(), app.DevOptions{DataDir: dataDir, IDPAddress: idpAddress,
				Listen: listen, External: userSetting(cmd, "EXTERNAL_URL", "http://"+listen),
				Flags: cmd.Flags(), Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr(), Version: version})
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", ".tokenstore-dev", "folder for the SQLite database, the generated key and providers.yaml")
	c.Flags().StringVar(&idpAddress, "idp-address", "", "loopback host:port of the development OpenID Provider (default: LISTEN_ADDRESS's port + 1)")
	settings.AddFlags(c.Flags())
	return c
}

// userSetting is a setting's value from its flag or TOKENSTORE_ variable,
// or def when the user set neither.
func userSetting(cmd *cobra.Command, name, def string) string {
	if f := cmd.Flags().Lookup(settings.FlagName(name)); f != nil && f.Changed {
		return f.Value.String()
	}
	if v, ok := os.LookupEnv(settings.EnvPrefix + name); ok && v != "" {
		return v
	}
	return def
}
