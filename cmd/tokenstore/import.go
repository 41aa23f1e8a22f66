package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/flaskimport"
	"github.com/tokenstore/tokenstore/internal/settings"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

// Environment variables of the import's own settings. The old keys are best
// given this way: a flag value is visible in the process list.
const (
	envImportFrom     = settings.EnvPrefix + "IMPORT_FROM"
	envOldCryptoKey   = settings.EnvPrefix + "OLD_CRYPTOKEY"
	defaultBatchEvery = 100
)

func newImportCmd() *cobra.Command {
	var (
		from, oldKey string
		cols         = flaskimport.DefaultColumns()
		overwrite    bool
		every        int
		providers    string
	)
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Import the refresh tokens of the Flask service",
		Long: `Reads the Flask service's database (its refresh_token table, tokens
Fernet-encrypted with its CRYPTOKEY list) and stores every credential in this
service's database (DATABASE_URL), sealed with this service's CRYPTOKEY.
--from takes the Flask service's SQLALCHEMY_DATABASE_URI as it was, read as
SQLAlchemy reads it. With --providers (or PROVIDERS_FILE) rows of a provider
no TokenProvider there serves are imported and listed as warnings.

The old database is only read: PostgreSQL sessions are read-only
(default_transaction_read_only=on), SQLite files are opened with mode=ro.
Rows that cannot be read (corrupt, or under a key not given) are reported and
skipped; the command exits non-zero at the end if there were any. Running it
again changes nothing: a credential that already holds the same token is left
as it is, and one that holds a different token (linked or refreshed in this
service since) is kept unless --overwrite is given.

  TOKENSTORE_OLD_CRYPTOKEY='<old CRYPTOKEY>' \
  TOKENSTORE_DATABASE_URL=postgres://…/tokenstore TOKENSTORE_CRYPTOKEY='<new keys>' \
  tokenstore import --from postgresql://…/old_tokenstore`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, log, err := loadSettings(cmd, settings.RequireCryptoKey)
			if err != nil {
				return err
			}
			if from == "" {
				from = os.Getenv(envImportFrom)
			}
			if from == "" {
				return fmt.Errorf("import: give the old database with --from or $%s", envImportFrom)
			}
			if oldKey == "" {
				oldKey = os.Getenv(envOldCryptoKey)
			}
			if oldKey == "" {
				return fmt.Errorf("import: give the old service's CRYPTOKEY in $%s (or --old-cryptokey)", envOldCryptoKey)
			}
			oldKeys, err := flaskimport.ParseOldKeys(oldKey)
			if err != nil {
				return err
			}
			ring, err := crypto.ParseKeyRing(s.CryptoKey)
			if err != nil {
				return err
			}
			if providers == "" {
				providers = s.ProvidersFile
			}
			var served map[string]bool
			if providers != "" {
				if served, err = providerIDs(providers); err != nil {
					return fmt.Errorf("import: --providers: %w", err)
				}
			}
			st, err := storeopen.Open(cmd.Context(), s.DatabaseURL)
			if err != nil {
				return err
			}
			defer st.Close()

			out := cmd.ErrOrStderr()
			start := time.Now()
			p, err := flaskimport.Run(cmd.Context(), flaskimport.Options{
				Source:    from,
				Columns:   cols,
				OldKeys:   oldKeys,
				Ring:      ring,
				Store:     st,
				Overwrite: overwrite,
				BatchSize: every,
				Providers: served,
				OnProgress: func(p flaskimport.Progress) {
					fmt.Fprintf(out, "import: %d/%d rows: %d imported, %d unchanged, %d kept, %d failed\n",
						p.Seen(), p.Total, p.Imported, p.Unchanged, p.Kept, p.Failed)
				},
				OnRow: func(r flaskimport.Row, o flaskimport.Outcome, reason string) {
					if o == flaskimport.Failed {
						log.Error("cannot import row", "row_id", r.ID, "user", r.UserID, "provider", r.Provider, "reason", reason)
					} else {
						log.Warn("row not imported", "row_id", r.ID, "user", r.UserID, "provider", r.Provider, "reason", reason)
					}
				},
			})
			fmt.Fprintf(out, "import: done in %s: %d imported, %d unchanged, %d kept, %d failed of %d rows; new key %s\n",
				time.Since(start).Round(time.Millisecond), p.Imported, p.Unchanged, p.Kept, p.Failed, p.Total, ring.PrimaryKeyID())
			if p.Unserved > 0 {
				fmt.Fprintf(out, "import: warning: %d rows belong to providers no TokenProvider in %s serves (see the log above); convert or declare them (tokenstore providers convert)\n", p.Unserved, providers)
			}
			if err != nil {
				return err
			}
			if p.Failed > 0 {
				return errors.New("import: " + fmt.Sprint(p.Failed) + " rows could not be read (see the log above); the others were imported")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the Flask service's database, its SQLALCHEMY_DATABASE_URI as is: postgresql[+driver]://…, sqlite:///relative/path or sqlite:////absolute/path [$"+envImportFrom+"]")
	f.StringVar(&oldKey, "old-cryptokey", "", "the old service's CRYPTOKEY list; prefer $"+envOldCryptoKey+" (a flag shows in the process list)")
	f.StringVar(&cols.Table, "table", cols.Table, "old table")
	f.StringVar(&cols.ID, "column-id", cols.ID, "old table's integer primary key column")
	f.StringVar(&cols.UserID, "column-user-id", cols.UserID, "old table's user id (login subject) column")
	f.StringVar(&cols.Provider, "column-provider", cols.Provider, "old table's provider id column")
	f.StringVar(&cols.Token, "column-token", cols.Token, "old table's Fernet-encrypted refresh token column")
	f.StringVar(&cols.ExpiresAt, "column-expires-at", cols.ExpiresAt, "old table's refresh-token expiry column (Unix seconds); empty if there is none")
	f.BoolVar(&overwrite, "overwrite", false, "replace credentials that hold a different token than the old database")
	f.IntVar(&every, "progress-every", defaultBatchEvery, "report progress every this many rows")
	f.StringVar(&providers, "providers", "", "TokenProvider manifests (file or folder, as PROVIDERS_FILE; default PROVIDERS_FILE): warn about rows whose provider none of them serves")
	settings.AddFlags(f)
	return cmd
}

// providerIDs reads the ids TokenProvider manifests serve: each one's
// spec.id, else its metadata.name. The manifests are read untyped, so that
// a spec.id is seen whatever the api package of this binary knows.
func providerIDs(path string) (map[string]bool, error) {
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return nil, err
	} else if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		files = files[:0]
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	ids := map[string]bool{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Spec struct {
					ID string `json:"id"`
				} `json:"spec"`
			}
			if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if obj.Kind != "TokenProvider" {
				continue
			}
			if obj.Spec.ID != "" {
				ids[obj.Spec.ID] = true
			} else if obj.Metadata.Name != "" {
				ids[obj.Metadata.Name] = true
			}
		}
	}
	return ids, nil
}
