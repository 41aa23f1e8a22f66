// Command tokenstore keeps people's OAuth2 / OpenID Connect refresh tokens and
// hands out fresh access tokens to their apps and workloads.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/settings"
)

func main() {
	defer app.FlushLogs() // a panic in this goroutine: its last lines still out
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	// The logger buffers (see app.NewLogger): write out its last lines before
	// anything else reaches stderr or the process exits.
	app.FlushLogs()
	if err != nil {
		var cerr *settings.Error
		if errors.As(err, &cerr) {
			fmt.Fprintln(os.Stderr, "tokenstore:", cerr.Error())
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tokenstore:", err)
		os.Exit(1)
	}
}
