package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

const chromiumPath = "/usr/bin/chromium"

// artifactsDir is where screenshots go: $ARTIFACTS_DIR, else artifacts/ at
// the repository root (git-ignored).
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(), "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// browser starts Debian's Chromium headless with the flags this kind of
// machine needs (no sandbox as root, no background connections to a closed
// network) and a fresh profile. Missing Chromium fails the test: the page
// is part of the product, and a skip would hide that it was never tested.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is missing at %s (%v): run hack/ensure-packages.sh (it installs Debian's chromium package among others)", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Screenshots show the page as laid out, without a scrollbar's strip.
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	// Start the browser now, so its start-up does not count against the
	// first step's deadline.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	return ctx
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	// A step's own deadline, so that on failure the browser is still there
	// to take a screenshot of what went wrong.
	sctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		shot := filepath.Join(artifactsDir(t), "tokenstore-dev-failure.png")
		if png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
			_ = os.WriteFile(shot, png, 0o644)
			t.Logf("screenshot of the failure: %s", shot)
		}
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (page at %s)", what, err, loc)
	}
}

func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("reading %s: %v", css, err)
	}
	return s
}

// signInAtIDP fills the development provider's login form.
func signInAtIDP(t *testing.T, ctx context.Context, user, password string) {
	t.Helper()
	do(t, ctx, "the development provider's login form",
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SetValue(chromedp.CSS(`#username`), user),
		chromedp.SetValue(chromedp.CSS(`#password`), password),
		chromedp.Click(chromedp.CSS(`#submit`)),
	)
}

// TestPageInChromium walks the page as a person would: sign in as a demo
// user, connect Demo Drive, see it active, fetch an access token and see its
// claims, disconnect; with screenshots kept as artifacts.
func TestPageInChromium(t *testing.T) {
	d := startDev(t, t.TempDir())
	ctx := browser(t)
	card := `li[data-provider="demo-drive"]`

	do(t, ctx, "opening the page",
		chromedp.Navigate(d.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#signin`)),
	)
	shots := artifactsDir(t)
	save := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		p := filepath.Join(shots, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
	save("tokenstore-dev-signed-out.png")

	do(t, ctx, "signing in", chromedp.Click(chromedp.CSS(`#signin`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "the provider list after sign-in", chromedp.WaitVisible(chromedp.CSS(card+`[data-state="not_linked"] [data-action="connect"]`)))
	if who := text(t, ctx, `#who-name`); who != "Alice Example" {
		t.Errorf("signed-in name %q, want Alice's", who)
	}
	for id, name := range map[string]string{"demo-drive": "Demo Drive", "demo-calendar": "Demo Calendar"} {
		if got := text(t, ctx, fmt.Sprintf(`li[data-provider=%q] .name`, id)); got != name {
			t.Errorf("%s is shown as %q, want %q (its TokenProvider metadata)", id, got, name)
		}
	}
	if got := text(t, ctx, card+` .state`); got != "Not connected" {
		t.Errorf("demo-drive state %q before connecting", got)
	}

	do(t, ctx, "connecting Demo Drive", chromedp.Click(chromedp.CSS(card+` [data-action="connect"]`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "Demo Drive active", chromedp.WaitVisible(chromedp.CSS(card+`[data-state="active"] [data-action="token"]`)))
	if got := text(t, ctx, card+` .state`); got != "Active" {
		t.Errorf("demo-drive state %q after connecting, want Active", got)
	}

	// A grant to a workload, made the way the grants API would (dev mode
	// has no Kubernetes to check a ServiceAccount against), in the same
	// SQLite file: the page lists it and revokes it.
	addGrant(t, d, store.Grant{UserID: "alice", Provider: "demo-drive", ServiceAccountNamespace: "reports", ServiceAccountName: "nightly-export"})
	grant := `li.grant`
	do(t, ctx, "the grant listed",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(grant+` [data-action="revoke-grant"]`)),
	)
	if g := text(t, ctx, grant); !strings.Contains(g, "reports/nightly-export") || !strings.Contains(g, "Demo Drive") {
		t.Errorf("the grant is shown as %q", g)
	}
	do(t, ctx, "fetching an access token",
		chromedp.Click(chromedp.CSS(card+` [data-action="token"]`)),
		chromedp.WaitVisible(chromedp.CSS(card+` .claims dt`)),
	)
	claims := text(t, ctx, card+` .claims`)
	for _, want := range []string{"sub", "alice", "aud", "demo-drive", "exp"} {
		if !strings.Contains(claims, want) {
			t.Errorf("the token's claims lack %q: %s", want, claims)
		}
	}
	body := text(t, ctx, `body`)
	if strings.Contains(strings.ToLower(body), "refresh_token") {
		t.Errorf("the page shows a refresh token")
	}
	save("tokenstore-dev.png")
	do(t, ctx, "small screen", chromedp.EmulateViewport(390, 844))
	save("tokenstore-dev-small.png")
	do(t, ctx, "wide screen", chromedp.EmulateViewport(1100, 900))

	do(t, ctx, "revoking the grant",
		chromedp.Click(chromedp.CSS(grant+` [data-action="revoke-grant"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(grant+` [data-action="revoke-grant"]`)),
	)
	if g := text(t, ctx, grant+` .badge`); g != "Revoked" {
		t.Errorf("a revoked grant is shown as %q", g)
	}

	do(t, ctx, "disconnecting Demo Drive",
		chromedp.Click(chromedp.CSS(card+` [data-action="disconnect"]`)),
		chromedp.WaitVisible(chromedp.CSS(card+`[data-state="not_linked"] [data-action="connect"]`)),
	)
	if n := text(t, ctx, `#notice`); !strings.Contains(n, "Demo Drive is disconnected") {
		t.Errorf("after disconnecting, the notice says %q", n)
	}

	// The development provider forgets its refresh tokens when it restarts,
	// as a real provider that revoked a grant would: the page shows the
	// account as needing re-authorization, with a sentence, not a trace.
	cal := `li[data-provider="demo-calendar"]`
	do(t, ctx, "connecting Demo Calendar", chromedp.Click(chromedp.CSS(cal+` [data-action="connect"]`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "Demo Calendar active", chromedp.WaitVisible(chromedp.CSS(cal+`[data-state="active"] [data-action="token"]`)))
	d.stop(t)
	d = startDevOn(t, d.DataDir, strings.TrimPrefix(d.URL, "http://"), strings.TrimPrefix(d.IDP, "http://"))
	// The cached access token is still valid; an app forcing a refresh
	// (as one does after a 401 from the provider's API) meets the refusal.
	req, _ := http.NewRequest(http.MethodGet, d.URL+"/api/v1.0/demo-calendar/token?force_refresh=true", nil)
	req.Header.Set("Authorization", "Bearer "+d.bearer(t, "alice", "alice-demo"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("a forced refresh with a refresh token the provider forgot: %s, want 409 reauthorization_required", resp.Status)
	}
	do(t, ctx, "the page after the provider forgot the grant",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(cal+`[data-state="needs_reauth"] [data-action="reconnect"]`)),
	)
	if got := text(t, ctx, cal+` .state`); got != "Needs re-authorization" {
		t.Errorf("demo-calendar state %q, want Needs re-authorization", got)
	}
	save("tokenstore-dev-reauth.png")
	do(t, ctx, "reconnecting Demo Calendar", chromedp.Click(chromedp.CSS(cal+` [data-action="reconnect"]`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "Demo Calendar active again", chromedp.WaitVisible(chromedp.CSS(cal+`[data-state="active"] [data-action="token"]`)))

	// A provider's error comes back on the redirect as ?error=; the page
	// says it as a sentence.
	do(t, ctx, "a provider error",
		chromedp.Navigate(d.URL+"/?error=access_denied&provider=demo-calendar"),
		chromedp.WaitVisible(chromedp.CSS(`#notice`)),
	)
	if n := text(t, ctx, `#notice`); n != "Demo Calendar reported that access was declined, so nothing changed." {
		t.Errorf("the provider error is shown as %q", n)
	}

	do(t, ctx, "signing out",
		chromedp.Click(chromedp.CSS(`#signout`)),
		chromedp.WaitVisible(chromedp.CSS(`#signin`)),
	)
}

func addGrant(t *testing.T, d *devServer, g store.Grant) {
	t.Helper()
	ctx := context.Background()
	st, err := storeopen.Open(ctx, "sqlite://"+filepath.Join(d.DataDir, "tokenstore.db"))
	if err != nil {
		t.Fatalf("opening the dev database: %v", err)
	}
	defer st.Close()
	if _, err := st.CreateGrant(ctx, g); err != nil {
		t.Fatalf("creating a grant: %v", err)
	}
}
