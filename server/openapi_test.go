package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/tokenstore/tokenstore/server/openapi"
)

func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openapi.YAML)
	if err != nil {
		t.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid: %v", err)
	}
	return doc
}

// ginToOpenAPI turns /api/v1.0/:provider/token into /api/v1.0/{provider}/token.
func ginToOpenAPI(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// TestOpenAPIMatchesRoutes: every registered route is documented and every
// documented operation is routed.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadSpec(t)
	e := newEnv(t)
	routed := map[string]bool{}
	for _, r := range e.instances[0].srv.engine.Routes() {
		key := r.Method + " " + ginToOpenAPI(r.Path)
		routed[key] = true
		item := doc.Paths.Value(ginToOpenAPI(r.Path))
		if item == nil || item.GetOperation(r.Method) == nil {
			t.Errorf("route %s is not in openapi.yaml", key)
		}
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	sort.Strings(documented)
	for _, k := range documented {
		if !routed[k] {
			t.Errorf("openapi.yaml documents %s, which is not routed", k)
		}
	}
}

// validatingTransport checks every answer of the server against the
// document: status documented, body matching its schema.
type validatingTransport struct {
	t      testing.TB
	doc    *openapi3.T
	server string
	mu     sync.Mutex
	seen   map[string]bool
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasPrefix(req.URL.String(), v.server) {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := v.validate(req, resp, body); err != nil {
		v.t.Errorf("%s %s -> %d: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return resp, nil
}

func (v *validatingTransport) validate(req *http.Request, resp *http.Response, body []byte) error {
	if req.Method == http.MethodOptions {
		return nil // CORS preflights are answered by middleware, not an operation
	}
	path, params, item := v.match(req.URL.Path)
	if item == nil {
		if resp.StatusCode == http.StatusNotFound {
			return nil // unrouted paths answer not_found; nothing to document
		}
		return fmt.Errorf("no documented path matches")
	}
	op := item.GetOperation(req.Method)
	if op == nil {
		return fmt.Errorf("method not documented for %s", path)
	}
	v.mu.Lock()
	v.seen[fmt.Sprintf("%s %s %d", req.Method, path, resp.StatusCode)] = true
	v.mu.Unlock()
	if op.Responses.Status(resp.StatusCode) == nil {
		return fmt.Errorf("status %d not documented", resp.StatusCode)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params,
			Route:   &routers.Route{Spec: v.doc, Path: path, PathItem: item, Method: req.Method, Operation: op},
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/yaml") {
		return nil // no YAML body decoder; the document itself is loaded above
	}
	return openapi3filter.ValidateResponse(context.Background(), in)
}

func (v *validatingTransport) match(p string) (string, map[string]string, *openapi3.PathItem) {
	segs := strings.Split(p, "/")
	for tmpl, item := range v.doc.Paths.Map() {
		ts := strings.Split(tmpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i := range ts {
			if strings.HasPrefix(ts[i], "{") {
				s, _ := url.PathUnescape(segs[i])
				params[strings.Trim(ts[i], "{}")] = s
			} else if ts[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return tmpl, params, item
		}
	}
	return "", nil, nil
}

// TestOpenAPIResponses runs the main flows with every answer validated.
func TestOpenAPIResponses(t *testing.T) {
	doc := loadSpec(t)
	e := newEnv(t)
	in := e.instances[0]
	vt := &validatingTransport{t: t, doc: doc, server: in.url, seen: map[string]bool{}}
	b := e.browser()
	b.client.Transport = vt

	b.get(in.url + "/healthz")
	b.get(in.url + "/readyz")
	b.get(in.url + "/api/_health")
	b.get(in.url + "/api/openapi.yaml")
	b.get(in.url + "/api/openapi.json")
	b.get(in.url + "/api/whoami")
	b.get(in.url + "/api/v1.0/authorizations")
	b.get(in.url + "/api/oidc/login?return_url=https://evil.example/")
	b.loginAt(in, "")
	b.get(in.url + "/api/whoami")
	b.get(in.url + "/api/v1.0/authorizations")
	b.get(in.url + "/api/v1.0/nope/token")
	b.get(in.url + "/api/v1.0/alpha/token")
	b.get(in.url + "/api/v1.0/alpha/token?min_valid=x")
	b.get(in.url + "/api/v1.0/alpha/redirect_uri?state=forged&code=x")
	b.link(in, "alpha")
	b.get(in.url + "/api/v1.0/authorizations")
	b.token(in, "alpha", "")
	b.token(in, "alpha", "?force_refresh=true&min_valid=60")
	e.providers["alpha"].op.Stop()
	b.token(in, "alpha", "?min_valid=86400") // needs a refresh; the provider is down
	if err := e.providers["alpha"].op.Restart(); err != nil {
		t.Fatal(err)
	}
	b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": "https://evil.example"})
	b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext})
	b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext})
	b.do(http.MethodPost, in.url+"/api/oidc/logout", map[string]string{"Origin": e.ext})
	b.get(in.url + "/api/v1.0/authorizations")

	for _, want := range []string{
		"GET /api/v1.0/{provider}/token 200", "GET /api/v1.0/{provider}/token 502", "GET /api/v1.0/{provider}/token 404",
		"POST /api/v1.0/{provider}/revoke 200", "POST /api/v1.0/{provider}/revoke 403", "GET /api/v1.0/authorizations 200",
		"GET /api/v1.0/{provider}/redirect_uri 302", "GET /api/v1.0/{provider}/redirect_uri 400", "GET /api/whoami 403",
	} {
		if !vt.seen[want] {
			t.Errorf("the flow did not exercise %s", want)
		}
	}
}
