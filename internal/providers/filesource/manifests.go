package filesource

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
)

const (
	kindTokenProvider = "TokenProvider"
	kindSecret        = "Secret"
	kindList          = "List"

	// DefaultNamespace is the namespace of objects that name none, as
	// kubectl's default context would give them. It only pairs a
	// TokenProvider with its Secret; provider ids are names alone.
	DefaultNamespace = "default"

	// maxSecretSize is the apiserver's limit on a Secret's data.
	maxSecretSize = 1 << 20
	// maxFileSize bounds what is read from one file: a manifest file of
	// providers is a few kilobytes; anything near this is a wrong path.
	maxFileSize = 16 << 20
)

// manifestExtensions are the file names read from a folder; other files
// (READMEs, editors' backups and swap files) are skipped.
var manifestExtensions = []string{".yaml", ".yml", ".json"}

// Location says where a manifest was found, for messages a person can act on.
type Location struct {
	// File is the path as given (a folder's files are joined to it).
	File string
	// Document is the 1-based index of the YAML document in File; 0 when
	// the whole file is meant (it could not be read).
	Document int
	// Item is the 1-based index inside a List document; 0 otherwise.
	Item int
	// Line is the 1-based line where the document starts; 0 if unknown.
	Line int
}

// String renders the location as "file: document 2 (line 14)".
func (l Location) String() string {
	if l.Document == 0 {
		return l.File
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: document %d", l.File, l.Document)
	if l.Item > 0 {
		fmt.Fprintf(&b, ", item %d", l.Item)
	}
	if l.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", l.Line)
	}
	return b.String()
}

// Object is one manifest read from a file, valid or not.
type Object struct {
	Location
	// Kind is what the document says (TokenProvider, Secret, or anything
	// else, which is an error).
	Kind string
	// Namespace (DefaultNamespace, or the load's namespace, when the
	// manifest names none) and Name; Name may be empty in a broken document.
	Namespace string
	Name      string
	// ID is a TokenProvider's provider id: spec.id when the document gives
	// one as a string, else Name. It is read also from a document that
	// fails validation, so that a broken manifest still holds its id.
	ID string
	// Provider is the validated TokenProvider with defaults applied; nil
	// unless Kind is TokenProvider and Err is nil.
	Provider *v1alpha1.TokenProvider
	// Secret is the validated Secret, stringData merged into data; nil
	// unless Kind is Secret and Err is nil.
	Secret *corev1.Secret
	// Err is a *ManifestError when the object is invalid.
	Err error
}

// ManifestError is an invalid manifest. Its message reads like kubectl's:
//
//	providers.yaml: document 2 (line 14): TokenProvider "github": spec: Invalid value: "object": set discoveryURL or ...
type ManifestError struct {
	Location
	Kind string
	Name string
	// Errs are the field errors, when the object could be decoded.
	Errs field.ErrorList
	// Err is a decoding or reading error otherwise.
	Err error
}

func (e *ManifestError) Error() string {
	var b strings.Builder
	b.WriteString(e.Location.String())
	if e.Kind != "" {
		b.WriteString(": ")
		b.WriteString(e.Kind)
		if e.Name != "" {
			fmt.Fprintf(&b, " %q", e.Name)
		}
	}
	b.WriteString(": ")
	switch {
	case len(e.Errs) == 1:
		b.WriteString(e.Errs[0].Error())
	case len(e.Errs) > 1:
		// The apiserver's aggregate form: [err1, err2].
		b.WriteString(e.Errs.ToAggregate().Error())
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("invalid")
	}
	return b.String()
}

func (e *ManifestError) Unwrap() error { return e.Err }

// Manifests is everything read from one file or folder.
type Manifests struct {
	// Objects in file order (files sorted by name), including invalid ones.
	Objects []Object
}

// Errors returns the errors of the invalid objects, in order.
func (m *Manifests) Errors() []error {
	var errs []error
	for _, o := range m.Objects {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	return errs
}

// Secret returns the valid Secret namespace/name, if the manifests hold it.
// When a Secret appears twice, the later document wins, as with
// `kubectl apply` of the same files.
func (m *Manifests) Secret(namespace, name string) (*corev1.Secret, bool) {
	for i := len(m.Objects) - 1; i >= 0; i-- {
		o := m.Objects[i]
		if o.Secret != nil && o.Namespace == namespace && o.Name == name {
			return o.Secret, true
		}
	}
	return nil, false
}

// LoadOptions tune how manifests are read.
type LoadOptions struct {
	// Namespace given to objects that name none; DefaultNamespace if empty.
	Namespace string
}

// Load reads a manifest file, or every *.yaml, *.yml and *.json file directly
// in a folder (not below it, so that a folder such as a mounted ConfigMap with
// its hidden ..data links is read once), and validates each object. The
// error is for a path that cannot be read at all; problems with single files
// or documents are in the returned objects, so that one bad document does not
// hide the good ones.
func Load(ctx context.Context, v *Validator, path string, opts LoadOptions) (*Manifests, error) {
	if v == nil {
		return nil, errNoValidator
	}
	files, err := manifestFiles(path)
	if err != nil {
		return nil, err
	}
	m := &Manifests{}
	for _, f := range files {
		data, err := readFile(f)
		if err != nil {
			m.Objects = append(m.Objects, Object{Location: Location{File: f}, Err: &ManifestError{Location: Location{File: f}, Err: err}})
			continue
		}
		m.Objects = append(m.Objects, Parse(ctx, v, f, data, opts)...)
	}
	return m, nil
}

// manifestFiles lists the files Load reads for path, sorted.
func manifestFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading providers from %s: %w", path, err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("reading providers folder %s: %w", path, err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !slices.Contains(manifestExtensions, strings.ToLower(filepath.Ext(name))) {
			continue
		}
		full := filepath.Join(path, name)
		// Follow symlinks (ConfigMap mounts are links), skip folders.
		if st, err := os.Stat(full); err != nil || st.IsDir() {
			continue
		}
		files = append(files, full)
	}
	slices.Sort(files)
	return files, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes; is it really a manifest file?", name, maxFileSize)
	}
	return data, nil
}

// Parse reads the documents of one manifest file's content. file is used in
// locations only.
func Parse(ctx context.Context, v *Validator, file string, data []byte, opts LoadOptions) []Object {
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	var out []Object
	for _, d := range splitDocuments(data) {
		loc := Location{File: file, Document: d.index, Line: d.line}
		out = append(out, parseDocument(ctx, v, loc, d.data, ns)...)
	}
	return out
}

type document struct {
	index int // 1-based, counting empty documents too, as an editor shows them
	line  int // 1-based first line of the document's content
	data  []byte
}

// splitDocuments cuts a YAML stream at "---" lines, as kubectl does, keeping
// the line each document starts at. Documents holding only comments or blank
// lines are dropped but still counted, so indexes match what a person sees.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	index, start, lineNo := 1, 1, 0
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, document{index: index, line: start, data: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxFileSize)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if isSeparator(line) {
			// A separator before any content opens the first document
			// rather than ending an empty one.
			if len(docs) == 0 && index == 1 && !hasContent(cur.Bytes()) {
				cur.Reset()
			} else {
				flush()
				index++
			}
			start = lineNo + 1
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func isSeparator(line string) bool {
	if !strings.HasPrefix(line, "---") {
		return false
	}
	rest := strings.TrimSpace(line[3:])
	return rest == "" || strings.HasPrefix(rest, "#")
}

func hasContent(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// parseDocument decodes one YAML document into objects (several for a List).
func parseDocument(ctx context.Context, v *Validator, loc Location, data []byte, ns string) []Object {
	fail := func(kind, name string, err error) []Object {
		return []Object{{Location: loc, Kind: kind, Name: name, Namespace: ns, Err: &ManifestError{Location: loc, Kind: kind, Name: name, Err: err}}}
	}
	// Strict: a key given twice is refused, as kubectl's strict validation
	// does, instead of the later one silently winning.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fail("", "", fmt.Errorf("not valid YAML: %w", err))
	}
	var raw any
	// utiljson decodes numbers as int64 or float64, the types the
	// apiserver's schema code expects.
	if err := utiljson.Unmarshal(js, &raw); err != nil {
		return fail("", "", fmt.Errorf("decoding: %w", err))
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return fail("", "", fmt.Errorf("a manifest must be an object with apiVersion and kind, not %s", describe(raw)))
	}
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	name, objNS := names(obj)
	if objNS != "" {
		ns = objNS
	}
	switch {
	case kind == kindList && apiVersion == "v1":
		return parseList(ctx, v, loc, obj, ns)
	case kind == kindTokenProvider && apiVersion == v1alpha1.GroupVersion.String():
		o := Object{Location: loc, Kind: kind, Namespace: ns, Name: name, ID: specID(obj, name)}
		tp, errs := v.ValidateTokenProvider(ctx, obj, ns)
		if len(errs) == 0 && tp.Name == "" {
			errs = field.ErrorList{needName()}
		}
		if len(errs) > 0 {
			o.Err = &ManifestError{Location: loc, Kind: kind, Name: name, Errs: errs}
		} else {
			o.Provider = tp
		}
		return []Object{o}
	case kind == kindSecret && apiVersion == "v1":
		o := Object{Location: loc, Kind: kind, Namespace: ns, Name: name}
		s, errs := decodeSecret(js, ns)
		if len(errs) == 0 && s.Name == "" {
			errs = field.ErrorList{needName()}
		}
		if len(errs) > 0 {
			o.Err = &ManifestError{Location: loc, Kind: kind, Name: name, Errs: errs}
		} else {
			o.Secret = s
		}
		return []Object{o}
	case kind == kindTokenProvider || kind == kindSecret:
		want := "v1"
		if kind == kindTokenProvider {
			want = v1alpha1.GroupVersion.String()
		}
		return fail(kind, name, field.ErrorList{field.Invalid(field.NewPath("apiVersion"), apiVersion, "must be "+want)}.ToAggregate())
	case kind == "":
		return fail("", name, errors.New("the document has no kind; expected TokenProvider ("+v1alpha1.GroupVersion.String()+") or Secret (v1)"))
	default:
		return fail(kind, name, fmt.Errorf("%s %s is not read here; a providers file holds TokenProvider (%s) and Secret (v1) manifests", apiVersion, kind, v1alpha1.GroupVersion))
	}
}

// needName refuses generateName alone: nothing generates names here, and a
// TokenProvider's name is its provider id.
func needName() *field.Error {
	return field.Required(field.NewPath("metadata", "name"), "a manifest in a providers file needs a name (generateName is not used here)")
}

// parseList expands `kind: List` (what `kubectl get -o yaml` writes).
func parseList(ctx context.Context, v *Validator, loc Location, obj map[string]any, ns string) []Object {
	items, ok := obj["items"].([]any)
	if !ok && obj["items"] != nil {
		return []Object{{Location: loc, Kind: kindList, Err: &ManifestError{Location: loc, Kind: kindList, Errs: field.ErrorList{field.Invalid(field.NewPath("items"), describe(obj["items"]), "must be a list")}}}}
	}
	var out []Object
	for i, it := range items {
		iloc := loc
		iloc.Item = i + 1
		js, err := utiljson.Marshal(it)
		if err != nil {
			out = append(out, Object{Location: iloc, Err: &ManifestError{Location: iloc, Err: err}})
			continue
		}
		out = append(out, parseDocument(ctx, v, iloc, js, ns)...)
	}
	return out
}

// names reads metadata.name and metadata.namespace, tolerating any shape:
// they are only used to label messages until validation has run.
// specID is the provider id a TokenProvider document claims: spec.id if it
// is a non-empty string, else name.
func specID(obj map[string]any, name string) string {
	spec, _ := obj["spec"].(map[string]any)
	if id, _ := spec["id"].(string); id != "" {
		return id
	}
	return name
}

func names(obj map[string]any) (name, namespace string) {
	m, _ := obj["metadata"].(map[string]any)
	name, _ = m["name"].(string)
	namespace, _ = m["namespace"].(string)
	return name, namespace
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

// decodeSecret reads a v1 Secret strictly and checks what the apiserver
// would refuse and what matters here: the name, the data keys and size.
// stringData is merged into data (stringData wins), as the apiserver does on
// write. Error values never include secret data.
func decodeSecret(js []byte, ns string) (*corev1.Secret, field.ErrorList) {
	var s corev1.Secret
	strict, err := sigsjson.UnmarshalStrict(js, &s)
	if err != nil {
		// The decoder's message may quote the offending value, which could
		// be secret data (a bad base64 string): keep only what is safe.
		return nil, field.ErrorList{field.Invalid(field.NewPath("data"), "", "cannot be decoded; values in data must be base64 (use stringData for plain text)")}
	}
	var errs field.ErrorList
	for _, e := range strict {
		errs = append(errs, &field.Error{Type: field.ErrorTypeForbidden, Field: strictField(e), Detail: "unknown field"})
	}
	if s.Namespace == "" {
		s.Namespace = ns
	}
	errs = append(errs, apimachineryvalidation.ValidateObjectMeta(&s.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	if s.Data == nil && len(s.StringData) > 0 {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
	size := 0
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, msg := range utilvalidation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(field.NewPath("data").Key(k), k, msg))
		}
		size += len(s.Data[k])
	}
	if size > maxSecretSize {
		errs = append(errs, field.TooLong(field.NewPath("data"), "", maxSecretSize))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &s, nil
}

// strictField turns a strict-decoding error (`unknown field "spec.x"`) into
// the field path it names.
func strictField(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, `"`); i >= 0 {
		if j := strings.LastIndex(msg, `"`); j > i {
			return msg[i+1 : j]
		}
	}
	return msg
}
