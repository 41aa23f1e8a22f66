package filesource

import (
	"context"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/config/crd"
)

func mustValidator(t *testing.T) *Validator {
	t.Helper()
	v, err := DefaultValidator()
	if err != nil {
		t.Fatalf("DefaultValidator: %v", err)
	}
	return v
}

// parseOne parses a single-document manifest and returns its object.
func parseOne(t *testing.T, doc string) Object {
	t.Helper()
	objs := Parse(context.Background(), mustValidator(t), "providers.yaml", []byte(doc), LoadOptions{})
	if len(objs) != 1 {
		t.Fatalf("got %d objects, want 1: %+v", len(objs), objs)
	}
	return objs[0]
}

func TestDefaultsApplied(t *testing.T) {
	o := parseOne(t, `
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: idp1
spec:
  discoveryURL: https://idp.example.com/.well-known/openid-configuration
  clientID: tokenstore
  clientSecretRef:
    name: idp1-client
`)
	if o.Err != nil {
		t.Fatalf("valid provider refused: %v", o.Err)
	}
	s := o.Provider.Spec
	if want := []string{"openid", "email", "offline_access"}; !slices.Equal(s.Scopes, want) {
		t.Errorf("scopes = %v, want the default %v", s.Scopes, want)
	}
	if s.PKCE != "S256" {
		t.Errorf("pkce = %q, want the default S256", s.PKCE)
	}
	if s.TokenEndpointAuthMethod != "client_secret_basic" {
		t.Errorf("tokenEndpointAuthMethod = %q, want the default client_secret_basic", s.TokenEndpointAuthMethod)
	}
	if s.ClientSecretRef.Key != "clientSecret" {
		t.Errorf("clientSecretRef.key = %q, want the default clientSecret", s.ClientSecretRef.Key)
	}
	if o.Provider.Namespace != DefaultNamespace || o.Namespace != DefaultNamespace {
		t.Errorf("namespace = %q/%q, want %q", o.Provider.Namespace, o.Namespace, DefaultNamespace)
	}
}

// celMessages lists every x-kubernetes-validations message of the CRD.
func celMessages(t *testing.T) []string {
	t.Helper()
	var def apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(crd.TokenProviders(), &def); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(s *apiextensionsv1.JSONSchemaProps)
	walk = func(s *apiextensionsv1.JSONSchemaProps) {
		if s == nil {
			return
		}
		for _, r := range s.XValidations {
			if !slices.Contains(out, r.Message) {
				out = append(out, r.Message)
			}
		}
		for _, p := range s.Properties {
			walk(&p)
		}
		if s.Items != nil {
			walk(s.Items.Schema)
		}
		if s.AdditionalProperties != nil {
			walk(s.AdditionalProperties.Schema)
		}
	}
	for _, v := range def.Spec.Versions {
		if v.Name == "v1alpha1" {
			spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
			walk(&spec)
		}
	}
	return out
}

const header = `apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: github
`

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		spec string
		// want are substrings of the error, in the form kubectl prints.
		want []string
	}{{
		name: "no discovery and no endpoints",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  endpoints:\n    authorization: https://github.com/login/oauth/authorize\n",
		want: []string{`providers.yaml: document 1 (line 1): TokenProvider "github": spec: Invalid value: set discoveryURL or issuer (OpenID Connect), or endpoints.authorization and endpoints.token (plain OAuth2)`},
	}, {
		name: "discovery and issuer",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  issuer: https://a.example.com\n  discoveryURL: https://a.example.com/.well-known/openid-configuration\n",
		want: []string{`spec: Invalid value: set discoveryURL or issuer, not both`},
	}, {
		name: "secret required",
		spec: "  clientID: x\n  issuer: https://a.example.com\n",
		want: []string{`spec: Invalid value: clientSecretRef is required unless tokenEndpointAuthMethod is none`},
	}, {
		name: "reserved authorization parameter",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  issuer: https://a.example.com\n  authorizationParams: {prompt: consent, scope: admin}\n",
		want: []string{`spec.authorizationParams: Invalid value: authorizationParams cannot set client_id, redirect_uri, response_type, scope, state, nonce, code_challenge or code_challenge_method: tokenstore sets them (use scopes and pkce)`},
	}, {
		name: "bad URL",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  issuer: ftp://a.example.com\n",
		want: []string{`spec.issuer: Invalid value: "ftp://a.example.com": must be an absolute http:// or https:// URL`},
	}, {
		name: "bad endpoint URL",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  endpoints:\n    authorization: https://github.com/login/oauth/authorize\n    token: /token\n",
		want: []string{`spec.endpoints.token: Invalid value: "/token": must be an absolute http:// or https:// URL`},
	}, {
		name: "unknown auth method (schema enum)",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  issuer: https://a.example.com\n  tokenEndpointAuthMethod: bogus\n",
		want: []string{`spec.tokenEndpointAuthMethod: Unsupported value: "bogus": supported values: "client_secret_basic", "client_secret_post", "none"`},
	}, {
		name: "missing client id (schema required)",
		spec: "  clientSecretRef: {name: s}\n  issuer: https://a.example.com\n",
		want: []string{`spec.clientID: Required value`},
	}, {
		name: "wrong type",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  issuer: https://a.example.com\n  scopes: openid\n",
		want: []string{`spec.scopes: Invalid value: "string": spec.scopes in body must be of type array`},
	}, {
		name: "unknown field",
		spec: "  clientID: x\n  clientSecretRef: {name: s}\n  discoveryUrl: https://a.example.com/.well-known/openid-configuration\n",
		want: []string{`spec.discoveryUrl: Forbidden: unknown field`, `set discoveryURL or issuer (OpenID Connect)`},
	}}
	covered := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := parseOne(t, header+"spec:\n"+tc.spec)
			if o.Err == nil {
				t.Fatalf("accepted, want an error")
			}
			msg := o.Err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n  %s\nlacks\n  %s", msg, w)
				}
			}
			for _, m := range celMessages(t) {
				if strings.Contains(msg, m) {
					covered[m] = true
				}
			}
			if o.Provider != nil {
				t.Errorf("invalid object returned as a provider")
			}
			if o.Name != "github" || o.Kind != "TokenProvider" {
				t.Errorf("object labelled %s %q", o.Kind, o.Name)
			}
		})
	}
	// Every CEL rule of the CRD must be exercised above, so that a rule
	// added to the types without a test shows here.
	for _, m := range celMessages(t) {
		if !covered[m] {
			t.Errorf("no test case produces the CRD's CEL message %q", m)
		}
	}
}

func TestMetadataValidated(t *testing.T) {
	o := parseOne(t, `apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: My_IDP
spec:
  clientID: x
  issuer: https://a.example.com
  tokenEndpointAuthMethod: none
`)
	if o.Err == nil || !strings.Contains(o.Err.Error(), `metadata.name: Invalid value: "My_IDP"`) {
		t.Fatalf("bad name not reported: %v", o.Err)
	}
}

func TestDocumentsAndKinds(t *testing.T) {
	data := `# providers for dev
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: ok1}
spec: {clientID: x, issuer: "https://a.example.com", tokenEndpointAuthMethod: none}
---
# only a comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
apiVersion: v1
kind: Secret
metadata: {name: s1, namespace: team}
stringData: {clientSecret: hunter2}
data: {other: aGVsbG8=}
---
apiVersion: v1
kind: Secret
metadata: {name: s2}
data: {clientSecret: "not base64!!"}
---
[1, 2]
---
apiVersion: v1
kind: List
items:
- apiVersion: tokenstore.io/v1alpha1
  kind: TokenProvider
  metadata: {name: ok2, resourceVersion: "12", uid: abc}
  spec: {clientID: x, issuer: "https://a.example.com", tokenEndpointAuthMethod: none}
  status: {conditions: []}
- apiVersion: tokenstore.io/v1alpha1
  kind: TokenProvider
  metadata: {name: bad}
  spec: {clientID: x}
---
key: [unclosed
`
	objs := Parse(context.Background(), mustValidator(t), "p.yaml", []byte(data), LoadOptions{})
	type row struct {
		loc, kind, name string
		ok              bool
	}
	var got []row
	for _, o := range objs {
		got = append(got, row{o.Location.String(), o.Kind, o.Name, o.Err == nil})
	}
	want := []row{
		{"p.yaml: document 1 (line 3)", "TokenProvider", "ok1", true},
		{"p.yaml: document 3 (line 10)", "ConfigMap", "cm", false},
		{"p.yaml: document 4 (line 14)", "Secret", "s1", true},
		{"p.yaml: document 5 (line 20)", "Secret", "s2", false},
		{"p.yaml: document 6 (line 25)", "", "", false},
		{"p.yaml: document 7, item 1 (line 27)", "TokenProvider", "ok2", true},
		{"p.yaml: document 7, item 2 (line 27)", "TokenProvider", "bad", false},
		{"p.yaml: document 8 (line 40)", "", "", false},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("objects:\n got %v\nwant %v", got, want)
	}
	s1 := objs[2].Secret
	if s1.Namespace != "team" || string(s1.Data["clientSecret"]) != "hunter2" || string(s1.Data["other"]) != "hello" {
		t.Errorf("secret s1 decoded wrong: ns %q keys %d", s1.Namespace, len(s1.Data))
	}
	if strings.Contains(objs[3].Err.Error(), "not base64") {
		t.Errorf("secret error quotes the secret value: %v", objs[3].Err)
	}
	for _, o := range objs {
		if o.Err != nil && strings.Contains(o.Err.Error(), "hunter2") {
			t.Errorf("an error shows secret data: %v", o.Err)
		}
	}
}
