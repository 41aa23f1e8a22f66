//go:build dev

// The dev mode's wiring, compiled only with -tags dev (as the command and
// internal/devidp): demo users with printed passwords and an endpoint that
// trades a password for a token must never ship in the production binary.

package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/devidp"
	"github.com/tokenstore/tokenstore/internal/settings"
)

// devLoginClient is the dev server's client at the development provider.
const devLoginClient = "tokenstore-dev"

// devProvider is a demo token provider played by the development OpenID
// Provider: one client there, one TokenProvider in the manifests file.
type devProvider struct {
	ID, Name, Description, Scopes string
}

var devProviders = []devProvider{
	{ID: "demo-drive", Name: "Demo Drive", Description: "Files in a pretend cloud drive (read only).", Scopes: `["openid", "email", "offline_access", "files.read"]`},
	{ID: "demo-calendar", Name: "Demo Calendar", Description: "A pretend calendar: read and write events.", Scopes: `["openid", "profile", "offline_access", "calendar.events"]`},
}

// DevOptions are what `tokenstore dev` hands RunDev.
type DevOptions struct {
	// DataDir holds the SQLite database, the generated key and
	// providers.yaml.
	DataDir string
	// IDPAddress is the development provider's host:port; empty means
	// Listen's port plus one.
	IDPAddress string
	// Listen and External are LISTEN_ADDRESS and EXTERNAL_URL as the user
	// set them with flags or variables, or their dev defaults: the demo
	// provider's redirect URIs are built from them before the settings
	// load.
	Listen, External string
	// Flags are the command's flags (settings flags among them).
	Flags *pflag.FlagSet
	// Out hears the banner, Err the warnings.
	Out, Err io.Writer
	Version  string
}

// RunDev runs tokenstore dev: the service on its embedded dev defaults and
// the development OpenID Provider, both on loopback, until ctx ends.
func RunDev(ctx context.Context, o DevOptions) error {
	dataDir, idpAddress, listen := o.DataDir, o.IDPAddress, o.Listen
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("dev: data dir: %w", err)
	}
	key, err := devKey(filepath.Join(dataDir, "cryptokey"))
	if err != nil {
		return err
	}
	if err := requireLoopback(listen); err != nil {
		return err
	}
	if idpAddress == "" {
		if idpAddress, err = nextPort(listen); err != nil {
			return err
		}
	}
	if err := requireLoopbackFor("--idp-address", idpAddress); err != nil {
		return err
	}
	external := strings.TrimSuffix(o.External, "/")
	issuer := "http://" + idpAddress
	manifests := filepath.Join(dataDir, "providers.yaml")
	if err := writeDevManifests(manifests, issuer, external, key); err != nil {
		return err
	}
	warnStaleManifests(o.Err, manifests, issuer)

	// Embedded defaults, below what the user set in the settings file, the
	// environment or with flags.
	defaults := map[string]string{
		"LISTEN_ADDRESS":     listen,
		"EXTERNAL_URL":       external,
		"DATABASE_URL":       "sqlite://" + filepath.Join(dataDir, "tokenstore.db"),
		"CRYPTOKEY":          key,
		"LOG_FORMAT":         "text",
		"OIDC_DISCOVERY_URL": issuer + "/.well-known/openid-configuration",
		"OIDC_CLIENT_ID":     devLoginClient,
		"OIDC_CLIENT_SECRET": devSecret(key, devLoginClient),
		"PROVIDERS_FILE":     manifests,
		// No metrics listener unless asked for (on loopback, checked
		// below): serve's default, :9090, listens on every interface.
		"METRICS_ADDRESS": "",
	}
	s, err := settings.LoadWithDefaults(o.Flags, os.LookupEnv, defaults)
	if err != nil {
		return err
	}
	log := NewLogger(s)
	for _, w := range s.Warnings {
		log.Warn(w)
	}
	if s.ListenAddress != listen || s.ExternalURL != external {
		// The demo provider's redirect URIs were built from the flag or
		// variable values above, before the settings file was read.
		return errors.New("LISTEN_ADDRESS, EXTERNAL_URL: in dev, set these with flags or TOKENSTORE_ variables, not in the settings file")
	}
	if s.MetricsAddress != "" {
		if err := requireLoopbackFor("METRICS_ADDRESS", s.MetricsAddress); err != nil {
			return err
		}
	}

	clients := []devidp.Client{{ID: devLoginClient, Secret: devSecret(key, devLoginClient), RedirectURIs: []string{external + "/api/oidc/callback"}}}
	for _, p := range devProviders {
		clients = append(clients, devidp.Client{ID: p.ID, Secret: devSecret(key, p.ID), RedirectURIs: []string{external + "/api/v1.0/" + p.ID + "/redirect_uri"}})
	}
	users := devidp.DemoUsers()
	idp, err := devidp.New(devidp.Options{Issuer: issuer, Users: users, Clients: clients, Logger: log})
	if err != nil {
		return err
	}
	// The provider listens before the service starts, so the file source's
	// first discovery of the demo providers finds it.
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", idpAddress)
	if err != nil {
		return fmt.Errorf("dev: the development OpenID Provider cannot listen on %s (choose another with --idp-address): %w", idpAddress, err)
	}
	svc, err := New(ctx, s, log, Options{Version: o.Version, Migrate: true})
	if err != nil {
		ln.Close()
		return err
	}
	defer svc.Close()

	printDevBanner(o.Out, s.ExternalURL, issuer, dataDir, manifests, users)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return idp.Serve(gctx, ln) })
	g.Go(func() error {
		err := svc.Run(gctx)
		if err == nil && ctx.Err() == nil {
			// The service stopped on its own; stop the provider too.
			return errors.New("dev: the service stopped")
		}
		return err
	})
	if err := g.Wait(); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// nextPort is addr with its port plus one: the provider's default address,
// so two dev servers on different ports do not collide.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("LISTEN_ADDRESS: %q is not host:port: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n >= 65535 {
		return "", fmt.Errorf("LISTEN_ADDRESS: %q needs a fixed port in dev mode (the provider's address derives from it; or set --idp-address)", addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(n+1)), nil
}

// devSecret derives a client secret at the development provider from the
// dev encryption key: stable across restarts (providers.yaml holds it)
// without another file, and different on every machine.
func devSecret(key, client string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("tokenstore dev client secret\x00" + client))
	return hex.EncodeToString(m.Sum(nil))[:40]
}

// writeDevManifests writes the demo TokenProviders and their Secrets on
// first start. An existing file is the user's: it is never overwritten.
func writeDevManifests(path, issuer, external, key string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dev: %s: %w", path, err)
	}
	var b strings.Builder
	b.WriteString(`# TokenProviders of "tokenstore dev", written on first start. Edit freely:
# tokenstore reloads this file while it runs (the file source; the same
# manifests a cluster would hold). The demo providers are clients of the
# development OpenID Provider at ` + issuer + `, which only knows
# the client ids and secrets below; add your own providers beside them.
`)
	for _, p := range devProviders {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Secret
metadata:
  name: %[1]s-client
type: Opaque
stringData:
  clientSecret: %[2]s
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: %[1]s
spec:
  discoveryURL: %[3]s/.well-known/openid-configuration
  clientID: %[1]s
  clientSecretRef:
    name: %[1]s-client
  scopes: %[4]s
  metadata:
    name: %[5]s
    description: %[6]q
    url: %[3]s
    logo: %[7]s/ui/img/%[1]s.svg
`, p.ID, devSecret(key, p.ID), issuer, p.Scopes, p.Name, p.Description, external)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("dev: writing %s: %w", path, err)
	}
	return nil
}

// warnStaleManifests says when providers.yaml was written for a development
// provider at another address (dev started earlier with other ports): its
// demo providers would fail discovery, and the log alone would not say why.
func warnStaleManifests(w io.Writer, path, issuer string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	const marker = "development OpenID Provider at "
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		return // not written by dev, or the comment was edited away
	}
	old, _, _ := strings.Cut(rest, ",")
	if old = strings.TrimSpace(old); old != issuer {
		fmt.Fprintf(w, "warning: %s was written for the development provider at %s, which now listens at %s;\n"+
			"  its demo providers will not work: start with the earlier addresses, edit the file, or delete it to have it written again.\n", path, old, issuer)
	}
}

func printDevBanner(w io.Writer, external, issuer, dataDir, manifests string, users []devidp.User) {
	u := users[0]
	fmt.Fprintf(w, `
tokenstore dev is running (loopback only; data in %s)

  Open   %s/
  Sign in as a demo user at the development provider (%s):
`, dataDir, external, issuer)
	for _, x := range users {
		fmt.Fprintf(w, "    %-8s password %s\n", x.Username, x.Password)
	}
	fmt.Fprintf(w, `  Providers come from %s (edit it while this runs).

  After connecting Demo Drive on the page, fetch its access token from a terminal
  with a bearer token of the login provider (here issued for a demo user's password):
    TOKEN=$(curl -s -u %s:%s -X POST %s/dev/token)
    curl -H "Authorization: Bearer $TOKEN" %s/api/v1.0/demo-drive/token

  Health: curl %s/readyz    Stop: Ctrl-C

`, manifests, u.Username, u.Password, issuer, external, external)
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
// machine: it has demo users and passwords that must never face a network.
func requireLoopback(addr string) error { return requireLoopbackFor("LISTEN_ADDRESS", addr) }

func requireLoopbackFor(name, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", name, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s: dev mode listens on loopback only (127.0.0.1 or ::1), not %q; use `tokenstore serve` for anything reachable from other machines", name, addr)
}
