package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/providers/filesource"
	"github.com/tokenstore/tokenstore/internal/providers/filesource/seedconvert"
)

func newProvidersCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "providers",
		Short: "Convert and check TokenProvider manifests",
		Long: `TokenProviders declare the outside OAuth2 / OpenID Connect providers at which
people link accounts. They are Kubernetes objects (tokenstore.io/v1alpha1), or,
without Kubernetes, the same manifests in a file or folder (PROVIDERS_FILE),
checked by the same rules.`,
	}
	c.AddCommand(newProvidersConvertCmd(), newProvidersValidateCmd())
	return c
}

func newProvidersConvertCmd() *cobra.Command {
	var (
		settingsFile string
		useEnv       bool
		opts         seedconvert.Options
		output       string
	)
	c := &cobra.Command{
		Use:   "convert",
		Short: "Turn the old service's TOKEN_PROVIDERS / IDPn_* settings into manifests",
		Long: `Reads the token provider settings of the original tokenstore and prints one
TokenProvider per id in TOKEN_PROVIDERS, plus one Secret per provider holding
its client secret, as multi-document YAML for kubectl apply or PROVIDERS_FILE.

Settings read, for each id in TOKEN_PROVIDERS ("idp1, idp2"), with n the id in
upper case: IDPn_DISCOVERY_URL, IDPn_CLIENT_ID, IDPn_CLIENT_SECRET (required),
IDPn_SCOPE, IDPn_MD_NAME, IDPn_MD_DESCRIPTION, IDPn_MD_URL, IDPn_MD_ICON,
IDPn_MD_LOGO (optional).

They come from a settings file (--settings, else $TOKENSTORE_SETTINGS if set):
the old Python settings file, of which simple NAME = "value" lines are read
(the others are listed as warnings), or a YAML file of the same names; and,
over the file as the old service did, from the environment, with or without
the TOKENSTORE_ prefix (the prefixed name wins).

The output holds client secrets: write it with --output (created mode 0600) or
keep it out of shared logs.`,
		Example: `  TOKENSTORE_SETTINGS=/etc/tokenstore/settings.py tokenstore providers convert --namespace tokenstore -o providers.yaml
  tokenstore providers convert --settings settings.py --env=false | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stderr := cmd.ErrOrStderr()
			s := seedconvert.NewSettings()
			var sources []string
			if settingsFile == "" {
				settingsFile = os.Getenv(seedconvert.EnvPrefix + "SETTINGS")
			}
			if settingsFile != "" {
				fs, err := seedconvert.ReadSettingsFile(settingsFile)
				if err != nil {
					return err
				}
				s.Merge(fs)
				sources = append(sources, settingsFile)
			}
			if useEnv {
				s.Merge(seedconvert.FromEnviron(os.Environ()))
				sources = append(sources, "environment")
			}
			if len(sources) == 0 {
				return errors.New("providers convert: nothing to read: give --settings FILE or leave --env on")
			}
			for _, p := range s.Problems() {
				fmt.Fprintln(stderr, "warning:", p)
			}
			opts.Source = strings.Join(sources, " + ")
			res, err := seedconvert.Convert(s, opts)
			if err != nil {
				return fmt.Errorf("providers convert:\n%w", err)
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(stderr, "warning:", w)
			}
			v, err := filesource.DefaultValidator()
			if err != nil {
				return err
			}
			// The output must pass `providers validate`; a setting that makes
			// it fail (a bad URL) is reported here, by setting name.
			if err := res.Check(cmd.Context(), v); err != nil {
				return fmt.Errorf("providers convert: the converted manifests are not valid:\n%w", err)
			}
			out, err := res.YAML()
			if err != nil {
				return err
			}
			if output == "" || output == "-" {
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			if err := writePrivate(output, out); err != nil {
				return fmt.Errorf("providers convert: %w", err)
			}
			fmt.Fprintf(stderr, "wrote %d TokenProvider(s) and their Secrets to %s\n", len(res.Providers), output)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&settingsFile, "settings", "", "settings file of the old service (Python NAME = \"value\" lines, or YAML); default $TOKENSTORE_SETTINGS")
	f.BoolVar(&useEnv, "env", true, "also read the settings from the environment (TOKENSTORE_NAME or NAME), over the settings file")
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the generated objects (default: none, kubectl's current namespace applies)")
	f.StringVar(&opts.SecretNameFormat, "secret-name-format", seedconvert.DefaultSecretNameFormat, "name of each provider's Secret; %s is the provider id")
	f.StringVarP(&output, "output", "o", "", "write to this file (mode 0600) instead of standard output")
	return c
}

// writePrivate writes data to a new or truncated file readable by its owner
// only, since it holds client secrets.
func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newProvidersValidateCmd() *cobra.Command {
	var namespace string
	c := &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Check TokenProvider and Secret manifests by the CRD's rules",
		Long: `Checks manifest files (or every *.yaml, *.yml and *.json file of a folder) the
way the Kubernetes API server checks TokenProviders: the CRD's OpenAPI schema,
its defaults and its CEL rules, plus unknown fields as kubectl's strict
validation does. Prints one line per object and exits 1 if any is invalid.
A Secret referenced but not found in the files is a warning: it may exist in
the cluster.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := filesource.DefaultValidator()
			if err != nil {
				return err
			}
			var objects, invalid int
			for _, path := range args {
				m, err := filesource.Load(cmd.Context(), v, path, filesource.LoadOptions{Namespace: namespace})
				if err != nil {
					return err
				}
				n, bad := printValidation(cmd.OutOrStdout(), m)
				objects += n
				invalid += bad
			}
			if invalid > 0 {
				return fmt.Errorf("providers validate: %d of %d objects are invalid", invalid, objects)
			}
			if objects == 0 {
				return errors.New("providers validate: no manifests found")
			}
			return nil
		},
	}
	c.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of objects that name none (default \"default\")")
	return c
}

// printValidation prints one line per object of m and returns how many
// objects there were and how many were invalid.
func printValidation(w io.Writer, m *filesource.Manifests) (objects, invalid int) {
	for _, o := range m.Objects {
		objects++
		if o.Err != nil {
			invalid++
			fmt.Fprintf(w, "error  %v\n", o.Err)
			continue
		}
		fmt.Fprintf(w, "ok     %s: %s %q\n", o.Location, o.Kind, o.Name)
		if tp := o.Provider; tp != nil && tp.Spec.ClientSecretRef != nil && tp.Spec.TokenEndpointAuthMethod != "none" {
			ref := tp.Spec.ClientSecretRef
			sec, ok := m.Secret(tp.Namespace, ref.Name)
			switch {
			case !ok:
				fmt.Fprintf(w, "warn   %s: %s %q: Secret %q (namespace %q) is not in these files\n", o.Location, o.Kind, o.Name, ref.Name, tp.Namespace)
			case len(sec.Data[ref.Key]) == 0:
				fmt.Fprintf(w, "warn   %s: %s %q: Secret %q has no key %q\n", o.Location, o.Kind, o.Name, ref.Name, ref.Key)
			}
		}
	}
	return objects, invalid
}
