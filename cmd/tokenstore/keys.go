package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/keyrotation"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

func newKeysCmd() *cobra.Command {
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Manage the encryption keys (CRYPTOKEY)",
		Long: `Refresh and access tokens are stored encrypted with AES-256-GCM under the keys
of CRYPTOKEY: a comma-separated list of 32-byte keys (raw, base64 or hex). The
first key encrypts, every key decrypts.

To rotate: generate a key, put it first in CRYPTOKEY (keep the old ones after
it), restart, run 'tokenstore keys rotate', then drop the old keys.`,
	}
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Print a new random key, base64 encoded",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := crypto.GenerateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), k)
			return err
		},
	}
	var batch int
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-encrypt every stored credential under the first key of CRYPTOKEY",
		Long: `Re-encrypts every stored credential that is still under an older key with the
first key of CRYPTOKEY. It works row by row with a compare-and-swap, so it is
safe while the service runs, can be stopped at any point without losing a
token, and a second run continues with what is left. Rows it cannot open
(a key missing from CRYPTOKEY) are reported and left as they are.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, log, err := loadSettings(cmd, settings.RequireCryptoKey)
			if err != nil {
				return err
			}
			ring, err := crypto.ParseKeyRing(s.CryptoKey)
			if err != nil {
				return err
			}
			st, err := storeopen.Open(cmd.Context(), s.DatabaseURL)
			if err != nil {
				return err
			}
			defer st.Close()
			out := cmd.ErrOrStderr()
			start := time.Now()
			p, err := keyrotation.Rotate(cmd.Context(), st, ring, keyrotation.Options{
				BatchSize: batch,
				OnProgress: func(p keyrotation.Progress) {
					fmt.Fprintf(out, "rotated %d/%d (%d failed)\n", p.Done, p.Total, p.Failed)
				},
				OnFailure: func(c store.Credential, err error) {
					log.Error("cannot rotate credential", "credential_id", c.ID, "user", c.UserID, "provider", c.Provider, "error", err)
				},
			})
			fmt.Fprintf(out, "done: %d re-encrypted under key %s, %d failed, in %s\n", p.Done, ring.PrimaryKeyID(), p.Failed, time.Since(start).Round(time.Millisecond))
			if err != nil {
				return err
			}
			if p.Failed > 0 {
				return fmt.Errorf("%d credentials could not be opened with any key of CRYPTOKEY; they were left as they are", p.Failed)
			}
			return nil
		},
	}
	rotate.Flags().IntVar(&batch, "batch-size", 500, "rows read per batch")
	settings.AddFlags(rotate.Flags())
	keys.AddCommand(gen, rotate)
	return keys
}
