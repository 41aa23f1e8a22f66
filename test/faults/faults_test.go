//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
)

func testContext(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// seen collects served token values for the log check.
type seen struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *seen) add(v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]bool{}
	}
	s.m[v] = true
	s.mu.Unlock()
}

// TestPostgresDownUnderLoad stops the database (a throwaway cluster of the
// test's own) for 10 s while people ask for tokens, then starts it again:
// no crash and no 500, 503 database_unavailable while it is down (tokens
// cached within the last second may still be served), recovery without a
// restart, and every credential byte-identical before and after.
func TestPostgresDownUnderLoad(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := newCluster(t)
	d := newDeployment(t, ctx, c.database(ctx), "alpha")
	in := d.start()
	var people []*person
	for i := range 5 {
		p := d.newPerson(fmt.Sprintf("person-%d", i))
		p.link("alpha")
		people = append(people, p)
	}
	before := snapshotCredentials(t, ctx, in.store, people, "alpha")
	var tokens seen
	for _, p := range people {
		tok, r := p.token(in, "alpha", "")
		if r.status != http.StatusOK {
			t.Fatalf("token before the outage: %d %s", r.status, r.body)
		}
		tokens.add(tok)
	}

	// Phases: 0 up, 1 down, 2 restarted and recovering, 3 recovered.
	var phase atomic.Int32
	tallies := make([]tally, 4)
	stop := make(chan struct{})
	// lastServedDown is when the last 200 of the outage came back: only
	// rows cached before it (at most cached.DefaultTTL old) can answer then.
	var lastServedDown atomic.Int64
	wg := load(8, 2*time.Minute, stop, func(w int) {
		ph := phase.Load()
		tok, r := people[w%len(people)].token(in, "alpha", "")
		tokens.add(tok)
		// A request sent just before the database is stopped may be
		// answered after (503 is then right): an answer across a phase
		// change counts in the outage phase (1 or 2) of the two.
		counted := ph
		if now := phase.Load(); now != ph && now <= 2 {
			counted = now
		}
		tallies[counted].add(outcome(r))
		if ph == 1 && phase.Load() == 1 && r.status == http.StatusOK {
			lastServedDown.Store(time.Now().UnixNano())
		}
	})
	time.Sleep(2 * time.Second)

	phase.Store(1)
	c.stop()
	downAt := time.Now()
	time.Sleep(3 * time.Second)
	rz := people[0].get(in.url + "/readyz")
	time.Sleep(10*time.Second - time.Since(downAt))
	// Phase 2 begins before the start, so that an answer counted as one of
	// the outage is one given while the database was surely down.
	phase.Store(2)
	c.start()
	upAt := time.Now()
	// Recovered when every person is served again, by the same process.
	for _, p := range people {
		for {
			if _, r := p.token(in, "alpha", ""); r.status == http.StatusOK {
				break
			}
			if time.Since(upAt) > 30*time.Second {
				t.Fatal("not serving 30 s after the database came back")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	recovery := time.Since(upAt)
	phase.Store(3)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	names := []string{"before", "down (10 s)", "restarted", "recovered"}
	for i := range tallies {
		t.Logf("%-12s %v", names[i], tallies[i].snapshot())
	}
	t.Logf("served again %v after the database started; /readyz while down: %d", recovery.Round(time.Millisecond), rz.status)
	for i, want := range []string{"200", "", "", "200"} {
		for k, n := range tallies[i].snapshot() {
			switch {
			case k == "transport_error":
				t.Errorf("%s: %d requests got no HTTP answer (crash or hang)", names[i], n)
			case k[0] == '5' && k != "503 database_unavailable":
				t.Errorf("%s: %d answers %q, want 503 database_unavailable", names[i], n, k)
			case want != "" && k != want:
				t.Errorf("%s: %d answers %q", names[i], n, k)
			case k != "200" && k != "503 database_unavailable":
				t.Errorf("%s: %d unexpected answers %q", names[i], n, k)
			}
		}
	}
	if last := lastServedDown.Load(); last != 0 {
		after := time.Unix(0, last).Sub(downAt)
		t.Logf("last token served from the cache %v after the database was down", after.Round(time.Millisecond))
		if after > cached.DefaultTTL+500*time.Millisecond {
			t.Errorf("tokens served %v into the outage: the cache outlived its %v bound", after, cached.DefaultTTL)
		}
	}
	if tallies[1].snapshot()["503 database_unavailable"] == 0 {
		t.Error("no 503 database_unavailable while the database was down")
	}
	if rz.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the database was down: %d", rz.status)
	}
	after := snapshotCredentials(t, ctx, in.store, people, "alpha")
	for id, b := range before {
		if !sameCredential(b, after[id]) {
			t.Errorf("%s's credential changed across the outage", id)
		}
	}
	d.checkNoTokensLogged(tokens.m)
}

// TestProviderDownUnderLoad: the token provider answers 500, then is down
// altogether, while people ask for tokens. Valid tokens are still served,
// refreshes fail as 502 provider_unavailable, nothing is deleted or marked
// for re-authorization, and refreshes work again once it is back.
func TestProviderDownUnderLoad(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	d := newDeployment(t, ctx, sharedDatabase(t, ctx), "alpha")
	in := d.start()
	var people []*person
	for i := range 5 {
		p := d.newPerson(fmt.Sprintf("person-%d", i))
		p.link("alpha")
		people = append(people, p)
	}
	tp := d.providers["alpha"]
	before := snapshotCredentials(t, ctx, in.store, people, "alpha")
	var tokens seen

	var phase atomic.Int32 // 0 answering 500, 1 down, 2 back
	valid := make([]tally, 3)
	forced := make([]tally, 3)
	stop := make(chan struct{})
	tp.mode.Store(int32(answer500))
	wg := load(6, time.Minute, stop, func(w int) {
		ph := phase.Load()
		p := people[w%len(people)]
		if w == 0 {
			// One worker keeps forcing refreshes (outside the force window,
			// so each one reaches the provider).
			tok, r := p.token(in, "alpha", "force_refresh=true")
			tokens.add(tok)
			forced[ph].add(outcome(r))
			time.Sleep(100 * time.Millisecond)
			return
		}
		tok, r := p.token(in, "alpha", "")
		tokens.add(tok)
		valid[ph].add(outcome(r))
	})
	time.Sleep(3 * time.Second)
	phase.Store(1)
	tp.mode.Store(int32(passThrough))
	tp.op.Stop()
	time.Sleep(3 * time.Second)
	mid := snapshotCredentials(t, ctx, in.store, people, "alpha")
	if err := tp.op.Restart(); err != nil {
		t.Fatal(err)
	}
	phase.Store(2)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	names := []string{"answering 500", "down", "back"}
	for i := range names {
		t.Logf("%-14s valid: %v  forced: %v", names[i], valid[i].snapshot(), forced[i].snapshot())
	}
	checkOutagePhases(t, names, valid, forced, 2)
	for id, b := range before {
		if !sameCredential(b, mid[id]) {
			t.Errorf("%s's credential was changed while the provider was failing", id)
		}
	}
	for _, p := range people {
		c, err := in.store.GetCredential(ctx, p.id, "alpha")
		if err != nil {
			t.Fatalf("%s's credential after the outage: %v", p.id, err)
		}
		if c.State != store.StateActive {
			t.Errorf("%s's credential is %s after a provider outage", p.id, c.State)
		}
	}
	d.checkNoTokensLogged(tokens.m)
}

// TestRotationRaceTwoInstances: two instances on one database, every
// request needing a refresh (min_valid longer than any access token the
// OP issues), many requests at once spread over both. The OP rotates
// refresh tokens and refuses a replayed one (invalid_grant): zero refusals
// means no refresh token was ever spent twice. A deliberate replay at the
// end shows the detector sees one.
func TestRotationRaceTwoInstances(t *testing.T) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("FAULTS_RACE_REQUESTS")); err == nil && v > 0 {
		n = min(v, 20000)
	}
	ctx := testContext(t, 4*time.Minute)
	d := newDeployment(t, ctx, sharedDatabase(t, ctx), "alpha")
	a := d.start()
	b := d.start()
	p := d.newPerson("racer")
	p.link("alpha")
	first, err := a.store.GetCredential(ctx, p.id, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	tp := d.providers["alpha"]
	var tokens seen
	var next atomic.Int64
	var outcomes tally
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Minute)
	start := time.Now()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				in := a
				if (int(i)+w)%2 == 1 {
					in = b
				}
				tok, r := p.token(in, "alpha", "min_valid=86400")
				tokens.add(tok)
				outcomes.add(outcome(r))
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	got := outcomes.snapshot()
	t.Logf("%d requests over two instances in %v: %v; %d refreshes at the provider, %d refused",
		n, took.Round(time.Millisecond), got, tp.refresh.Load(), tp.refused.Load())
	if got["200"] != n {
		t.Errorf("%d of %d requests served", got["200"], n)
	}
	if tp.refused.Load() != 0 {
		t.Fatalf("the provider refused %d refresh tokens: a rotated token was spent twice", tp.refused.Load())
	}
	if tp.refresh.Load() == 0 {
		t.Fatal("no refresh reached the provider")
	}
	c, err := a.store.GetCredential(ctx, p.id, "alpha")
	if err != nil || c.State != store.StateActive {
		t.Fatalf("credential after the race: %v %v", err, c.State)
	}

	// Control: replaying the first, long rotated refresh token is refused,
	// and the proxy counts it.
	rt, err := d.keys.Open(first.RefreshToken, crypto.Binding{Owner: p.id, Provider: "alpha", Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	cfg := tp.provider.OAuth2Config("")
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: string(rt)}).Token(); err == nil {
		t.Fatal("the OP accepted a replayed refresh token: it cannot detect reuse")
	}
	if tp.refused.Load() != 1 {
		t.Fatalf("the replay was not counted (%d)", tp.refused.Load())
	}
	d.checkNoTokensLogged(tokens.m)
}
