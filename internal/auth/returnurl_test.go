package auth

import "testing"

func TestReturnURLs(t *testing.T) {
	r, err := NewReturnURLs("https://tokens.example/", []string{"https://app.example", "http://localhost:3000"})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"":                         "https://tokens.example/",
		"/x?y=1":                   "https://tokens.example/x?y=1",
		"https://tokens.example/a": "https://tokens.example/a",
		"https://APP.example/b":    "https://APP.example/b",
		"http://localhost:3000/cb": "http://localhost:3000/cb",
	} {
		got, err := r.Check(in)
		if err != nil || got != want {
			t.Errorf("Check(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{
		"https://evil.example/", "//evil.example", "/\\evil.example", "\\\\evil", "javascript:alert(1)",
		"http://app.example/", "https://app.example.evil.example/", "https://user@app.example/",
		"relative/path", "https://tokens.example:8443/", "data:text/html,x", "/a\r\nSet-Cookie: x",
	} {
		if got, err := r.Check(bad); err == nil {
			t.Errorf("Check(%q) allowed, gave %q", bad, got)
		}
	}
	if got := WithParams("https://app.example/d?k=v", "error", "access_denied", "provider", "x"); got != "https://app.example/d?error=access_denied&k=v&provider=x" {
		t.Errorf("WithParams: %q", got)
	}
}
