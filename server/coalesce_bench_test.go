package server

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// BenchmarkCoalescing: 500 concurrent requests for one credential whose
// access token has just expired, on one instance and spread over two
// sharing the database. Every burst must cause exactly one refresh at the
// provider (single flight in a process, the row lock across processes) and
// every caller must get the same new token; the benchmark fails otherwise.
// ns/op is the time one burst takes to be answered in full.
func BenchmarkCoalescing(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(map[int]string{1: "one-instance", 2: "two-instances"}[n], func(b *testing.B) {
			e := newEnv(b)
			ins := []*instance{e.instances[0]}
			if n == 2 {
				ins = append(ins, e.startInstance(nil))
			}
			br := e.browser()
			br.loginAt(ins[0], "")
			user := br.whoami(ins[0])
			br.link(ins[0], "alpha")
			// 500 keep-alive connections, reused burst after burst.
			br.client.Transport = &http.Transport{MaxIdleConnsPerHost: 500, MaxConnsPerHost: 500, IdleConnTimeout: time.Minute}
			tp := e.providers["alpha"]
			const callers = 500
			var bursts, refreshes int64
			first := tp.refresh.Load()
			for b.Loop() {
				b.StopTimer()
				e.expire(user, "alpha")
				before := tp.refresh.Load()
				b.StartTimer()
				toks := burst(b, br, ins, callers)
				b.StopTimer()
				if got := tp.refresh.Load() - before; got != 1 {
					b.Fatalf("%d refreshes at the provider for %d concurrent requests, want 1", got, callers)
				}
				for _, tk := range toks {
					if tk == "" || tk != toks[0] {
						b.Fatal("callers of one burst were served different tokens")
					}
				}
				bursts++
				b.StartTimer()
			}
			refreshes = tp.refresh.Load() - first
			b.ReportMetric(float64(refreshes)/float64(bursts), "refreshes/burst")
			b.ReportMetric(callers, "callers/burst")
			e.checkLogs()
		})
	}
}

// burst sends n token requests at once, spread over ins, and returns the
// access tokens served (empty for a failed request, which fails b).
func burst(b *testing.B, br *browser, ins []*instance, n int) []string {
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]string, n)
	var mu sync.Mutex
	var failed []string
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequestWithContext(br.e.ctx, http.MethodGet, ins[i%len(ins)].url+"/api/v1.0/alpha/token", nil)
			resp, err := br.client.Do(req)
			if err != nil {
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			var ta tokenAnswer
			if err == nil {
				err = jsonUnmarshal(body, &ta)
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				mu.Lock()
				failed = append(failed, resp.Status)
				mu.Unlock()
				return
			}
			br.e.see("access_token", ta.AccessToken)
			got[i] = ta.AccessToken
		}()
	}
	close(start)
	wg.Wait()
	if len(failed) > 0 {
		b.Fatalf("%d of %d requests failed, first: %s", len(failed), n, failed[0])
	}
	return got
}
