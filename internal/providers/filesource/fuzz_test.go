package filesource

import (
	"context"
	"testing"
)

// FuzzParse checks that no input makes the parser or the validator panic.
// The seeds run with every `go test`; `go test -fuzz=FuzzParse` explores.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"---\n---\n",
		header + "spec:\n  clientID: x\n  issuer: https://a.example.com\n  tokenEndpointAuthMethod: none\n",
		header + "spec: [1]\n",
		header + "spec:\n  scopes: {a: 1}\n  clientID: 5\n  authorizationParams: [x]\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: 1}\n",
		"apiVersion: v1\nkind: List\nitems: [1, null, {kind: Secret}]\n",
		"apiVersion: tokenstore.io/v1alpha1\nkind: TokenProvider\nmetadata: {generateName: x-}\nspec: {clientID: x, issuer: 'https://a', tokenEndpointAuthMethod: none}\n",
		"metadata: 7\nkind: TokenProvider\napiVersion: tokenstore.io/v1alpha1\n",
		"{{{{",
	} {
		f.Add(seed)
	}
	v, err := DefaultValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data string) {
		for _, o := range Parse(context.Background(), v, "f.yaml", []byte(data), LoadOptions{}) {
			if (o.Err == nil) == (o.Provider == nil && o.Secret == nil) {
				t.Fatalf("object %s %q: valid=%v but provider=%v secret=%v", o.Kind, o.Name, o.Err == nil, o.Provider != nil, o.Secret != nil)
			}
			if o.Err != nil {
				_ = o.Err.Error()
			}
		}
	})
}
