package flaskconvert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers/filesource"
)

// Setting names of the old service. A provider's settings are its id,
// upper-cased, followed by "_" and a suffix.
const (
	settingProviders = "TOKEN_PROVIDERS"

	suffixDiscoveryURL  = "DISCOVERY_URL"
	suffixClientID      = "CLIENT_ID"
	suffixClientSecret  = "CLIENT_SECRET"
	suffixScope         = "SCOPE"
	suffixMDName        = "MD_NAME"
	suffixMDDescription = "MD_DESCRIPTION"
	suffixMDURL         = "MD_URL"
	suffixMDIcon        = "MD_ICON"
	suffixMDLogo        = "MD_LOGO"
)

var knownSuffixes = []string{
	suffixDiscoveryURL, suffixClientID, suffixClientSecret, suffixScope,
	suffixMDName, suffixMDDescription, suffixMDURL, suffixMDIcon, suffixMDLogo,
}

// SecretKey is the key of the client secret in each generated Secret (the
// default of clientSecretRef.key).
const SecretKey = "clientSecret"

// DefaultSecretNameFormat names each provider's Secret; %s is the provider id.
const DefaultSecretNameFormat = "tokenstore-provider-%s"

// Options tune the conversion.
type Options struct {
	// Namespace of the generated objects; empty leaves it out, so that
	// kubectl applies them to its current namespace.
	Namespace string
	// SecretNameFormat names each provider's Secret; it must hold one %s,
	// the provider id. DefaultSecretNameFormat if empty.
	SecretNameFormat string
	// Source describes where the settings came from, for the header comment.
	Source string
}

// Result is the converted manifests.
type Result struct {
	// Providers and Secrets, in the order of TOKEN_PROVIDERS; a public
	// client (no client secret) has a nil Secret.
	Providers []*v1alpha1.TokenProvider
	Secrets   []*corev1.Secret
	// IDs are the Flask service's provider ids, one per provider: the id
	// in every API path. Where one cannot be a Kubernetes name
	// (tern_keycloak, Google) the TokenProvider is named after it (Name)
	// and carries it as spec.id.
	IDs []string
	// Warnings are things the person should look at (unknown settings,
	// duplicate ids); the output is usable despite them.
	Warnings []string
	opts     Options
}

// Convert builds one TokenProvider and one Secret per id in TOKEN_PROVIDERS.
// Every missing or unusable setting is reported at once, each by its name.
// The client secret goes into the Secret only; no error or warning contains
// it.
func Convert(s *Settings, opts Options) (*Result, error) {
	if opts.SecretNameFormat == "" {
		opts.SecretNameFormat = DefaultSecretNameFormat
	}
	if strings.Count(opts.SecretNameFormat, "%s") != 1 || strings.Count(opts.SecretNameFormat, "%") != 1 {
		return nil, fmt.Errorf("--secret-name-format %q must contain %%s (the provider id) once and no other %% verb", opts.SecretNameFormat)
	}
	if opts.Namespace != "" {
		if msgs := utilvalidation.IsDNS1123Label(opts.Namespace); len(msgs) > 0 {
			return nil, fmt.Errorf("--namespace %q: %s", opts.Namespace, strings.Join(msgs, "; "))
		}
	}

	ids, err := providerIDs(s)
	if err != nil {
		return nil, err
	}
	r := &Result{opts: opts}
	var errs []error
	seen := map[string]bool{}
	names := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s lists %q twice; converted once", settingProviders, id))
			continue
		}
		seen[id] = true
		name := Name(id, names)
		tp, sec, warn, perr := convertOne(s, id, name, opts)
		if perr != nil {
			errs = append(errs, perr...)
			continue
		}
		r.Warnings = append(r.Warnings, warn...)
		r.Providers = append(r.Providers, tp)
		r.Secrets = append(r.Secrets, sec)
		r.IDs = append(r.IDs, id)
	}
	r.Warnings = append(r.Warnings, unknownSettings(s, ids)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// providerIDs reads TOKEN_PROVIDERS: "idp1, idp2" as the old service wrote
// it, or a list.
func providerIDs(s *Settings) ([]string, error) {
	v, ok := s.values[settingProviders]
	if !ok {
		if where, unread := s.unread[settingProviders]; unread {
			return nil, fmt.Errorf("%s (%s) could not be read: write it as %s = \"idp1, idp2\"", settingProviders, where, settingProviders)
		}
		return nil, fmt.Errorf("%s is not set: it lists the provider ids, e.g. %s=\"idp1, idp2\" (from the environment, with or without the %s prefix, or from --settings)", settingProviders, settingProviders, EnvPrefix)
	}
	var ids []string
	items := v.list
	if !v.isList {
		items = []string{v.str}
	}
	for _, it := range items {
		ids = append(ids, strings.FieldsFunc(it, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })...)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s (%s) lists no provider", settingProviders, v.origin)
	}
	return ids, nil
}

// Name is the TokenProvider name of a provider id: the id itself when it
// can be a Kubernetes object name, else lower-cased with every character
// other than a-z, 0-9, "-" and "." turned into "-" (tern_keycloak →
// tern-keycloak), and made unique among taken (which it joins) with a
// numeric suffix. The id itself stays the API's (spec.id).
func Name(id string, taken map[string]bool) string {
	name := id
	if len(utilvalidation.IsDNS1123Subdomain(id)) > 0 {
		b := []byte(strings.ToLower(id))
		for i, c := range b {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				b[i] = '-'
			}
		}
		name = strings.Trim(string(b), "-.")
		if len(name) > 240 {
			name = strings.Trim(name[:240], "-.")
		}
		if name == "" {
			name = "provider"
		}
	}
	base := name
	for n := 2; taken[name]; n++ {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	taken[name] = true
	return name
}

// convertOne builds the objects of one provider id, named name, or says
// what is wrong with its settings. A provider without a client secret is a
// public client: no Secret, a warning.
func convertOne(s *Settings, id, name string, opts Options) (*v1alpha1.TokenProvider, *corev1.Secret, []string, []error) {
	prefix := strings.ToUpper(id) + "_"
	var errs []error
	var warnings []string
	get := func(suffix string) (string, bool, error) {
		name := prefix + suffix
		v, ok := s.values[name]
		if !ok {
			return "", false, nil
		}
		if v.isList {
			if suffix == suffixScope {
				return strings.Join(v.list, " "), true, nil
			}
			return "", true, fmt.Errorf("%s (%s) must be a string, not a list", name, v.origin)
		}
		return v.str, true, nil
	}
	required := func(suffix, what string) string {
		name := prefix + suffix
		v, ok, err := get(suffix)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok && strings.TrimSpace(v) != "":
			return strings.TrimSpace(v)
		case ok:
			errs = append(errs, fmt.Errorf("%s (%s) is empty: it is the %s of provider %q", name, s.values[name].origin, what, id))
		default:
			if where, unread := s.unread[name]; unread {
				errs = append(errs, fmt.Errorf("%s (%s) could not be read: write it as %s = \"...\"", name, where, name))
			} else {
				errs = append(errs, fmt.Errorf("%s is not set: it is the %s of provider %q (listed in %s)", name, what, id, settingProviders))
			}
		}
		return ""
	}
	optional := func(suffix string) string {
		v, _, err := get(suffix)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}

	discoveryURL := required(suffixDiscoveryURL, "discovery URL")
	clientID := required(suffixClientID, "client id")
	clientSecret := ""
	if v, ok, err := get(suffixClientSecret); err != nil {
		errs = append(errs, err)
	} else if ok && strings.TrimSpace(v) != "" {
		clientSecret = strings.TrimSpace(v)
	} else if where, unread := s.unread[prefix+suffixClientSecret]; unread {
		errs = append(errs, fmt.Errorf("%s (%s) could not be read: write it as %s = \"...\"", prefix+suffixClientSecret, where, prefix+suffixClientSecret))
	} else {
		warnings = append(warnings, fmt.Sprintf("provider %q has no %s: converted as a public client (tokenEndpointAuthMethod: none); check that the provider registered it as one", id, prefix+suffixClientSecret))
	}
	scope := optional(suffixScope)
	md := v1alpha1.Metadata{
		Name:        optional(suffixMDName),
		Description: optional(suffixMDDescription),
		URL:         optional(suffixMDURL),
		Icon:        optional(suffixMDIcon),
		Logo:        optional(suffixMDLogo),
	}
	if len(errs) > 0 {
		return nil, nil, nil, errs
	}

	tp := &v1alpha1.TokenProvider{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "TokenProvider"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: opts.Namespace},
		Spec: v1alpha1.TokenProviderSpec{
			DiscoveryURL: discoveryURL,
			ClientID:     clientID,
			Metadata:     md,
		},
	}
	if scopes := strings.FieldsFunc(scope, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }); len(scopes) > 0 {
		tp.Spec.Scopes = scopes
	}
	if clientSecret == "" {
		tp.Spec.TokenEndpointAuthMethod = "none"
		return tp, nil, warnings, nil
	}
	secretName := fmt.Sprintf(opts.SecretNameFormat, name)
	tp.Spec.ClientSecretRef = &v1alpha1.SecretKeyRef{Name: secretName, Key: SecretKey}
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: opts.Namespace},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{SecretKey: clientSecret},
	}
	return tp, sec, warnings, nil
}

// unknownSettings warns about IDPn_* settings of listed providers that the
// converter does not know, since the old service may have been patched to
// read more than its README says, and silently dropping one would surprise.
func unknownSettings(s *Settings, ids []string) []string {
	var out []string
	for _, name := range s.Names() {
		for _, id := range ids {
			prefix := strings.ToUpper(id) + "_"
			suffix, ok := strings.CutPrefix(name, prefix)
			if !ok || slices.Contains(knownSuffixes, suffix) {
				continue
			}
			out = append(out, fmt.Sprintf("%s (%s) is not a setting the converter knows; ignored", name, s.values[name].origin))
		}
	}
	return out
}

// YAML renders the manifests as one multi-document YAML stream: for each
// provider its Secret (if it has one), then the TokenProvider, with spec.id
// where its name is not the Flask service's id.
func (r *Result) YAML() ([]byte, error) { return r.render(true) }

// render renders the manifests; withID adds spec.id. spec.id is written
// into the untyped object, so that this package does not depend on the
// api version that declares it; Check validates without it, since this
// binary's validator may predate it.
func (r *Result) render(withID bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# TokenProvider and Secret manifests converted from the settings of the old tokenstore")
	if r.opts.Source != "" {
		b.WriteString(" (" + r.opts.Source + ")")
	}
	b.WriteString(".\n# The Secrets hold client secrets: keep this file private.\n")
	for i := range r.Providers {
		objs := []runtime.Object{r.Providers[i]}
		if r.Secrets[i] != nil {
			objs = []runtime.Object{r.Secrets[i], r.Providers[i]}
		}
		for _, obj := range objs {
			id := ""
			if withID && obj == runtime.Object(r.Providers[i]) && r.IDs[i] != r.Providers[i].Name {
				id = r.IDs[i]
			}
			out, err := manifestYAML(obj, id)
			if err != nil {
				return nil, err
			}
			b.WriteString("---\n")
			b.Write(out)
		}
	}
	return b.Bytes(), nil
}

// manifestYAML renders one object without the empty status and
// creationTimestamp that the Go types would add; a non-empty id is set as
// spec.id.
func manifestYAML(obj runtime.Object, id string) ([]byte, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("rendering %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, err)
	}
	delete(u, "status")
	if md, ok := u["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if spec, ok := u["spec"].(map[string]any); ok {
		if md, ok := spec["metadata"].(map[string]any); ok && len(md) == 0 {
			delete(spec, "metadata")
		}
		if id != "" {
			spec["id"] = id
		}
	}
	out, err := yaml.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("rendering %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, err)
	}
	return out, nil
}

// Check validates the rendered output with the file source's validator, as
// `tokenstore providers validate` would, and names the settings behind any
// error. Convert's output should always pass; this is what makes sure.
func (r *Result) Check(ctx context.Context, v *filesource.Validator) error {
	out, err := r.render(false)
	if err != nil {
		return err
	}
	ids := map[string]string{}
	for i, tp := range r.Providers {
		ids[tp.Name] = r.IDs[i]
	}
	var errs []error
	for _, o := range filesource.Parse(ctx, v, "converted output", out, filesource.LoadOptions{}) {
		if o.Err == nil {
			continue
		}
		errs = append(errs, fmt.Errorf("%s%w", hint(o, ids[o.Name]), o.Err))
	}
	return errors.Join(errs...)
}

// hint names the old setting behind an invalid generated object, so that the
// person knows which line of their settings to fix.
func hint(o filesource.Object, id string) string {
	var me *filesource.ManifestError
	if !errors.As(o.Err, &me) || o.Kind != "TokenProvider" {
		if o.Kind == "Secret" {
			return "check --secret-name-format: "
		}
		return ""
	}
	if id == "" {
		id = o.Name
	}
	prefix := strings.ToUpper(id) + "_"
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, fe := range me.Errs {
		switch {
		case strings.HasPrefix(fe.Field, "spec.discoveryURL"):
			add(prefix + suffixDiscoveryURL)
		case strings.HasPrefix(fe.Field, "spec.clientID"):
			add(prefix + suffixClientID)
		case strings.HasPrefix(fe.Field, "spec.scopes"):
			add(prefix + suffixScope)
		case strings.HasPrefix(fe.Field, "spec.metadata."):
			add(prefix + "MD_" + strings.ToUpper(strings.TrimPrefix(fe.Field, "spec.metadata.")))
		case strings.HasPrefix(fe.Field, "spec.clientSecretRef"):
			add("--secret-name-format")
		case strings.HasPrefix(fe.Field, "metadata.name"):
			add(settingProviders)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "check " + strings.Join(names, ", ") + ": "
}
