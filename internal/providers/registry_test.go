package providers

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func provider(id, secret string) *Provider {
	p := &Provider{ID: id, ClientID: "client-" + id, ClientSecret: secret, Scopes: []string{"openid"}}
	p.Version = Fingerprint(p)
	return p
}

func TestRegistrySetGetListDelete(t *testing.T) {
	r := NewRegistry()
	if r.Ready() {
		t.Fatal("a new registry must not be ready")
	}
	for _, id := range []string{"zeta", "alpha", "mid"} {
		r.Set(provider(id, "s"))
	}
	var ids []string
	for _, p := range r.List() {
		ids = append(ids, p.ID)
	}
	if got := strings.Join(ids, ","); got != "alpha,mid,zeta" {
		t.Fatalf("List order = %s, want alpha,mid,zeta", got)
	}
	if p, ok := r.Get("mid"); !ok || p.ClientID != "client-mid" {
		t.Fatalf("Get(mid) = %v, %v", p, ok)
	}
	r.Delete("mid")
	if _, ok := r.Get("mid"); ok {
		t.Fatal("mid still present after Delete")
	}
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	// Mutating the returned slice must not affect the registry.
	l := r.List()
	l[0] = nil
	if r.List()[0] == nil {
		t.Fatal("List returned the registry's own slice")
	}
	r.MarkReady()
	r.MarkReady() // idempotent
	if !r.Ready() {
		t.Fatal("not ready after MarkReady")
	}
	select {
	case <-r.ReadyC():
	default:
		t.Fatal("ReadyC not closed after MarkReady")
	}
}

func TestRegistrySameVersionIsNoOp(t *testing.T) {
	r := NewRegistry()
	first := provider("a", "s1")
	r.Set(first)
	v := r.Version()
	ch := r.Changed()
	r.Set(provider("a", "s1")) // same configuration, new value
	if r.Version() != v {
		t.Fatal("setting an identical configuration changed the version")
	}
	if p, _ := r.Get("a"); p != first {
		t.Fatal("setting an identical configuration replaced the value")
	}
	select {
	case <-ch:
		t.Fatal("subscribers woken for no change")
	default:
	}
	r.Set(provider("a", "s2")) // rotated secret
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("a secret change did not wake subscribers")
	}
	if p, _ := r.Get("a"); p.ClientSecret != "s2" {
		t.Fatal("new secret not served")
	}
}

func TestRegistryReplaceAndDeleteIf(t *testing.T) {
	r := NewRegistry()
	a := provider("a", "s")
	r.Set(a)
	r.Set(provider("b", "s"))
	v := r.Version()
	r.Replace([]*Provider{provider("a", "s"), provider("b", "s")})
	if r.Version() != v {
		t.Fatal("Replace with an identical set made a new snapshot")
	}
	r.Replace([]*Provider{provider("a", "s"), provider("c", "s")})
	if _, ok := r.Get("b"); ok {
		t.Fatal("b survived a Replace without it")
	}
	if p, _ := r.Get("a"); p != a {
		t.Fatal("Replace did not keep the unchanged value of a")
	}
	if r.DeleteIf("a", func(p *Provider) bool { return p.ClientSecret == "other" }) {
		t.Fatal("DeleteIf removed an entry its predicate refused")
	}
	if !r.DeleteIf("a", func(p *Provider) bool { return true }) {
		t.Fatal("DeleteIf did not remove a")
	}
}

// TestRegistryConcurrentReaders runs readers against a writer; with -race
// it shows that readers need no lock.
func TestRegistryConcurrentReaders(t *testing.T) {
	r := NewRegistry()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l := r.List()
				for i := 1; i < len(l); i++ {
					if l[i-1].ID >= l[i].ID {
						t.Errorf("unsorted snapshot")
						return
					}
				}
				r.Get("p1")
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		id := fmt.Sprintf("p%d", i%50)
		if i%7 == 0 {
			r.Delete(id)
		} else {
			r.Set(provider(id, fmt.Sprint(i)))
		}
	}
	close(stop)
	wg.Wait()
}

func TestProviderNeverPrintsSecret(t *testing.T) {
	const secret = "s3cr3t-value-never-printed"
	p := provider("a", secret)
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("provider", "p", p)
	marshalled, _ := json.Marshal(p.MarshalLog())
	whole, _ := json.Marshal(p)
	for _, out := range []string{string(marshalled), string(whole), fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), p.String(), logged.String()} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if !strings.Contains(fmt.Sprint(p), "client-a") {
		t.Fatalf("String lost the client id: %s", p)
	}
}

func TestFingerprint(t *testing.T) {
	a, b := provider("a", "one"), provider("a", "two")
	if a.Version == b.Version {
		t.Fatal("a secret change did not change the version")
	}
	c := provider("a", "one")
	c.AuthorizationParams = map[string]string{"prompt": "consent"}
	if Fingerprint(c) == a.Version {
		t.Fatal("an authorization parameter did not change the version")
	}
	d := provider("a", "one")
	d.DiscoveredAt = time.Now()
	if Fingerprint(d) != a.Version {
		t.Fatal("the discovery time changed the version")
	}
	// Length prefixes: moving a character between fields is a change.
	e, f := &Provider{ID: "ab", ClientID: "c"}, &Provider{ID: "a", ClientID: "bc"}
	if Fingerprint(e) == Fingerprint(f) {
		t.Fatal("field boundaries are not hashed")
	}
}

func TestAuthCodeOptionsAndServiceAccounts(t *testing.T) {
	p := &Provider{
		AuthorizationParams: map[string]string{"prompt": "consent", "access_type": "offline"},
		ServiceAccounts:     []ServiceAccount{{Namespace: "apps", Name: "robot"}},
	}
	if n := len(p.AuthCodeOptions()); n != 2 {
		t.Fatalf("AuthCodeOptions = %d options, want 2", n)
	}
	if !p.AllowsServiceAccount("apps", "robot") || p.AllowsServiceAccount("other", "robot") {
		t.Fatal("AllowsServiceAccount wrong")
	}
}
