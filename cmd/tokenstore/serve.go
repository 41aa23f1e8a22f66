package main

import (
	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/server"
	"github.com/tokenstore/tokenstore/server/config"
	"github.com/tokenstore/tokenstore/server/crypto"
	storeopen "github.com/tokenstore/tokenstore/server/store/open"
)

func newServeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the API server",
		Long: `Runs the HTTP API on LISTEN_ADDRESS against DATABASE_URL, with tokens sealed
under CRYPTOKEY. With MIGRATE_ON_START=true pending migrations are applied
first. Stops gracefully on SIGTERM: no new requests, in-flight ones finish.

Every setting can be given in the settings file, as a TOKENSTORE_ environment
variable or as the flag listed below.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, log, err := loadSettings(cmd)
			if err != nil {
				return err
			}
			if err := s.Require(config.RequireCryptoKey); err != nil {
				return err
			}
			if _, err := crypto.ParseKeyRing(s.CryptoKey); err != nil {
				return err
			}
			ctx := cmd.Context()
			if s.MigrateOnStart {
				mg, err := storeopen.NewMigrator(s.DatabaseURL)
				if err != nil {
					return err
				}
				_, err = mg.Up(ctx)
				mg.Close()
				if err != nil {
					return err
				}
			}
			st, err := storeopen.Open(ctx, s.DatabaseURL)
			if err != nil {
				return err
			}
			defer st.Close()
			srv, err := server.New(server.Options{Settings: s, Store: st, Logger: log})
			if err != nil {
				return err
			}
			return srv.Serve(ctx)
		},
	}
	config.AddFlags(c.Flags())
	return c
}
