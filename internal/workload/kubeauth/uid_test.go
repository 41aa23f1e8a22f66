package kubeauth

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestServiceAccountUID: the directory gives the ServiceAccount's uid, and
// false (no error) for a missing one.
func TestServiceAccountUID(t *testing.T) {
	cs := fake.NewSimpleClientset(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sa", UID: types.UID("uid-1")}})
	a, err := NewForClient(cs, Options{Audience: "tokenstore"})
	if err != nil {
		t.Fatal(err)
	}
	uid, ok, err := a.ServiceAccountUID(context.Background(), "ns", "sa")
	if err != nil || !ok || uid != "uid-1" {
		t.Errorf("ServiceAccountUID(ns/sa) = %q, %v, %v; want uid-1, true", uid, ok, err)
	}
	uid, ok, err = a.ServiceAccountUID(context.Background(), "ns", "ghost")
	if err != nil || ok || uid != "" {
		t.Errorf("ServiceAccountUID(ns/ghost) = %q, %v, %v; want \"\", false, nil", uid, ok, err)
	}
	cs.PrependReactor("get", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if _, _, err := a.ServiceAccountUID(context.Background(), "ns", "sa"); err == nil {
		t.Error("ServiceAccountUID without an API server: no error")
	}
}

// TestAuthenticateUID: the identity carries the uid TokenReview reports for
// the ServiceAccount (status.user.uid).
func TestAuthenticateUID(t *testing.T) {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authnv1.TokenReview{Status: authnv1.TokenReviewStatus{
			Authenticated: true, Audiences: []string{"tokenstore"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:ns:sa", UID: "uid-1",
				Extra: map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"pod-1"}}},
		}}, nil
	})
	a, err := NewForClient(cs, Options{Audience: "tokenstore"})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	id, err := a.Authenticate(context.Background(), enc(`{"alg":"RS256"}`)+"."+enc(`{"aud":["tokenstore"],"exp":`+exp+`}`)+".c2ln")
	if err != nil {
		t.Fatal(err)
	}
	if id.Namespace != "ns" || id.ServiceAccount != "sa" || id.UID != "uid-1" || id.Pod != "pod-1" {
		t.Errorf("identity %+v", id)
	}
}
