// Package flaskconvert turns the token provider settings of the original Flask
// tokenstore (TOKEN_PROVIDERS and the IDPn_* settings) into TokenProvider and
// Secret manifests, for `tokenstore providers convert`.
//
// The old service read its settings from a Python file named by
// TOKENSTORE_SETTINGS and from TOKENSTORE_-prefixed environment variables
// (the environment winning). This package reads the same sources: the
// environment with and without the prefix, a Python settings file of simple
// NAME = "value" lines, or a YAML file of the same names. It never evaluates
// Python: lines it cannot read are reported, by line number and setting name
// only, since a value may be a client secret.
package flaskconvert

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// EnvPrefix is the prefix the old service (and the new one) read settings
// from the environment with.
const EnvPrefix = "TOKENSTORE_"

// Settings is a set of named setting values, each remembering where it came
// from so that messages can point at it.
type Settings struct {
	values map[string]value
	// unread are names whose line could not be read, by name, so that a
	// missing required setting can be explained.
	unread map[string]string
	// problems are lines or values that could not be read.
	problems []problem
}

// problem is an unreadable line; name is the setting it assigned, if known,
// so that a later source setting that name can retire the warning.
type problem struct {
	name, msg string
}

// Problems lists the lines or values that could not be read and that no
// later source made up for. They name lines and settings, never values.
func (s *Settings) Problems() []string {
	out := make([]string, 0, len(s.problems))
	for _, p := range s.problems {
		if _, set := s.values[p.name]; p.name != "" && set {
			continue
		}
		out = append(out, p.msg)
	}
	return out
}

func (s *Settings) problem(name, format string, args ...any) {
	s.problems = append(s.problems, problem{name: name, msg: fmt.Sprintf(format, args...)})
}

type value struct {
	// str is the value of a string setting; list is set instead for a list
	// of strings (a Python or YAML list, or a JSON list in the environment).
	str    string
	list   []string
	isList bool
	origin string
}

// NewSettings returns an empty set of settings.
func NewSettings() *Settings {
	return &Settings{values: map[string]value{}, unread: map[string]string{}}
}

// Set sets a string setting; origin says where it came from (for messages).
func (s *Settings) Set(name, v, origin string) {
	s.values[name] = value{str: v, origin: origin}
	delete(s.unread, name)
}

// SetList sets a list setting.
func (s *Settings) SetList(name string, v []string, origin string) {
	s.values[name] = value{list: slices.Clone(v), isList: true, origin: origin}
	delete(s.unread, name)
}

// Names returns the names of all settings, sorted.
func (s *Settings) Names() []string {
	names := make([]string, 0, len(s.values))
	for n := range s.values {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Origin says where a setting came from, e.g. "settings.py:12" or
// "environment variable TOKENSTORE_IDP1_CLIENT_ID"; "" if unset.
func (s *Settings) Origin(name string) string { return s.values[name].origin }

// Merge lays over on top of s: settings in over win, as the old service let
// the environment win over its settings file.
func (s *Settings) Merge(over *Settings) {
	for n, v := range over.values {
		s.values[n] = v
		delete(s.unread, n)
	}
	for n, o := range over.unread {
		if _, ok := s.values[n]; !ok {
			s.unread[n] = o
		}
	}
	s.problems = append(s.problems, over.problems...)
}

// FromEnviron reads settings from environment entries (os.Environ's form).
// NAME and TOKENSTORE_NAME are both read; the prefixed form wins, since it is
// the one the old service read. Unprefixed names are kept only when shaped
// like the converter's settings, so that unrelated variables (PATH,
// GITHUB_TOKEN) never reach a message. A value that
// is a JSON list (the old service's Flask accepted JSON in the environment)
// is read as a list.
func FromEnviron(environ []string) *Settings {
	s := NewSettings()
	plain := map[string]string{}
	prefixed := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if name, ok := strings.CutPrefix(k, EnvPrefix); ok {
			prefixed[name] = v
		} else {
			plain[k] = v
		}
	}
	set := func(src map[string]string, prefix string) {
		for name, v := range src {
			// Unprefixed variables are kept only if they are shaped like a
			// provider setting, so that GITHUB_TOKEN and friends never show
			// up in warnings; prefixed ones were meant for tokenstore, and
			// an unknown one is worth a warning.
			if prefix == "" && !relevant(name) {
				continue
			}
			origin := "environment variable " + prefix + name
			if list, ok := jsonList(v); ok {
				s.SetList(name, list, origin)
			} else {
				s.Set(name, v, origin)
			}
		}
	}
	set(plain, "")
	set(prefixed, EnvPrefix)
	return s
}

// relevant reports whether a setting name can matter to the converter:
// TOKEN_PROVIDERS and anything shaped like IDPn_SUFFIX for a known suffix.
func relevant(name string) bool {
	if name == settingProviders {
		return true
	}
	for _, suf := range knownSuffixes {
		if strings.HasSuffix(name, "_"+suf) && len(name) > len(suf)+1 {
			return true
		}
	}
	return false
}

func jsonList(v string) ([]string, bool) {
	t := strings.TrimSpace(v)
	if !strings.HasPrefix(t, "[") {
		return nil, false
	}
	var list []string
	if err := json.Unmarshal([]byte(t), &list); err != nil {
		return nil, false
	}
	return list, true
}

// ReadSettingsFile reads a settings file: YAML (a mapping of setting names)
// or the old service's Python settings file. The format is told by content,
// not by name, since the old file "does not need to end in .py": a YAML
// mapping is YAML, anything else is read as Python.
func ReadSettingsFile(path string) (*Settings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading settings file: %w", err)
	}
	name := filepath.Base(path)
	if s, ok := parseYAMLSettings(name, data); ok {
		return s, nil
	}
	return ParsePythonSettings(name, data), nil
}

// parseYAMLSettings reads a YAML mapping of setting names. ok is false when
// data is not a YAML mapping (a Python file is usually not even valid YAML).
func parseYAMLSettings(name string, data []byte) (*Settings, bool) {
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil || len(m) == 0 {
		return nil, false
	}
	s := NewSettings()
	for k, v := range m {
		origin := fmt.Sprintf("%s: %s", name, k)
		switch x := v.(type) {
		case string:
			s.Set(k, x, origin)
		case bool, float64, int64, int:
			s.Set(k, fmt.Sprint(x), origin)
		case []any:
			list := make([]string, 0, len(x))
			ok := true
			for _, it := range x {
				str, isStr := it.(string)
				if !isStr {
					ok = false
					break
				}
				list = append(list, str)
			}
			if !ok {
				s.unread[k] = origin
				s.problem(k, "%s: only a list of strings can be read; ignored", origin)
				continue
			}
			s.SetList(k, list, origin)
		case nil:
			// An empty value is the same as not setting it.
		default:
			s.unread[k] = origin
			s.problem(k, "%s: only strings and lists of strings can be read; ignored", origin)
		}
	}
	return s, true
}

var assignment = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$`)

// ParsePythonSettings reads the simple assignments of a Python settings file:
// NAME = "value" (single, double or triple quotes on one line, r/u prefixes,
// adjacent literals concatenated) and NAME = ["a", "b"] on one line. Only
// upper-case names are settings (Flask ignores the others, and so does
// this). Every other statement is listed in Problems by line, without its
// value. name labels messages.
func ParsePythonSettings(name string, data []byte) *Settings {
	s := NewSettings()
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		lineNo := i + 1
		trimmed := strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		// Indented lines and lone closing brackets belong to a statement
		// begun above (already reported if it mattered).
		if line[0] == ' ' || line[0] == '\t' || strings.Trim(trimmed, ")]},") == "" {
			continue
		}
		loc := fmt.Sprintf("%s:%d", name, lineNo)
		m := assignment.FindStringSubmatch(trimmed)
		if m == nil {
			s.problem("", "%s: not a NAME = \"string\" assignment; ignored", loc)
			continue
		}
		key, rhs := m[1], m[2]
		if strings.ToUpper(key) != key {
			continue
		}
		if v, rest, err := pyStrings(rhs); err == nil && pyTail(rest) {
			s.Set(key, v, loc)
			continue
		}
		if list, ok := pyList(rhs); ok {
			s.SetList(key, list, loc)
			continue
		}
		s.unread[key] = loc
		s.problem(key, "%s: %s is not a plain string (or a one-line list of strings); ignored", loc, key)
	}
	return s
}

// pyTail reports whether what follows a literal is only a comment.
func pyTail(rest string) bool {
	rest = strings.TrimSpace(rest)
	return rest == "" || strings.HasPrefix(rest, "#")
}

// pyStrings reads one or more adjacent string literals at the start of src
// and returns their concatenation and what follows.
func pyStrings(src string) (string, string, error) {
	var b strings.Builder
	rest := strings.TrimSpace(src)
	n := 0
	for {
		v, r, err := pyString(rest)
		if err != nil {
			if n > 0 {
				return b.String(), rest, nil
			}
			return "", src, err
		}
		b.WriteString(v)
		n++
		rest = strings.TrimSpace(r)
	}
}

// pyString reads one Python string literal at the start of src.
func pyString(src string) (string, string, error) {
	raw := false
	i := 0
	for i < len(src) && i < 2 && strings.ContainsRune("rRuU", rune(src[i])) {
		if src[i] == 'r' || src[i] == 'R' {
			raw = true
		}
		i++
	}
	if i >= len(src) || (src[i] != '"' && src[i] != '\'') {
		return "", src, fmt.Errorf("not a string literal")
	}
	quote := string(src[i])
	if strings.HasPrefix(src[i:], quote+quote+quote) {
		quote = quote + quote + quote
	}
	body := src[i+len(quote):]
	var b strings.Builder
	for j := 0; j < len(body); j++ {
		if strings.HasPrefix(body[j:], quote) {
			return b.String(), body[j+len(quote):], nil
		}
		c := body[j]
		if c != '\\' || raw {
			if raw && c == '\\' && j+1 < len(body) {
				// In a raw string a backslash still keeps the quote from
				// ending the literal, and both characters stay.
				b.WriteByte(c)
				b.WriteByte(body[j+1])
				j++
				continue
			}
			b.WriteByte(c)
			continue
		}
		if j+1 >= len(body) {
			break
		}
		j++
		switch e := body[j]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\', '\'', '"':
			b.WriteByte(e)
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return "", src, fmt.Errorf("unterminated string literal")
}

// pyList reads a one-line list or tuple of string literals.
func pyList(src string) ([]string, bool) {
	t := strings.TrimSpace(src)
	if t == "" || (t[0] != '[' && t[0] != '(') {
		return nil, false
	}
	closer := map[byte]byte{'[': ']', '(': ')'}[t[0]]
	rest := strings.TrimSpace(t[1:])
	var out []string
	for {
		if rest != "" && rest[0] == closer {
			return out, pyTail(rest[1:])
		}
		v, r, err := pyStrings(rest)
		if err != nil {
			return nil, false
		}
		out = append(out, v)
		rest = strings.TrimSpace(r)
		if strings.HasPrefix(rest, ",") {
			rest = strings.TrimSpace(rest[1:])
		} else if rest == "" || rest[0] != closer {
			return nil, false
		}
	}
}
