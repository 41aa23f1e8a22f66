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
	"slices"
	"sort"
	"strings"

	"github.com/tokenstore/tokenstore/internal/settings"
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

// ReadSettingsFile reads a settings file as serve reads it
// (settings.ReadFile: YAML, or the Flask service's Python settings file,
// its literal subset, never run). Lines it cannot read come back as
// Unreadable, for the caller to judge: a provider setting among them must
// stop a conversion (read as missing, a client secret would make the
// provider a public client).
func ReadSettingsFile(path string) (*Settings, []settings.Unreadable, error) {
	values, unread, err := settings.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	s := NewSettings()
	for _, v := range values {
		origin := path
		if v.Line > 0 {
			origin = fmt.Sprintf("%s:%d", path, v.Line)
		}
		if v.IsList {
			s.SetList(v.Name, v.List, origin)
		} else {
			s.Set(v.Name, v.Str, origin)
		}
	}
	for _, u := range unread {
		// Noted for the caller's warnings; a provider setting among them
		// fails Convert unless a later source (the environment) sets it.
		s.problem(u.Name, "%s", u.Msg)
		if u.Name != "" {
			// Msg starts with the place: "file:line: ...".
			where, _, _ := strings.Cut(u.Msg, ": ")
			s.unread[u.Name] = where
		}
	}
	return s, unread, nil
}
