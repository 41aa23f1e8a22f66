// Command loadgen hammers tokenstore's token endpoint,
// GET /api/v1.0/{provider}/token, from its own process: C concurrent
// keep-alive connections for D seconds, each request carrying a session
// cookie from a file (one value per line, taken in turn so that the load
// spreads over many people and credentials). It prints one JSON line:
// requests, errors by status, requests/s, p50, p90, p99 and max latency.
//
// With -post FILE it POSTs form bodies instead, one a line of FILE (taken
// in turn the same way), as application/x-www-form-urlencoded to -path
// (default the token-exchange endpoint, /api/oauth2/token): the workload
// benchmark's mode, each line a token exchange with its own ServiceAccount
// token.
//
// It only targets loopback addresses and stops after D (at most 2 minutes):
// a benchmark tool for this machine, not a load-testing service. Token
// values are read and discarded, never printed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type result struct {
	Connections int            `json:"connections"`
	Seconds     float64        `json:"seconds"`
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      map[string]int `json:"errors,omitempty"`
	RPS         float64        `json:"rps"`
	P50ms       float64        `json:"p50_ms"`
	P90ms       float64        `json:"p90_ms"`
	P99ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
}

func main() {
	var (
		base     = flag.String("url", "http://127.0.0.1:18080", "tokenstore base URL (loopback only)")
		provider = flag.String("provider", "alpha", "provider id")
		sessFile = flag.String("sessions", "", "file of session cookie values, one a line")
		cookie   = flag.String("cookie-name", "tokenstore_session", "session cookie name")
		conns    = flag.Int("c", 32, "concurrent connections")
		dur      = flag.Duration("d", 10*time.Second, "how long to send (at most 2m)")
		warmup   = flag.Duration("warmup", time.Second, "requests sent before measuring (not counted)")
		query    = flag.String("query", "", "query string to add, e.g. min_valid=60")
		postFile = flag.String("post", "", "instead of GET with cookies, POST form bodies, one a line of this file, to -path")
		path     = flag.String("path", "/api/oauth2/token", "with -post: the path to POST to")
		opFile   = flag.String("op-refresh", "", "instead of tokenstore, call the OP's token endpoint with refresh_token grants: the fixture's op_refresh.json (the refresh path's reference)")
	)
	flag.Parse()
	if *dur <= 0 || *dur > 2*time.Minute {
		log.Fatal("-d must be between 0 and 2m")
	}
	if *conns < 1 || *conns > 1024 {
		log.Fatal("-c must be between 1 and 1024")
	}
	u, err := url.Parse(*base)
	if err != nil {
		log.Fatalf("-url: %v", err)
	}
	if err := loopbackOnly(u.Hostname()); err != nil {
		log.Fatal(err)
	}
	var direct *opRefresh
	if *opFile != "" {
		if direct, err = readOPRefresh(*opFile); err != nil {
			log.Fatal(err)
		}
	}
	values, err := readLines(*sessFile)
	if err != nil {
		log.Fatal(err)
	}
	target := strings.TrimSuffix(*base, "/") + "/api/v1.0/" + url.PathEscape(*provider) + "/token"
	if *query != "" {
		target += "?" + *query
	}
	post := *postFile != ""
	if post {
		if *sessFile != "" || direct != nil {
			log.Fatal("-post excludes -sessions and -op-refresh")
		}
		if values, err = readLines(*postFile); err != nil {
			log.Fatal(err)
		}
		if len(values) == 0 {
			log.Fatalf("-post %s: no form bodies", *postFile)
		}
		if !strings.HasPrefix(*path, "/") {
			log.Fatal("-path must start with /")
		}
		target = strings.TrimSuffix(*base, "/") + *path
		if *query != "" {
			target += "?" + *query
		}
	}

	tr := &http.Transport{
		MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns,
		IdleConnTimeout: time.Minute, DisableCompression: true,
	}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	run := func(d time.Duration, measure bool) result {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var mu sync.Mutex
		var lat []time.Duration
		errs := map[string]int{}
		var wg sync.WaitGroup
		start := time.Now()
		for w := range *conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				myErrs := map[string]int{}
				// Each connection starts at its own place in the list.
				i := w * len(values) / *conns
				j := w // direct: this connection's refresh tokens are w, w+conns, ...
				for ctx.Err() == nil {
					if direct != nil {
						t0 := time.Now()
						// Not cut short at the deadline: a grant the OP
						// answered but we dropped would lose its successor.
						status, err := direct.refresh(context.WithoutCancel(ctx), client, j)
						switch {
						case err != nil && ctx.Err() == nil:
							myErrs["transport"]++
						case err != nil:
						case status != http.StatusOK:
							myErrs[fmt.Sprint(status)]++
						default:
							mine = append(mine, time.Since(t0))
						}
						if j += *conns; j >= len(direct.RefreshTokens) {
							j = w
						}
						continue
					}
					var req *http.Request
					if post {
						req, _ = http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(values[i%len(values)]))
						req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
						i++
					} else {
						req, _ = http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
					}
					if !post && len(values) > 0 {
						req.AddCookie(&http.Cookie{Name: *cookie, Value: values[i%len(values)]})
						i++
					}
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						if ctx.Err() == nil {
							myErrs["transport"]++
						}
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						myErrs[fmt.Sprint(resp.StatusCode)]++
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				for k, v := range myErrs {
					errs[k] += v
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		el := time.Since(start)
		if !measure {
			return result{}
		}
		slices.Sort(lat)
		r := result{Connections: *conns, Seconds: el.Seconds(), OK: len(lat), Requests: len(lat), RPS: float64(len(lat)) / el.Seconds()}
		for _, n := range errs {
			r.Requests += n
		}
		if len(errs) > 0 {
			r.Errors = errs
		}
		if len(lat) > 0 {
			q := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			r.P50ms, r.P90ms, r.P99ms = q(0.50), q(0.90), q(0.99)
			r.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
		}
		return r
	}
	if *warmup > 0 {
		run(*warmup, false)
	}
	res := run(*dur, true)
	if direct != nil {
		// The OP rotated the refresh tokens: keep their successors for the
		// next run.
		if err := direct.save(*opFile); err != nil {
			log.Fatal(err)
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.OK == 0 {
		os.Exit(1)
	}
}

// loopbackOnly refuses any target that is not this machine.
func loopbackOnly(host string) error {
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("refusing %s: loadgen only targets loopback addresses", host)
		}
	}
	return nil
}

func readLines(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// opRefresh is the fixture's op_refresh.json: the OP's token endpoint, the
// client, and refresh tokens of their own (not tokenstore's), one chain
// each. Each connection uses only its own slots, so a rotated token is
// replaced by its successor without any two requests sharing one.
type opRefresh struct {
	TokenURL      string   `json:"token_url"`
	ClientID      string   `json:"client_id"`
	ClientSecret  string   `json:"client_secret"`
	RefreshTokens []string `json:"refresh_tokens"`
}

func readOPRefresh(path string) (*opRefresh, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var o opRefresh
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u, err := url.Parse(o.TokenURL)
	if err != nil {
		return nil, err
	}
	if err := loopbackOnly(u.Hostname()); err != nil {
		return nil, err
	}
	if len(o.RefreshTokens) == 0 {
		return nil, fmt.Errorf("%s: no refresh tokens", path)
	}
	return &o, nil
}

// refresh spends slot i's refresh token at the OP and keeps its successor.
func (o *opRefresh) refresh(ctx context.Context, client *http.Client, i int) (int, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {o.RefreshTokens[i]}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, o.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var t struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return 0, err
	}
	if t.AccessToken == "" {
		return 0, fmt.Errorf("no access token in the answer")
	}
	if t.RefreshToken != "" {
		o.RefreshTokens[i] = t.RefreshToken
	}
	return http.StatusOK, nil
}

func (o *opRefresh) save(path string) error {
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
