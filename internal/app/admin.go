package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/filesource"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

// adminProvidersWait bounds how long `tokenstore admin` waits for the
// providers file to be resolved (discovery of every provider, once).
const adminProvidersWait = 30 * time.Second

// Admin is what `tokenstore admin` works with: the store and the admin
// service on it. Close it when done.
type Admin struct {
	Store   store.Store
	Service *admin.Service
	// Registry holds the providers of PROVIDERS_FILE, whose revocation
	// endpoints revocations use; empty without one.
	Registry *providers.Registry
	stop     func()
}

// OpenAdmin opens the store (its schema must be current, as for serve)
// and builds the admin service. Providers, for revocation at the
// provider, come from PROVIDERS_FILE, read and resolved once; the
// Kubernetes source (WATCH_NAMESPACE) is not read by a command-line tool
// (it would contend for the status writer's lease): revoke through the
// admin API of a running server, or give the command a PROVIDERS_FILE,
// to reach those providers. A credential of a provider the registry lacks
// is still forgotten, and the answer says it was not revoked there.
func OpenAdmin(ctx context.Context, s *settings.Settings, log *slog.Logger) (_ *Admin, err error) {
	keys, err := crypto.ParseKeyRing(s.CryptoKey)
	if err != nil {
		return nil, err
	}
	st, err := storeopen.Open(ctx, s.DatabaseURL)
	if err != nil {
		return nil, err
	}
	a := &Admin{Store: st, Registry: providers.NewRegistry(), stop: func() {}}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err = prepareSchema(ctx, s.DatabaseURL, log, false); err != nil {
		return nil, err
	}
	httpClient := &http.Client{Timeout: 20 * time.Second, Transport: providers.Transport()}
	if s.ProvidersFile != "" {
		if err = a.loadProviders(ctx, s.ProvidersFile, log, httpClient); err != nil {
			return nil, err
		}
	} else if s.WatchNamespace != "" {
		log.Warn("the Kubernetes source (WATCH_NAMESPACE) is not read by `tokenstore admin`: credentials are forgotten but not revoked at their provider; use the admin API or set PROVIDERS_FILE")
	}
	b, err := broker.New(broker.Options{Store: st, Keys: keys, Providers: a.Registry, HTTPClient: httpClient, Logger: log})
	if err != nil {
		return nil, err
	}
	// No grant cache: a command line reads every grant it acts on.
	d := delegation.NewService(delegation.ServiceOptions{Store: st, Logger: log})
	if a.Service, err = admin.New(admin.Options{Store: st, Broker: b, Delegation: d, Logger: log}); err != nil {
		return nil, err
	}
	return a, nil
}

// loadProviders fills the registry from the providers file and waits
// until each provider was resolved once.
func (a *Admin) loadProviders(ctx context.Context, path string, log *slog.Logger, httpClient *http.Client) error {
	src, err := filesource.New(filesource.Options{Path: path, Registry: a.Registry,
		Discoverer: providers.NewDiscoverer(httpClient, providers.DiscovererOptions{}), Logger: log.With("source", "file")})
	if err != nil {
		return fmt.Errorf("PROVIDERS_FILE: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	a.stop = func() { cancel(); <-done }
	select {
	case <-src.ReadyC():
		return nil
	case err := <-done:
		done <- err // for stop
		if err == nil {
			err = errors.New("stopped before reading it")
		}
		return fmt.Errorf("PROVIDERS_FILE: %w", err)
	case <-time.After(adminProvidersWait):
		return fmt.Errorf("PROVIDERS_FILE: its providers were not resolved within %s", adminProvidersWait)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the providers file source and closes the store.
func (a *Admin) Close() {
	a.stop()
	_ = a.Store.Close()
}
