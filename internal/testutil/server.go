package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// FreeAddr is a loopback address (127.0.0.1:port) nothing listens on right
// now, for a server a test starts as a subprocess.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ErrExited is WaitReady's answer when the server's process ended first.
var ErrExited = errors.New("the server exited before it was ready")

// WaitReady polls url (a readiness endpoint) until it answers 200. It gives
// up with ErrExited when exited is closed (the process behind url ended: a
// closed channel, not a value, so that the caller's own Wait result is
// left for it), or with an error after timeout.
func WaitReady(url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return ErrExited
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s", url, timeout)
		}
	}
}
