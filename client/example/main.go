// Command example is a workload that calls an outside API with an access
// token from tokenstore. Run it in a pod whose ServiceAccount token is
// projected with tokenstore's audience (docs/workloads.md):
//
//	TOKENSTORE_URL=http://tokenstore.tokenstore.svc \
//	TOKENSTORE_PROVIDER=github \
//	TARGET_URL=https://api.github.com/user \
//	example
//
// With TOKENSTORE_SUBJECT=<user id> it uses the access token of the person
// who granted this ServiceAccount access; without, the provider's service
// (client-credentials) token. It calls TARGET_URL every INTERVAL (a Go
// duration, default 1m); INTERVAL=0 calls once and exits non-zero when that
// call could not be made (a Job, or a check). It never prints a token.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	target := os.Getenv("TARGET_URL")
	if target == "" {
		log.Fatal("set TARGET_URL to the API to call")
	}
	ts := client.TokenSource(ctx, client.Options{
		URL:       os.Getenv("TOKENSTORE_URL"),
		Provider:  os.Getenv("TOKENSTORE_PROVIDER"),
		Subject:   os.Getenv("TOKENSTORE_SUBJECT"),
		TokenFile: os.Getenv("TOKENSTORE_TOKEN_FILE"), // default /var/run/secrets/tokenstore/token
	})
	interval := time.Minute
	if v := os.Getenv("INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			log.Fatalf("INTERVAL=%q is not a duration such as 30s or 0", v)
		}
		interval = d
	}
	// Every request gets a valid token; tokenstore is asked again only
	// shortly before the cached one expires.
	hc := oauth2.NewClient(ctx, ts)
	hc.Timeout = 30 * time.Second
	for {
		err := call(ctx, hc, target)
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) {
				// reason says what to fix: no_grant, wrong_audience, ...
				log.Printf("tokenstore refused: %s (%s): %s", ce.Code, ce.Reason, ce.Description)
			} else {
				log.Printf("call failed: %v", err)
			}
		}
		if interval == 0 {
			if err != nil {
				os.Exit(1)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

func call(ctx context.Context, hc *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	fmt.Printf("%s %s: %s, %d bytes\n", time.Now().Format(time.RFC3339), target, resp.Status, n)
	return nil
}
