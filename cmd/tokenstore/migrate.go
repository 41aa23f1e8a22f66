package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/settings"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

func newMigrateCmd() *cobra.Command {
	m := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, undo or list database schema migrations",
		Long: `The schema migrations are embedded in this binary. 'migrate up' applies every
pending one (safe to run from several replicas at once on PostgreSQL: an
advisory lock serialises them); 'migrate down' undoes the latest one;
'migrate status' lists them. The database is DATABASE_URL.

Migrations only add during a release (expand, then contract a release
later: docs/upgrading.md), so the previous release's servers keep running
on the migrated schema during a rolling upgrade; 'serve' refuses to start
on a schema that lacks one of its own migrations.`,
	}
	run := func(use, short string, f func(cmd *cobra.Command, mg *storeopen.Migrator) error) *cobra.Command {
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				s, _, err := loadSettings(cmd)
				if err != nil {
					return err
				}
				mg, err := storeopen.NewMigrator(s.DatabaseURL)
				if err != nil {
					return err
				}
				defer mg.Close()
				return f(cmd, mg)
			},
		}
		settings.AddFlags(c.Flags())
		return c
	}
	m.AddCommand(
		run("up", "Apply every pending migration", func(cmd *cobra.Command, mg *storeopen.Migrator) error {
			res, err := mg.Up(cmd.Context())
			for _, r := range res {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s in %s\n", r.Name, r.Duration.Round(time.Millisecond))
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "database schema is up to date")
			// A newer release migrated this database (its migrations only
			// add): this binary's servers run on it; nothing is undone.
			if st, err := mg.Schema(cmd.Context()); err == nil && len(st.Newer) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "it also has migrations of a newer release, unknown to this binary: %v\n", st.Newer)
			}
			return nil
		}),
		run("down", "Undo the most recent migration", func(cmd *cobra.Command, mg *storeopen.Migrator) error {
			r, err := mg.Down(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "undid %s\n", r.Name)
			return nil
		}),
		run("status", "List migrations and whether each is applied", func(cmd *cobra.Command, mg *storeopen.Migrator) error {
			st, err := mg.Status(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tNAME\tAPPLIED")
			for _, m := range st {
				applied := "pending"
				if m.Applied {
					applied = m.AppliedAt.Format("2006-01-02 15:04:05Z07:00")
				}
				fmt.Fprintf(w, "%d\t%s\t%s\n", m.Version, m.Name, applied)
			}
			sc, err := mg.Schema(cmd.Context())
			if err != nil {
				return err
			}
			for _, v := range sc.Newer {
				fmt.Fprintf(w, "%d\t(a newer release's, unknown to this binary)\tapplied\n", v)
			}
			return w.Flush()
		}),
	)
	return m
}
