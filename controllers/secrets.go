package controllers

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers/resolve"
)

// secretValues reads the client secrets TokenProviders reference without
// asking the API server again for a Secret that has not changed.
//
// Secrets are watched as metadata only, so the manager's cache knows each
// Secret's resourceVersion but none of its data. A value read from the API
// server is remembered together with the resourceVersion it was read at; it
// is used again only while the cached metadata shows that same
// resourceVersion, i.e. while the Secret has not changed. Any change, a
// deletion, or metadata the cache does not have yet means a fresh read. The
// informer updates its store before it queues the reconciles of a change,
// so a reconcile caused by a Secret change always reads the new value.
//
// Reads that see the same cached resourceVersion share one API call (the
// registry and status reconcilers usually ask at the same moment): a read
// started after the cache showed that version returns that version or a
// newer one, which is what every caller that saw it may use.
//
// Without it every reconcile of every TokenProvider, in both reconcilers,
// read its Secret from the API server: 2,000 GETs of one Secret to bring up
// 1,000 providers that share it. Only the referenced keys' values are kept,
// which the registry holds anyway; no informer caches whole Secrets. A value
// no TokenProvider references any more is dropped by noteRef, which the
// reconcilers call for each request they finish, so that no client secret
// outlives its use (a deletion of the Secret drops it in read).
type secretValues struct {
	meta client.Reader // the manager's cache: Secret metadata, TokenProviders
	api  client.Reader // uncached: Secret data

	mu      sync.Mutex
	entries map[secretKey]secretEntry
	// refs is the Secret key each TokenProvider last resolved with
	// (noteRef); an object that reads none has no entry.
	refs   map[types.NamespacedName]secretKey
	flight singleflight.Group
}

type secretKey struct {
	namespace, name, key string
}

type secretEntry struct {
	resourceVersion string
	value           []byte
	found           bool // the key exists in the Secret
}

func newSecretValues(meta, api client.Reader) *secretValues {
	return &secretValues{meta: meta, api: api, entries: map[secretKey]secretEntry{}, refs: map[types.NamespacedName]secretKey{}}
}

// lookup is the SecretLookup of a TokenProvider in namespace.
func (s *secretValues) lookup(ctx context.Context, namespace string) resolve.SecretLookup {
	return func(name, key string) ([]byte, error) {
		k := secretKey{namespace, name, key}
		rv := s.cachedVersion(ctx, namespace, name)
		if rv != "" {
			s.mu.Lock()
			e, ok := s.entries[k]
			s.mu.Unlock()
			if ok && e.resourceVersion == rv {
				return e.result(name, key)
			}
		}
		read := func() (any, error) { return s.read(ctx, k) }
		var (
			e   any
			err error
		)
		if rv != "" {
			e, err, _ = s.flight.Do(namespace+"/"+name+"/"+key+"@"+rv, read)
		} else {
			e, err = read()
		}
		if err != nil {
			return nil, err
		}
		return e.(secretEntry).result(name, key)
	}
}

// read gets the Secret from the API server and remembers the key's value
// with the version read.
func (s *secretValues) read(ctx context.Context, k secretKey) (secretEntry, error) {
	var sec corev1.Secret
	err := s.api.Get(ctx, types.NamespacedName{Namespace: k.namespace, Name: k.name}, &sec)
	if apierrors.IsNotFound(err) {
		s.forget(k.namespace, k.name)
		return secretEntry{}, fmt.Errorf("secret %s/%s: %w", k.namespace, k.name, resolve.ErrSecretNotFound)
	}
	if err != nil {
		return secretEntry{}, fmt.Errorf("reading Secret %s/%s: %w", k.namespace, k.name, err)
	}
	v, err := resolve.SecretValue(&sec, k.name, k.key)
	e := secretEntry{resourceVersion: sec.ResourceVersion, value: v, found: err == nil}
	s.mu.Lock()
	s.entries[k] = e
	s.mu.Unlock()
	return e, nil
}

func (e secretEntry) result(name, key string) ([]byte, error) {
	if !e.found {
		return nil, fmt.Errorf("secret %q has no key %q: %w", name, key, resolve.ErrSecretKeyMissing)
	}
	return e.value, nil
}

// cachedVersion is the Secret's resourceVersion in the manager's metadata
// cache, "" when the cache does not have it (not seen yet, deleted, or a
// namespace the cache does not cover).
func (s *secretValues) cachedVersion(ctx context.Context, namespace, name string) string {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := s.meta.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &m); err != nil {
		return ""
	}
	return m.ResourceVersion
}

func (s *secretValues) forget(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.entries {
		if k.namespace == namespace && k.name == name {
			delete(s.entries, k)
		}
	}
}

// noteRef records which Secret key the TokenProvider nn resolves with now
// (tp nil, being deleted or reading none: no key) and, when that differs
// from the key it resolved with before, drops the value of the earlier key
// if no TokenProvider references it any more: deleted, or changed to another
// Secret or key. Only a reference that went away is looked up, one indexed
// List on the manager's cache (no API call), so a reconcile that changed
// nothing costs a map lookup, whatever the number of providers and Secrets.
//
// Both reconcilers call it after each reconcile, sharing refs. A status
// reconcile under way when its object changed may read the old Secret
// after the registry reconciler dropped it and record the old key again;
// the reconcile of the change that follows it records the new key and
// drops the old value then. A value dropped while a reconcile that raced
// with the listing was reading it costs one read more at the next
// reconcile, never a wrong value.
func (s *secretValues) noteRef(ctx context.Context, nn types.NamespacedName, tp *v1alpha1.TokenProvider) error {
	var now secretKey
	if tp != nil {
		if name, key, ok := secretRef(tp); ok {
			now = secretKey{tp.Namespace, name, key}
		}
	}
	s.mu.Lock()
	before, had := s.refs[nn]
	if now == (secretKey{}) {
		delete(s.refs, nn)
	} else {
		s.refs[nn] = now
	}
	s.mu.Unlock()
	if !had || before == now {
		return nil
	}
	return s.dropIfUnreferenced(ctx, before)
}

// dropIfUnreferenced forgets the value of k unless a TokenProvider of its
// namespace references it (found through SecretRefIndex, without copying
// the objects).
func (s *secretValues) dropIfUnreferenced(ctx context.Context, k secretKey) error {
	var list v1alpha1.TokenProviderList
	if err := s.meta.List(ctx, &list, client.InNamespace(k.namespace), client.MatchingFields{SecretRefIndex: k.name},
		client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing the TokenProviders that reference Secret %s/%s: %w", k.namespace, k.name, err)
	}
	for i := range list.Items {
		if name, key, ok := secretRef(&list.Items[i]); ok && name == k.name && key == k.key {
			return nil
		}
	}
	s.mu.Lock()
	delete(s.entries, k)
	s.mu.Unlock()
	return nil
}

// secretRef is the Secret name and key whose value Resolve reads for tp;
// ok is false when it reads none (no reference, tokenEndpointAuthMethod
// none) or tp is being deleted (no reconciler resolves it any more).
func secretRef(tp *v1alpha1.TokenProvider) (name, key string, ok bool) {
	ref := tp.Spec.ClientSecretRef
	if ref == nil || ref.Name == "" || tp.Spec.TokenEndpointAuthMethod == v1alpha1.AuthMethodNone || tp.DeletionTimestamp != nil {
		return "", "", false
	}
	key = ref.Key
	if key == "" {
		key = resolve.DefaultSecretKey
	}
	return ref.Name, key, true
}

// SecretValueCached reports whether the value of key of the Secret
// namespace/name is remembered (never the value itself); tests use it to
// show that values nobody references are dropped.
func (r *RegistryReconciler) SecretValueCached(namespace, name, key string) bool {
	if r.secrets == nil {
		return false
	}
	r.secrets.mu.Lock()
	defer r.secrets.mu.Unlock()
	_, ok := r.secrets.entries[secretKey{namespace, name, key}]
	return ok
}
