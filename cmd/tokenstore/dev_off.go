//go:build !dev

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// errNoDevMode is what `tokenstore dev` answers in a build without the dev
// tag (make build, the image, the release binaries): the development OpenID
// Provider and its demo users are left out of those on purpose (dev.go).
var errNoDevMode = errors.New("this build of tokenstore has no dev mode: the demo identity provider is left out of production builds.\n" +
	"  From a checkout, run:  go run -tags dev ./cmd/tokenstore dev   (or: make dev)\n" +
	"  For a real install, use `tokenstore serve` (docs/install.md)")

// newDevCmd keeps `dev` in the command list so that someone following the
// README with a production binary learns how to get dev mode instead of
// reading "unknown command".
func newDevCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Not in this build: run `go run -tags dev ./cmd/tokenstore dev` for the local demo",
		Long:  errNoDevMode.Error(),
		// Any flags of the dev build (--data-dir, --listen-address, ...) get
		// the explanation too, not "unknown flag".
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errNoDevMode
		},
	}
}
