package controllers

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenstore/tokenstore/internal/providers/resolve"
)

// fakeSecrets is a client.Reader over Secrets held in a map; as the metadata
// cache it answers PartialObjectMetadata, as the API reader whole Secrets.
type fakeSecrets struct {
	secrets map[string]*corev1.Secret // by name, one namespace
	gets    int
}

func (f *fakeSecrets) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	s, ok := f.secrets[key.Name]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	switch o := obj.(type) {
	case *metav1.PartialObjectMetadata:
		o.ObjectMeta = *s.ObjectMeta.DeepCopy()
	case *corev1.Secret:
		f.gets++
		*o = *s.DeepCopy()
	default:
		return errors.New("unexpected type")
	}
	return nil
}

func (f *fakeSecrets) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not implemented")
}

func secretAt(rv, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: rv},
		Data:       map[string][]byte{"clientSecret": []byte(value)},
	}
}

func TestSecretValuesReadOncePerResourceVersion(t *testing.T) {
	ctx := context.Background()
	meta := &fakeSecrets{secrets: map[string]*corev1.Secret{"s": secretAt("1", "one")}}
	api := &fakeSecrets{secrets: map[string]*corev1.Secret{"s": secretAt("1", "one")}}
	sv := newSecretValues(meta, api)
	lookup := sv.lookup(ctx, "ns")

	expect := func(want string, gets int) {
		t.Helper()
		v, err := lookup("s", "clientSecret")
		if err != nil || string(v) != want {
			t.Fatalf("lookup = %q, %v; want %q", v, err, want)
		}
		if api.gets != gets {
			t.Fatalf("%d API reads, want %d", api.gets, gets)
		}
	}
	expect("one", 1)
	expect("one", 1) // unchanged: no second read

	// Changed: the cache shows a new resourceVersion, so it is read again.
	meta.secrets["s"], api.secrets["s"] = secretAt("2", "two"), secretAt("2", "two")
	expect("two", 2)
	expect("two", 2)

	// Changed, but the cache has not seen it yet: the value of the version
	// the cache shows is still used; the reconcile of the change comes after
	// the cache has it.
	api.secrets["s"] = secretAt("3", "three")
	expect("two", 2)
	meta.secrets["s"] = secretAt("3", "three")
	expect("three", 3)

	// The API server is ahead of the cache: the newer value read is used,
	// and read again until the cache catches up (never an older value).
	meta.secrets["s"] = secretAt("4", "four")
	api.secrets["s"] = secretAt("5", "five")
	expect("five", 4)
	expect("five", 5)
	meta.secrets["s"] = secretAt("5", "five")
	expect("five", 5)

	// A missing key is remembered for the version too.
	if _, err := lookup("s", "other"); !errors.Is(err, resolve.ErrSecretKeyMissing) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := lookup("s", "other"); !errors.Is(err, resolve.ErrSecretKeyMissing) || api.gets != 6 {
		t.Fatalf("missing key again: %v, %d API reads", err, api.gets)
	}

	// Deleted: gone from the cache and from the API server.
	delete(meta.secrets, "s")
	delete(api.secrets, "s")
	if _, err := lookup("s", "clientSecret"); !errors.Is(err, resolve.ErrSecretNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	// Re-created at a version the cache has not seen yet: read, not served
	// from what was remembered.
	api.secrets["s"] = secretAt("9", "nine")
	expect("nine", 7)
	if len(sv.entries) != 1 {
		t.Fatalf("%d remembered values, want 1", len(sv.entries))
	}
}
