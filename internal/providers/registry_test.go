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

func TestSourceWriterReplaceAllAndDelete(t *testing.T) {
	r := NewRegistry()
	w := r.Source(SourceFile)
	a := provider("a", "s")
	w.Put(a)
	w.Put(provider("b", "s"))
	v := r.Version()
	w.ReplaceAll([]*Provider{provider("a", "s"), provider("b", "s")})
	if r.Version() != v {
		t.Fatal("ReplaceAll with an identical set made a new snapshot")
	}
	w.ReplaceAll([]*Provider{provider("a", "s"), provider("c", "s")})
	if _, ok := r.Get("b"); ok {
		t.Fatal("b survived a ReplaceAll without it")
	}
	if p, _ := r.Get("a"); p != a {
		t.Fatal("ReplaceAll did not keep the unchanged value of a")
	}
	// Another source cannot remove what this one put.
	if r.Source(SourceKubernetes).Delete("a") {
		t.Fatal("the Kubernetes writer removed the file source's entry")
	}
	if _, ok := r.Get("a"); !ok {
		t.Fatal("a gone after another source's Delete")
	}
	if !w.Delete("a") {
		t.Fatal("Delete did not remove a")
	}
	if _, ok := r.Get("a"); ok {
		t.Fatal("a still served after its source deleted it")
	}
	// ReplaceAll withdraws the source's claims only.
	r.Source(SourceKubernetes).Put(provider("k", "s"))
	w.ReplaceAll(nil)
	if got := ids(r); got != "k" {
		t.Fatalf("after the file source emptied itself: %s, want k", got)
	}
}

func ids(r *Registry) string {
	var out []string
	for _, p := range r.List() {
		out = append(out, p.ID)
	}
	return strings.Join(out, ",")
}

// TestMergeRule: an id claimed by one source serves that source's
// configuration; an id claimed by two serves neither, each writer names the
// other, and the id serves again once one of them lets it go.
func TestMergeRule(t *testing.T) {
	r := NewRegistry()
	kube, file := r.Source(SourceKubernetes), r.Source(SourceFile)
	k := provider("shared", "kube-secret")
	k.Source = "TokenProvider ns/shared"
	kube.Put(k)
	if p, ok := r.Get("shared"); !ok || p != k {
		t.Fatalf("the only claimant is not served: %v", p)
	}
	if _, conflict := kube.Conflict("shared"); conflict {
		t.Fatal("conflict reported with one claimant")
	}
	ch := r.Changed()
	f := provider("shared", "file-secret")
	f.Source = "TokenProvider default/shared in /etc/providers.yaml"
	file.Put(f)
	if p, ok := r.Get("shared"); ok {
		t.Fatalf("an id claimed by two sources is served (%v)", p)
	}
	select {
	case <-ch:
	default:
		t.Fatal("a conflict did not wake subscribers")
	}
	others, conflict := kube.Conflict("shared")
	if !conflict || len(others) != 1 || others[0] != "TokenProvider default/shared in /etc/providers.yaml (file source)" {
		t.Fatalf("Kubernetes writer's conflict = %v, %v", others, conflict)
	}
	others, conflict = file.Conflict("shared")
	if !conflict || len(others) != 1 || others[0] != "TokenProvider ns/shared (kubernetes source)" {
		t.Fatalf("file writer's conflict = %v, %v", others, conflict)
	}
	if got := kube.Conflicts(); len(got) != 1 || got[0] != "shared" {
		t.Fatalf("Conflicts = %v", got)
	}
	// Each source still knows what it offers.
	if p, ok := kube.Get("shared"); !ok || p != k {
		t.Fatal("the Kubernetes writer lost its own configuration")
	}
	// A claim without a configuration conflicts too.
	kube.Claim("shared", "TokenProvider ns/shared")
	if _, ok := r.Get("shared"); ok {
		t.Fatal("served while a claim without configuration competes for it")
	}
	if _, conflict := file.Conflict("shared"); !conflict {
		t.Fatal("a claim without configuration does not conflict")
	}
	// The other claimant goes: the file's configuration serves.
	ch = r.Changed()
	kube.Delete("shared")
	if p, ok := r.Get("shared"); !ok || p != f {
		t.Fatalf("the remaining claimant is not served: %v", p)
	}
	if _, conflict := file.Conflict("shared"); conflict || len(file.Conflicts()) != 0 {
		t.Fatal("conflict still reported after the other claim went")
	}
	select {
	case <-ch:
	default:
		t.Fatal("the end of a conflict did not wake subscribers")
	}
	// A claim alone serves nothing.
	kube.Claim("lonely", "TokenProvider ns/lonely")
	if _, ok := r.Get("lonely"); ok {
		t.Fatal("a claim without configuration is served")
	}
	// Conflicts between claims that serve nothing still change the version
	// (status writers wake on Changed).
	v := r.Version()
	file.Claim("lonely", "TokenProvider default/lonely in /etc/providers.yaml")
	if r.Version() == v {
		t.Fatal("a new conflict did not publish")
	}
}

// TestSourceReadiness: the registry is ready once every registered source
// has synced; SourceDirect does not count, MarkReady forces it.
func TestSourceReadiness(t *testing.T) {
	r := NewRegistry()
	kube, file := r.Source(SourceKubernetes), r.Source(SourceFile)
	r.Set(provider("direct", "s")) // registers SourceDirect, which is never synced
	file.MarkSynced()
	if r.Ready() || !file.Synced() || kube.Synced() {
		t.Fatal("ready with the Kubernetes source not synced")
	}
	if r.Source(SourceFile) != file {
		t.Fatal("Source returned a second writer for one kind")
	}
	kube.MarkSynced()
	if !r.Ready() {
		t.Fatal("not ready with every source synced")
	}
	select {
	case <-r.ReadyC():
	default:
		t.Fatal("ReadyC not closed")
	}
	if NewRegistry().Ready() {
		t.Fatal("a registry without sources is ready")
	}
	forced := NewRegistry()
	forced.Source(SourceKubernetes)
	forced.MarkReady()
	if !forced.Ready() {
		t.Fatal("MarkReady did not make the registry ready")
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
