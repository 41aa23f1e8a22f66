package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokenstore/tokenstore/server"
	"github.com/tokenstore/tokenstore/server/config"
	"github.com/tokenstore/tokenstore/server/crypto"
	"github.com/tokenstore/tokenstore/server/store"
	storeopen "github.com/tokenstore/tokenstore/server/store/open"
)

// service is one running tokenstore: what `serve` and `dev` share.
type service struct {
	Settings *config.Settings
	Log      *slog.Logger
	Keys     *crypto.KeyRing
	Store    store.Store
	Sources  *providerSources
	Server   *server.Server
	// HTTPClient calls providers and the login issuer.
	HTTPClient *http.Client
}

// newService checks the settings, migrates when asked, opens the store and
// builds the provider sources and the HTTP server. Close it when done.
func newService(ctx context.Context, s *config.Settings, log *slog.Logger, migrate bool) (*service, error) {
	keys, err := crypto.ParseKeyRing(s.CryptoKey)
	if err != nil {
		return nil, err
	}
	if migrate {
		mg, err := storeopen.NewMigrator(s.DatabaseURL)
		if err != nil {
			return nil, err
		}
		res, err := mg.Up(ctx)
		mg.Close()
		for _, r := range res {
			log.Info("applied migration", "name", r.Name, "duration", r.Duration)
		}
		if err != nil {
			return nil, err
		}
	}
	st, err := storeopen.Open(ctx, s.DatabaseURL)
	if err != nil {
		return nil, err
	}
	svc := &service{Settings: s, Log: log, Keys: keys, Store: st, HTTPClient: &http.Client{Timeout: 20 * time.Second}}
	if svc.Sources, err = newProviderSources(s, log, svc.HTTPClient); err != nil {
		st.Close()
		return nil, err
	}
	svc.Server, err = server.New(server.Options{
		Settings:   s,
		Store:      st,
		Keys:       keys,
		Providers:  svc.Sources.Registry,
		Ready:      svc.Sources.Ready,
		HTTPClient: svc.HTTPClient,
		Logger:     log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return svc, nil
}

// Run serves until ctx ends: the provider sources, the HTTP API and the
// housekeeping loop. The API stops taking requests first and finishes
// in-flight ones; the store is closed last (by Close).
func (svc *service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Sources.Run(gctx) })
	g.Go(func() error {
		err := svc.Server.Serve(gctx)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	g.Go(func() error { svc.housekeeping(gctx); return nil })
	err := g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Close releases the store.
func (svc *service) Close() { svc.Store.Close() }

// housekeeping removes expired sessions and pending links now and then.
// Any replica may do it: the deletes are idempotent.
func (svc *service) housekeeping(ctx context.Context) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		now := time.Now()
		if n, err := svc.Store.DeleteExpiredSessions(ctx, now); err != nil && ctx.Err() == nil {
			svc.Log.Warn("housekeeping: expired sessions", "error", err)
		} else if n > 0 {
			svc.Log.Debug("housekeeping: removed expired sessions", "count", n)
		}
		if _, err := svc.Store.DeleteExpiredLinkStates(ctx, now); err != nil && ctx.Err() == nil {
			svc.Log.Warn("housekeeping: expired link states", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func describeSources(s *config.Settings) string {
	switch {
	case s.ProvidersFile != "" && s.WatchNamespace != "":
		return fmt.Sprintf("file %s and namespace %s", s.ProvidersFile, s.WatchNamespace)
	case s.ProvidersFile != "":
		return "file " + s.ProvidersFile
	case s.WatchNamespace != "":
		return "namespace " + s.WatchNamespace
	}
	return "none"
}
