package e2e

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestAPIReferenceInChromium follows the web page's link to the API
// reference, as a client developer would, and sees Swagger UI render the
// server's own OpenAPI document from the embedded files (the page's
// Content-Security-Policy allows scripts from this server only, so a
// CDN-loaded copy could not render). The Flask service's API root,
// /api/v1.0/, leads there too.
func TestAPIReferenceInChromium(t *testing.T) {
	d := startDev(t, t.TempDir())
	ctx := browser(t)

	do(t, ctx, "following the page's API reference link",
		chromedp.Navigate(d.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#api-reference`)),
		chromedp.Click(chromedp.CSS(`#api-reference`)),
		chromedp.WaitVisible(chromedp.CSS(`.swagger-ui .info .title`)),
		chromedp.WaitVisible(chromedp.CSS(`.swagger-ui .opblock`)),
	)
	if title := text(t, ctx, `.swagger-ui .info .title`); !strings.Contains(title, "tokenstore") {
		t.Errorf("the reference's title is %q, want the OpenAPI document's (tokenstore)", title)
	}
	paths, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('.swagger-ui .opblock-summary-path')).map(e => e.getAttribute('data-path'))`))
	if err != nil {
		t.Fatalf("reading the operations listed: %v", err)
	}
	for _, want := range []string{"/api/v1.0/{provider}/token", "/api/v1.0/{provider}/revoke", "/api/whoami", "/api/oauth2/token"} {
		found := false
		for _, p := range paths {
			found = found || p == want
		}
		if !found {
			t.Errorf("the reference lists no %s operation (it lists %v)", want, paths)
		}
	}

	do(t, ctx, "opening the Flask service's API root",
		chromedp.Navigate(d.URL+"/api/v1.0/"),
		chromedp.WaitVisible(chromedp.CSS(`.swagger-ui .info .title`)),
	)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if loc != d.URL+"/api/" {
		t.Errorf("/api/v1.0/ led to %s, want %s/api/", loc, d.URL)
	}
}
