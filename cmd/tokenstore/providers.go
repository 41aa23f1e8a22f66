package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenstore/tokenstore/internal/providers/filesource"
	"github.com/tokenstore/tokenstore/internal/providers/filesource/flaskconvert"
	"github.com/tokenstore/tokenstore/internal/settings"
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
		opts         flaskconvert.Options
		output       string
	)
	c := &cobra.Command{
		Use:   "convert",
		Short: "Turn the Flask service's TOKEN_PROVIDERS / IDPn_* settings into manifests",
		Long: `Reads the token provider settings of the Flask service and prints one
TokenProvider per id in TOKEN_PROVIDERS, plus one Secret per provider holding
its client secret, as multi-document YAML for kubectl apply or PROVIDERS_FILE.

Settings read, for each id in TOKEN_PROVIDERS ("idp1, idp2"), with n the id in
upper case: IDPn_DISCOVERY_URL, IDPn_CLIENT_ID (required), IDPn_CLIENT_SECRET,
IDPn_SCOPE, IDPn_MD_NAME, IDPn_MD_DESCRIPTION, IDPn_MD_URL, IDPn_MD_ICON,
IDPn_MD_LOGO (optional).

They come from a settings file (--settings, else $TOKENSTORE_SETTINGS if set),
read as serve reads it: the Flask service's Python settings file (its literal
NAME = value assignments; the file is never run, and a provider setting on a
line that cannot be read stops the conversion), or YAML; and, over the file
as the Flask service did, from the environment, with or without the
TOKENSTORE_ prefix (the prefixed name wins).

A provider without a client secret becomes a public client
(tokenEndpointAuthMethod: none), with a warning. A provider id that cannot be
a Kubernetes name (tern_keycloak, Google) keeps its id as spec.id, the id of
the API paths, under a valid metadata.name (tern-keycloak, google).

The output holds client secrets: write it with --output (created mode 0600) or
keep it out of shared logs.`,
		Example: `  TOKENSTORE_SETTINGS=/etc/tokenstore/settings.py tokenstore providers convert --namespace tokenstore -o providers.yaml
  tokenstore providers convert --settings settings.py --env=false | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stderr := cmd.ErrOrStderr()
			s := flaskconvert.NewSettings()
			var sources []string
			if settingsFile == "" {
				settingsFile = os.Getenv(flaskconvert.EnvPrefix + "SETTINGS")
			}
			var unread []settings.Unreadable
			if settingsFile != "" {
				fs, u, err := flaskconvert.ReadSettingsFile(settingsFile)
				if err != nil {
					return err
				}
				s, unread = fs, u
				sources = append(sources, settingsFile)
			}
			if useEnv {
				s.Merge(flaskconvert.FromEnviron(os.Environ()))
				sources = append(sources, "environment")
			}
			if len(sources) == 0 {
				return errors.New("providers convert: nothing to read: give --settings FILE or leave --env on")
			}
			// A provider setting on a line that cannot be read, and not
			// given by the environment either, stops the conversion: read
			// as missing, a client secret would turn the provider into a
			// public client. Other unreadable lines are only noted, once,
			// with s.Problems() below (which leaves out the ones a later
			// source set).
			var stop []string
			for _, u := range unread {
				if u.Name != "" && s.Origin(u.Name) == "" && isProviderSetting(u.Name) {
					stop = append(stop, u.Msg)
				}
			}
			if len(stop) > 0 {
				return fmt.Errorf("providers convert: provider settings that cannot be read:\n  %s\nwrite their values as literals, or give them in the environment (TOKENSTORE_NAME)", strings.Join(stop, "\n  "))
			}
			for _, p := range s.Problems() {
				fmt.Fprintln(stderr, "warning:", p)
			}
			opts.Source = strings.Join(sources, " + ")
			res, err := flaskconvert.Convert(s, opts)
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
	f.StringVar(&settingsFile, "settings", "", "settings file of the Flask service (Python, or YAML: read as serve reads it); default $TOKENSTORE_SETTINGS")
	f.BoolVar(&useEnv, "env", true, "also read the settings from the environment (TOKENSTORE_NAME or NAME), over the settings file")
	f.StringVarP(&opts.Namespace, "namespace", "n", "", "namespace of the generated objects (default: none, kubectl's current namespace applies)")
	f.StringVar(&opts.SecretNameFormat, "secret-name-format", flaskconvert.DefaultSecretNameFormat, "name of each provider's Secret; %s is the provider id")
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

// isProviderSetting reports whether a setting name is TOKEN_PROVIDERS or
// shaped like a provider's IDPn_* setting.
func isProviderSetting(name string) bool {
	if name == "TOKEN_PROVIDERS" {
		return true
	}
	for _, suf := range []string{"_DISCOVERY_URL", "_CLIENT_ID", "_CLIENT_SECRET", "_SCOPE", "_MD_NAME", "_MD_DESCRIPTION", "_MD_URL", "_MD_ICON", "_MD_LOGO"} {
		if strings.HasSuffix(name, suf) && !strings.HasPrefix(name, "OIDC_") {
			return true
		}
	}
	return false
}
