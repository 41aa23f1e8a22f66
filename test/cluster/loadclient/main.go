// Command loadclient is the cluster suite's steady in-cluster client: from a
// pod with a projected ServiceAccount token it asks tokenstore (through its
// Service) for a token at a fixed rate, with one token exchange per request
// (client.Exchanger, no cache), and counts the answers. The suite reads the
// counts over HTTP while it rolls an upgrade and deletes the leader: any
// failed request is a failure of the upgrade.
//
// Settings: TOKENSTORE_URL, TOKENSTORE_PROVIDER, TOKENSTORE_SUBJECT (as the
// client example), RATE (requests per second, default 20), LISTEN (default
// :8080; GET /stats answers the counts as JSON, POST /reset zeroes them).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/client"
)

type stats struct {
	mu       sync.Mutex
	OK       int      `json:"ok"`
	Failed   int      `json:"failed"`
	Failures []string `json:"failures"` // the first 20, never a token
}

func (s *stats) add(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.OK++
		return
	}
	s.Failed++
	if len(s.Failures) < 20 {
		s.Failures = append(s.Failures, time.Now().UTC().Format(time.RFC3339Nano)+" "+err.Error())
	}
	log.Printf("request failed: %v", err)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rate := 20
	if v := os.Getenv("RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			log.Fatalf("RATE=%q: want requests per second, 1..1000", v)
		}
		rate = n
	}
	listen := os.Getenv("LISTEN")
	if listen == "" {
		listen = ":8080"
	}
	x, err := client.New(ctx, client.Options{
		URL:       os.Getenv("TOKENSTORE_URL"),
		Provider:  os.Getenv("TOKENSTORE_PROVIDER"),
		Subject:   os.Getenv("TOKENSTORE_SUBJECT"),
		TokenFile: os.Getenv("TOKENSTORE_TOKEN_FILE"),
		// A short timeout: a request held longer than this during a
		// rollout is a failure the suite must see.
		HTTPClient: &http.Client{Timeout: 5 * time.Second},
	})
	if err != nil {
		log.Fatal(err)
	}
	s := &stats{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		s.OK, s.Failed, s.Failures = 0, 0, nil
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	log.Printf("asking %s for %s tokens, %d a second", os.Getenv("TOKENSTORE_URL"), os.Getenv("TOKENSTORE_PROVIDER"), rate)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			_ = srv.Close()
			return
		case <-tick.C:
			// Each request on its own goroutine, so one slow answer does
			// not lower the rate (and shows up as a failure by its timeout).
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, err := x.Token()
				if err == nil && tok.AccessToken == "" {
					err = errors.New("an answer without an access token")
				}
				s.add(err)
			}()
		}
	}
}
