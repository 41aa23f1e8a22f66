package controllers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
)

// The remembered value of a Secret key is dropped once no TokenProvider
// references it (secretValues.noteRef). Plain OAuth2 providers are used: they
// are not re-checked periodically, so a value dropped by mistake is not read
// again behind the test's back.
//
// Each test runs twice: on a replica running both reconcilers, which share
// the remembered values and both drop them, and on a follower, whose status
// reconciler never runs (the Lease is held elsewhere), so that only the
// registry reconciler's pruning is at work, as on every replica but the
// leader.

// eachRole runs f in a fresh namespace with a replica of each kind.
func eachRole(t *testing.T, prefix string, f func(t *testing.T, ns string, rep *replica)) {
	for _, follower := range []bool{false, true} {
		role := "both-reconcilers"
		if follower {
			role = "follower"
		}
		t.Run(role, func(t *testing.T) {
			ns := newNamespace(t, prefix)
			rc := replicaConfig{namespaces: []string{ns}}
			if follower {
				holdLease(t, ns)
				rc.leaderElection, rc.leaseNamespace = true, ns
			}
			rep := startReplica(t, rc)
			f(t, ns, rep)
			if runs := rep.ctrls.Status.Runs(); follower && runs != 0 {
				t.Fatalf("the follower's status reconciler ran %d times", runs)
			}
		})
	}
}

// holdLease makes another, live holder own the test replicas' leader
// election Lease in ns for an hour.
func holdLease(t *testing.T, ns string) {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	create(t, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tokenstore-test"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("another-replica"),
			LeaseDurationSeconds: ptr.To(int32(3600)),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	})
}

// pruneSpec is a plain OAuth2 provider with its client secret under key
// ("" for the default) of the Secret secretName.
func pruneSpec(secretName, key string) v1alpha1.TokenProviderSpec {
	return v1alpha1.TokenProviderSpec{
		Endpoints: &v1alpha1.Endpoints{
			Authorization: "https://oauth.example/authorize",
			Token:         "https://oauth.example/token",
		},
		ClientID:        "prune-test",
		ClientSecretRef: &v1alpha1.SecretKeyRef{Name: secretName, Key: key},
	}
}

// cached and dropped check whether the replica remembers the value of the
// Secret key.
func cached(rep *replica, ns, name, key string) func() error {
	return func() error {
		if !rep.ctrls.Registry.SecretValueCached(ns, name, key) {
			return errors.New("the value of " + ns + "/" + name + " key " + key + " is not remembered")
		}
		return nil
	}
}

func dropped(rep *replica, ns, name, key string) func() error {
	return func() error {
		if rep.ctrls.Registry.SecretValueCached(ns, name, key) {
			return errors.New("the value of " + ns + "/" + name + " key " + key + " is still remembered")
		}
		return nil
	}
}

// consistently fails the test if f returns an error at any time within d.
func consistently(tb testing.TB, d time.Duration, what string, f func() error) {
	tb.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := f(); err != nil {
			tb.Fatalf("%s: %v", what, err)
		}
	}
}

// TestSecretValueDroppedWithItsTokenProvider: deleting the only
// TokenProvider that references a Secret drops the remembered value.
func TestSecretValueDroppedWithItsTokenProvider(t *testing.T) {
	eachRole(t, "prune-delete", func(t *testing.T, ns string, rep *replica) {
		secret := newSecretValue()
		tp := tokenProvider(ns, "prune-delete", pruneSpec("s1", ""))
		create(t, clientSecret(ns, "s1", "clientSecret", secret), tp)
		waitRegistry(t, rep.registry, tp.Name, hasSecret(secret))
		eventually(t, wait, "value remembered", cached(rep, ns, "s1", "clientSecret"))

		if err := k8sClient.Delete(context.Background(), tp); err != nil {
			t.Fatal(err)
		}
		waitRegistry(t, rep.registry, tp.Name, absent)
		eventually(t, wait, "value dropped after the TokenProvider's deletion", dropped(rep, ns, "s1", "clientSecret"))
	})
}

// TestSecretValueDroppedWhenRefChanges: pointing a TokenProvider at another
// Secret, then at another key of it, drops the value it used before and
// remembers the new one.
func TestSecretValueDroppedWhenRefChanges(t *testing.T) {
	eachRole(t, "prune-change", func(t *testing.T, ns string, rep *replica) {
		v1, v2, v3 := newSecretValue(), newSecretValue(), newSecretValue()
		s2 := clientSecret(ns, "s2", "clientSecret", v2)
		s2.Data["other"] = []byte(v3)
		tp := tokenProvider(ns, "prune-change", pruneSpec("s1", ""))
		create(t, clientSecret(ns, "s1", "clientSecret", v1), s2, tp)
		waitRegistry(t, rep.registry, tp.Name, hasSecret(v1))
		eventually(t, wait, "s1 remembered", cached(rep, ns, "s1", "clientSecret"))

		update := func(name, key string) {
			t.Helper()
			updateTP(t, ns, tp.Name, func(tp *v1alpha1.TokenProvider) {
				tp.Spec.ClientSecretRef = &v1alpha1.SecretKeyRef{Name: name, Key: key}
			})
		}

		// Another Secret.
		update("s2", "")
		waitRegistry(t, rep.registry, tp.Name, hasSecret(v2))
		eventually(t, wait, "s1 dropped after the change to s2", dropped(rep, ns, "s1", "clientSecret"))
		eventually(t, wait, "s2 remembered", cached(rep, ns, "s2", "clientSecret"))

		// Another key of the same Secret.
		update("s2", "other")
		waitRegistry(t, rep.registry, tp.Name, hasSecret(v3))
		eventually(t, wait, "s2 key clientSecret dropped after the change to key other", dropped(rep, ns, "s2", "clientSecret"))
		eventually(t, wait, "s2 key other remembered", cached(rep, ns, "s2", "other"))
	})
}

// TestSharedSecretValueKeptWhileReferenced: two TokenProviders share a
// Secret; deleting one keeps the value, deleting the other drops it.
func TestSharedSecretValueKeptWhileReferenced(t *testing.T) {
	eachRole(t, "prune-shared", func(t *testing.T, ns string, rep *replica) {
		secret := newSecretValue()
		a := tokenProvider(ns, "prune-shared-a", pruneSpec("shared", ""))
		b := tokenProvider(ns, "prune-shared-b", pruneSpec("shared", "clientSecret"))
		create(t, clientSecret(ns, "shared", "clientSecret", secret), a, b)
		waitRegistry(t, rep.registry, a.Name, hasSecret(secret))
		waitRegistry(t, rep.registry, b.Name, hasSecret(secret))
		eventually(t, wait, "value remembered", cached(rep, ns, "shared", "clientSecret"))

		if err := k8sClient.Delete(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		waitRegistry(t, rep.registry, a.Name, absent)
		// The reconcilers prune after the deletion, the registry's just after
		// removing the entry; none may drop a value b still uses.
		consistently(t, 3*time.Second, "value still referenced by "+b.Name, cached(rep, ns, "shared", "clientSecret"))

		if err := k8sClient.Delete(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		waitRegistry(t, rep.registry, b.Name, absent)
		eventually(t, wait, "value dropped after the last TokenProvider's deletion", dropped(rep, ns, "shared", "clientSecret"))
	})
}
