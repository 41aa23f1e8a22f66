package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// newProbeCmd is the image's own health check: the image has no shell and
// no curl, so `helm test`, a Docker HEALTHCHECK or an operator at
// `kubectl debug` use the binary itself to ask an endpoint for a 200.
func newProbeCmd() *cobra.Command {
	timeout := 5 * time.Second
	cmd := &cobra.Command{
		Use:   "probe URL",
		Short: "Request URL (e.g. http://tokenstore.ns.svc/readyz) and exit non-zero unless it answers 200",
		Long: `probe sends one GET to URL and exits 0 when the answer is 200 OK, 1 otherwise,
printing the status (and the start of the body on failure). It follows no
redirects. The chart's helm test uses it: the image has no shell or curl.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(args[0])
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("probe: %q is not an http(s) URL", args[0])
			}
			hc := &http.Client{
				Timeout:       timeout,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, u.String(), nil)
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("probe: %s answered %s: %s", u.Redacted(), resp.Status, body)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", u.Redacted(), resp.Status)
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "give up after this long")
	return cmd
}
