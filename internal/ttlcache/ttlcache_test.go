package ttlcache

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTTLAndForget(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := New[string, int](time.Second, 2, clk.now)
	tk := c.Begin()
	c.Put(tk, "a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatal("fresh entry not served")
	}
	clk.t = clk.t.Add(999 * time.Millisecond)
	if _, ok := c.Get("a"); !ok {
		t.Fatal("entry lapsed early")
	}
	clk.t = clk.t.Add(time.Millisecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("entry served past its TTL")
	}

	// A read that began before an invalidation must not store its result.
	tk = c.Begin()
	c.Forget("b")
	c.Put(tk, "a", 2)
	if _, ok := c.Get("a"); ok {
		t.Fatal("a read that raced an invalidation was cached")
	}
	// The age counts from the read's start.
	tk = c.Begin()
	clk.t = clk.t.Add(600 * time.Millisecond)
	c.Put(tk, "a", 3)
	clk.t = clk.t.Add(500 * time.Millisecond)
	if _, ok := c.Get("a"); ok {
		t.Fatal("entry outlived TTL counted from the read's start")
	}
}

func TestBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := New[int, int](time.Second, 2, clk.now)
	for i := range 5 {
		c.Put(c.Begin(), i, i)
	}
	if c.Len() != 2 {
		t.Fatalf("%d entries, bound 2", c.Len())
	}
	clk.t = clk.t.Add(2 * time.Second)
	c.Put(c.Begin(), 9, 9)
	if _, ok := c.Get(9); !ok || c.Len() != 1 {
		t.Fatalf("lapsed entries not swept to make room: %d", c.Len())
	}
}

func TestNilIsOff(t *testing.T) {
	var c *Cache[string, int] = New[string, int](0, 10, nil)
	c.Put(c.Begin(), "a", 1)
	c.Forget("a")
	if _, ok := c.Get("a"); ok {
		t.Fatal("a disabled cache served")
	}
}

func TestForgetIf(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := New[string, int](time.Second, 8, clk.now)
	for i, k := range []string{"a", "b", "c"} {
		c.Put(c.Begin(), k, i)
	}
	inFlight := c.Begin()
	c.ForgetIf(func(k string, v int) bool { return v%2 == 0 })
	if _, ok := c.Get("a"); ok {
		t.Error("a (0) kept")
	}
	if _, ok := c.Get("c"); ok {
		t.Error("c (2) kept")
	}
	if v, ok := c.Get("b"); !ok || v != 1 {
		t.Errorf("b = %d, %v; want 1, kept", v, ok)
	}
	// A read that began before it must not store what it read.
	c.Put(inFlight, "a", 0)
	if _, ok := c.Get("a"); ok {
		t.Error("a read begun before ForgetIf was stored")
	}
}
