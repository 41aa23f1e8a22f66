// Package benchproc is what the benchmark's helper processes (fixture,
// kube) share about their own lifetime: a benchmark script that dies
// without cleaning up must not leave them running.
package benchproc

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Context ends on SIGINT or SIGTERM, after lifetime, and (holdStdin) when
// standard input closes: the caller holds it open, and when the caller goes
// away, so does the process. stop releases the signal handler and timer.
func Context(lifetime time.Duration, holdStdin bool) (ctx context.Context, stop func()) {
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	if holdStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	return ctx, func() { cancel(); stopSignals() }
}
