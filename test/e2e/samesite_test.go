package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestStrictSessionCookieInChromium: with SESSION_COOKIE_SAMESITE=Strict,
// signing in and linking still work in a real browser, although the
// provider's redirect back is a cross-site navigation on which Chromium
// does not send a Strict cookie. The page is served at localhost and the
// development provider at 127.0.0.1, which browsers treat as two sites.
func TestStrictSessionCookieInChromium(t *testing.T) {
	api, idp := freePort(t), freePort(t)
	port := api[strings.LastIndex(api, ":")+1:]
	// SESSION_TYPE is a setting dev warns about: once its warning is out,
	// so would be one about SameSite (the log is buffered up to 200 ms).
	d := startDevEnv(t, t.TempDir(), api, idp,
		"TOKENSTORE_EXTERNAL_URL=http://localhost:"+port, "TOKENSTORE_SESSION_COOKIE_SAMESITE=Strict",
		"TOKENSTORE_SESSION_TYPE=filesystem")
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(d.Out.String(), "SESSION_TYPE=filesystem is ignored"); {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not log its settings warnings:\n%s", d.Out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(d.Out.String(), "SESSION_COOKIE_SAMESITE") {
		t.Errorf("dev warns about Strict although it works:\n%s", d.Out)
	}
	ctx := browser(t)
	card := `li[data-provider="demo-drive"]`

	do(t, ctx, "opening the page at localhost",
		chromedp.Navigate("http://localhost:"+port+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#signin`)),
	)
	do(t, ctx, "signing in", chromedp.Click(chromedp.CSS(`#signin`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "the provider list after sign-in, without a reload",
		chromedp.WaitVisible(chromedp.CSS(card+`[data-state="not_linked"] [data-action="connect"]`)))

	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	strict := false
	for _, c := range res.Cookies {
		if c.Name == "tokenstore_session" {
			strict = c.SameSite == network.CookieSameSiteStrict
		}
	}
	if !strict {
		t.Fatal("the session cookie is not SameSite=Strict in the browser")
	}

	do(t, ctx, "connecting Demo Drive", chromedp.Click(chromedp.CSS(card+` [data-action="connect"]`)))
	signInAtIDP(t, ctx, "alice", "alice-demo")
	do(t, ctx, "Demo Drive active", chromedp.WaitVisible(chromedp.CSS(card+`[data-state="active"] [data-action="token"]`)))
	if loc := text(t, ctx, `#who-name`); loc != "Alice Example" {
		t.Errorf("signed-in name %q after linking", loc)
	}
}
