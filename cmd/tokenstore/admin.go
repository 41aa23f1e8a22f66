package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// adminFlags are the flags every `admin` command shares.
type adminFlags struct {
	actor  string
	output string
}

func newAdminCmd() *cobra.Command {
	var f adminFlags
	adm := &cobra.Command{
		Use:   "admin",
		Short: "Incident response: see and revoke what tokenstore holds for a person or a workload",
		Long: `When a person's account or a workload is compromised, these commands show what
tokenstore holds for it and cut it off: a person's credentials (revoked at the
provider where it has a revocation endpoint, then forgotten), their grants to
workloads and their sessions, and every grant a ServiceAccount holds.

People are named by their user id: the login issuer's subject ("sub"), as the
audit trail and 'GET /api/whoami' show it.

Every command, listings included, writes an audit event into the trail of each
person it concerns, with actor "cli:<name>": --actor, else the operating
system user. The database and keys are the server's settings (DATABASE_URL,
CRYPTOKEY); revocation at a provider needs the provider in PROVIDERS_FILE (the
Kubernetes source is not read here: use the admin API of a running server to
reach those providers). The admin API (/api/v1.0/admin, ADMIN_ROLES) does the
same over HTTP. See docs/operations.md, "Incident response".`,
	}
	adm.PersistentFlags().StringVar(&f.actor, "actor", "", "operator name for the audit trail, recorded as cli:<name> (default: the operating system user)")
	adm.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	settings.AddFlags(adm.PersistentFlags())

	users := &cobra.Command{Use: "users", Short: "Show or sign out a person"}
	users.AddCommand(
		f.command("show USER_ID", "Show a person's credentials and grants", cobra.ExactArgs(1),
			func(c *adminCall, args []string) (any, error) {
				return c.svc.Person(c.ctx, c.actor, args[0])
			}),
		f.command("sign-out USER_ID", "End every session of a person (bearer tokens from the login issuer stay valid until they expire)", cobra.ExactArgs(1),
			func(c *adminCall, args []string) (any, error) {
				n, err := c.svc.EndSessions(c.ctx, c.actor, args[0])
				return sessionsEnded{UserID: args[0], Sessions: n}, err
			}),
	)

	var allCreds bool
	creds := &cobra.Command{Use: "credentials", Short: "List or revoke a person's credentials at token providers"}
	revokeCreds := f.command("revoke USER_ID [PROVIDER]", "Revoke a person's credential at PROVIDER, or every one with --all (at the provider too, where it can)",
		cobra.RangeArgs(1, 2), func(c *adminCall, args []string) (any, error) {
			switch {
			case allCreds && len(args) == 1:
				return c.svc.RevokeCredentials(c.ctx, c.actor, args[0])
			case !allCreds && len(args) == 2:
				r, err := c.svc.RevokeCredential(c.ctx, c.actor, args[0], args[1])
				return []admin.CredentialRevocation{r}, err
			}
			return nil, errors.New("name a PROVIDER, or give --all (and no provider) to revoke every credential of the person")
		})
	revokeCreds.Flags().BoolVar(&allCreds, "all", false, "revoke every credential of the person")
	creds.AddCommand(
		f.command("list USER_ID", "List a person's credentials: provider, state, expiry, scopes (never a token)", cobra.ExactArgs(1),
			func(c *adminCall, args []string) (any, error) {
				return c.svc.Credentials(c.ctx, c.actor, args[0])
			}),
		revokeCreds,
	)

	var grantUser, grantSA string
	var allGrants bool
	grants := &cobra.Command{Use: "grants", Short: "List or revoke grants that let ServiceAccounts use people's accounts"}
	listGrants := f.command("list (USER_ID | --service-account NAMESPACE/NAME)", "List a person's grants, or every grant to a ServiceAccount", cobra.MaximumNArgs(1),
		func(c *adminCall, args []string) (any, error) {
			switch {
			case grantSA != "" && len(args) == 0:
				ns, name, err := workload.ParseServiceAccount(grantSA)
				if err != nil {
					return nil, fmt.Errorf("--service-account: %w", err)
				}
				return c.svc.ServiceAccountGrants(c.ctx, c.actor, ns, name)
			case grantSA == "" && len(args) == 1:
				return c.svc.Grants(c.ctx, c.actor, args[0])
			}
			return nil, errors.New("name a USER_ID, or a ServiceAccount with --service-account (not both)")
		})
	listGrants.Flags().StringVar(&grantSA, "service-account", "", "list the grants to this ServiceAccount (namespace/name) instead")
	revokeGrants := f.command("revoke (GRANT_ID | --user USER_ID --all)", "Revoke one grant by id, or every grant of a person with --user and --all", cobra.MaximumNArgs(1),
		func(c *adminCall, args []string) (any, error) {
			switch {
			case len(args) == 1 && grantUser == "" && !allGrants:
				id, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil || id <= 0 {
					return nil, fmt.Errorf("GRANT_ID %q: want a grant id (a positive number)", args[0])
				}
				r, err := c.svc.RevokeGrant(c.ctx, c.actor, id)
				return []admin.GrantRevocation{r}, err
			case len(args) == 0 && grantUser != "" && allGrants:
				return c.svc.RevokeGrants(c.ctx, c.actor, grantUser)
			}
			return nil, errors.New("name a GRANT_ID, or give --user USER_ID and --all to revoke every grant of the person")
		})
	revokeGrants.Flags().StringVar(&grantUser, "user", "", "the person whose grants --all revokes")
	revokeGrants.Flags().BoolVar(&allGrants, "all", false, "revoke every grant of --user")
	grants.AddCommand(listGrants, revokeGrants)

	var saUID string
	sa := &cobra.Command{Use: "serviceaccount", Aliases: []string{"sa"}, Short: "Cut off a ServiceAccount"}
	revokeSA := f.command("revoke NAMESPACE/NAME", "Revoke every grant to a ServiceAccount, of every person at every provider", cobra.ExactArgs(1),
		func(c *adminCall, args []string) (any, error) {
			ns, name, err := workload.ParseServiceAccount(args[0])
			if err != nil {
				return nil, err
			}
			return c.svc.RevokeServiceAccountGrants(c.ctx, c.actor, ns, name, saUID)
		})
	revokeSA.Flags().StringVar(&saUID, "uid", "", "only the grants a ServiceAccount of this uid could use (bound to it, or made before grants were bound to uids); default: all")
	sa.AddCommand(revokeSA)

	adm.AddCommand(users, creds, grants, sa)
	return adm
}

// sessionsEnded is the answer of `users sign-out`.
type sessionsEnded struct {
	UserID   string `json:"user_id"`
	Sessions int64  `json:"sessions_ended"`
}

// adminCall is one command's run: the admin service and who runs it.
type adminCall struct {
	ctx   context.Context
	svc   *admin.Service
	actor string
}

// command is a leaf command of `admin`: it opens the admin service with
// the settings, runs do, and prints what it returns.
func (f *adminFlags) command(use, short string, args cobra.PositionalArgs, do func(c *adminCall, args []string) (any, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "table" && f.output != "json" {
				return fmt.Errorf("--output %q: want table or json", f.output)
			}
			actor, err := f.actorName()
			if err != nil {
				return err
			}
			s, log, err := loadSettings(cmd)
			if err != nil {
				return err
			}
			if err := s.Require(settings.RequireCryptoKey); err != nil {
				return err
			}
			a, err := app.OpenAdmin(cmd.Context(), s, log)
			if err != nil {
				return err
			}
			defer a.Close()
			v, err := do(&adminCall{ctx: cmd.Context(), svc: a.Service, actor: actor}, args)
			if v != nil && !isNilSlice(v) {
				if perr := printAdmin(cmd.OutOrStdout(), f.output, v); perr != nil && err == nil {
					err = perr
				}
			}
			var ae *admin.Error
			if errors.As(err, &ae) {
				return errors.New(ae.Message)
			}
			return err
		},
	}
}

// actorName is the audit actor: cli:<--actor>, else cli:<os user>.
func (f *adminFlags) actorName() (string, error) {
	name := strings.TrimSpace(f.actor)
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		} else {
			name = os.Getenv("USER")
		}
	}
	if name == "" {
		return "", errors.New("no operator name: give --actor")
	}
	return admin.ActorCLIPrefix + name, nil
}

func isNilSlice(v any) bool {
	switch x := v.(type) {
	case []admin.CredentialRevocation:
		return x == nil
	case []admin.GrantRevocation:
		return x == nil
	case []admin.Credential:
		return x == nil
	case []admin.Grant:
		return x == nil
	}
	return false
}

// printAdmin writes v as JSON or as a table.
func printAdmin(w io.Writer, format string, v any) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch x := v.(type) {
	case admin.Person:
		fmt.Fprintf(tw, "user %s\n\ncredentials:\n", x.UserID)
		credentialTable(tw, x.Credentials)
		fmt.Fprintln(tw, "\ngrants:")
		grantTable(tw, x.Grants)
	case []admin.Credential:
		credentialTable(tw, x)
	case []admin.Grant:
		grantTable(tw, x)
	case []admin.CredentialRevocation:
		fmt.Fprintln(tw, "USER\tPROVIDER\tREVOKED AT PROVIDER\tNOTE")
		for _, r := range x {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", r.UserID, r.Provider, r.AtProvider, dash(r.ProviderError))
		}
		if len(x) == 0 {
			fmt.Fprintln(tw, "(none)")
		}
	case []admin.GrantRevocation:
		fmt.Fprintln(tw, "GRANT\tUSER\tPROVIDER\tSERVICE ACCOUNT\tREVOKED NOW")
		for _, r := range x {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%t\n", r.Grant.ID, r.Grant.UserID, r.Grant.Provider, r.Grant.ServiceAccount, r.Revoked)
		}
		if len(x) == 0 {
			fmt.Fprintln(tw, "(none)")
		}
	case sessionsEnded:
		fmt.Fprintf(tw, "ended %d sessions of %s\n", x.Sessions, x.UserID)
	default:
		return fmt.Errorf("no table for %T", v)
	}
	return tw.Flush()
}

func credentialTable(w io.Writer, cs []admin.Credential) {
	fmt.Fprintln(w, "PROVIDER\tSTATE\tACCESS EXPIRES\tREFRESH EXPIRES\tSCOPES\tLAST USED")
	for _, c := range cs {
		state := string(c.State)
		if c.State == string(store.StateNeedsReauth) && c.StateReason != "" {
			state += " (" + c.StateReason + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Provider, state, when(c.AccessExpiresAt), when(c.RefreshExpiresAt),
			dash(strings.Join(c.Scopes, " ")), when(c.LastUsedAt))
	}
	if len(cs) == 0 {
		fmt.Fprintln(w, "(none)")
	}
}

func grantTable(w io.Writer, gs []admin.Grant) {
	fmt.Fprintln(w, "ID\tUSER\tPROVIDER\tSERVICE ACCOUNT\tUID\tSTATE\tEXPIRES")
	for _, g := range gs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.UserID, g.Provider, g.ServiceAccount, dash(g.ServiceAccount.UID), g.State, when(g.ExpiresAt))
	}
	if len(gs) == 0 {
		fmt.Fprintln(w, "(none)")
	}
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
