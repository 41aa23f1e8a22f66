//go:build dev

// Command testidp runs the dev identity provider (internal/devidp: zitadel's
// op package with its example storage and a login page) as a pod of the
// local cluster, so the cluster suite signs people in and links accounts
// against a real OpenID Provider that tokenstore's pods reach through a
// Service, as they would reach a company's identity provider.
//
// Settings come from the environment:
//
//	ISSUER   the provider's public base URL (what both the pods and the
//	         test process, playing the browser, use), e.g. http://10.96.77.10
//	LISTEN   address to listen on (default :5556)
//	CLIENTS  JSON array of {"id", "secret", "redirect_uris": [...]} web
//	         clients; the first is the one /dev/token issues tokens for
//	         (tokenstore's login client)
//
// The demo users (alice, bob) and the example storage's client-credentials
// client (sid1) come with devidp. For tests only: it is built with -tags dev
// and never ships in the tokenstore image.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenstore/tokenstore/internal/devidp"
)

type client struct {
	ID           string   `json:"id"`
	Secret       string   `json:"secret"`
	RedirectURIs []string `json:"redirect_uris"`
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("testidp stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	issuer := os.Getenv("ISSUER")
	if issuer == "" {
		return fmt.Errorf("set ISSUER to the provider's public base URL")
	}
	listen := os.Getenv("LISTEN")
	if listen == "" {
		listen = ":5556"
	}
	var cs []client
	if err := json.Unmarshal([]byte(os.Getenv("CLIENTS")), &cs); err != nil {
		return fmt.Errorf("reading CLIENTS (a JSON array of {id, secret, redirect_uris}): %w", err)
	}
	opt := devidp.Options{Issuer: issuer, Users: devidp.DemoUsers(), Logger: log}
	for _, c := range cs {
		opt.Clients = append(opt.Clients, devidp.Client{ID: c.ID, Secret: c.Secret, RedirectURIs: c.RedirectURIs})
	}
	idp, err := devidp.New(opt)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("testidp serving", "issuer", issuer, "listen", ln.Addr().String(), "clients", len(cs))
	return idp.Serve(ctx, ln)
}
