package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set at build time by make build, make image and
// make release (the Makefile's LDFLAGS) and by the Dockerfile:
// -ldflags "-X main.version=0.1.0 -X main.commit=<git rev-parse HEAD>".
// The commit comes from the linker rather than Go's VCS stamping because
// those builds turn stamping off (-buildvcs=false: reproducible, and the
// Docker build context has no .git).
var (
	version = "dev"
	commit  = ""
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary and the commit it was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "tokenstore %s (commit %s, %s, %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// buildCommit is the commit set by the linker, else the one Go stamped into
// a plain `go build` from a checkout, else "unknown" (go run, go test).
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
