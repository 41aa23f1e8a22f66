package settings

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/internal/settings/pyfile"
)

// ignoredExact are settings the Flask service's stack read (Flask itself,
// Flask-Session, Flask-SQLAlchemy, Flask-Caching, Flask-Cors, flask_tern)
// that tokenstore has no use for, each with why. A settings file or
// environment carried over from the Flask service holds them; each is
// accepted with one warning rather than stopping the start.
var ignoredExact = map[string]string{
	"SECRET_KEY":                    "Flask signed its session cookie with it; tokenstore keeps sessions in the database behind an opaque random cookie",
	"SECRET_KEY_FALLBACKS":          "Flask's older cookie-signing keys; tokenstore signs no cookies",
	"DEBUG":                         "Flask's debug mode; use LOG_LEVEL=debug",
	"TESTING":                       "a Flask test switch",
	"ENV":                           "Flask's environment name",
	"FLASK_ENV":                     "Flask's environment name",
	"FLASK_APP":                     "Flask's application module",
	"PROPAGATE_EXCEPTIONS":          "Flask error handling",
	"PRESERVE_CONTEXT_ON_EXCEPTION": "Flask error handling",
	"TRAP_HTTP_EXCEPTIONS":          "Flask error handling",
	"TRAP_BAD_REQUEST_ERRORS":       "Flask error handling",
	"EXPLAIN_TEMPLATE_LOADING":      "Flask templates",
	"TEMPLATES_AUTO_RELOAD":         "Flask templates",
	"SERVER_NAME":                   "Flask's host name; tokenstore builds URLs from EXTERNAL_URL",
	"APPLICATION_ROOT":              "Flask's path prefix; tokenstore builds URLs from EXTERNAL_URL",
	"PREFERRED_URL_SCHEME":          "Flask's URL scheme; tokenstore builds URLs from EXTERNAL_URL",
	"USE_X_SENDFILE":                "Flask file serving",
	"SEND_FILE_MAX_AGE_DEFAULT":     "Flask file serving",
	"MAX_CONTENT_LENGTH":            "Flask's request size limit; tokenstore sets its own",
	"MAX_COOKIE_SIZE":               "Flask cookie size warning",
	"JSON_AS_ASCII":                 "Flask JSON rendering",
	"JSON_SORT_KEYS":                "Flask JSON rendering",
	"JSONIFY_PRETTYPRINT_REGULAR":   "Flask JSON rendering",
	"JSONIFY_MIMETYPE":              "Flask JSON rendering",
	"VERSION":                       "the Flask service set it itself",
	"SESSION_COOKIE_DOMAIN":         "the session cookie is host-only (EXTERNAL_URL's host)",
	"SESSION_COOKIE_PATH":           "the session cookie's path is fixed",
	"SESSION_COOKIE_HTTPONLY":       "the session cookie is always HttpOnly",
	"SESSION_REFRESH_EACH_REQUEST":  "sessions end after SESSION_IDLE_TIMEOUT unused or PERMANENT_SESSION_LIFETIME",
	"SESSION_PERMANENT":             "sessions last PERMANENT_SESSION_LIFETIME",
	"SESSION_USE_SIGNER":            "Flask-Session cookie signing; the cookie is an opaque random id",
	"SESSION_KEY_PREFIX":            "Flask-Session storage; sessions are kept in the database",
	"SESSION_REDIS":                 "Flask-Session storage; sessions are kept in the database",
	"SESSION_MEMCACHED":             "Flask-Session storage; sessions are kept in the database",
	"SESSION_FILE_THRESHOLD":        "Flask-Session storage; sessions are kept in the database",
	"SESSION_FILE_MODE":             "Flask-Session storage; sessions are kept in the database",
	"SESSION_SQLALCHEMY":            "Flask-Session storage; sessions are kept in the database",
	"SESSION_SQLALCHEMY_TABLE":      "Flask-Session storage; sessions are kept in the database",
	"SESSION_ID_LENGTH":             "Flask-Session storage; sessions are kept in the database",
	"SESSION_SERIALIZATION_FORMAT":  "Flask-Session storage; sessions are kept in the database",
	"CORS_EXPOSE_HEADERS":           "Flask-Cors option tokenstore does not offer (CORS_ORIGINS, CORS_ALLOW_HEADERS, CORS_MAX_AGE and CORS_SUPPORTS_CREDENTIALS are read)",
	"CORS_METHODS":                  "Flask-Cors option; tokenstore allows the methods its API has",
	"CORS_RESOURCES":                "Flask-Cors option; CORS applies to the API",
	"CORS_SEND_WILDCARD":            "Flask-Cors option tokenstore does not offer",
	"CORS_AUTOMATIC_OPTIONS":        "Flask-Cors option; preflights are always answered",
	"CORS_VARY_HEADER":              "Flask-Cors option; Vary: Origin is always sent",
	"CORS_ALWAYS_SEND":              "Flask-Cors option tokenstore does not offer",
	"CORS_INTERCEPT_EXCEPTIONS":     "Flask-Cors option",
	"USERINFO_MAP":                  "flask_tern's user lookup functions (a development aid); tokenstore authenticates with OIDC only",
	"OIDC_USE_REFRESH_TOKEN":        "flask_tern's login option; tokenstore keeps the login session itself",
	"OIDC_SERVER_METADATA_URL":      "flask_tern's copy of OIDC_DISCOVERY_URL; OIDC_DISCOVERY_URL is read",
	"OIDC_CLIENT_KWARGS":            "flask_tern's Authlib options; use OIDC_SCOPE for scopes",
}

// ignoredPrefixes are families of such settings.
var ignoredPrefixes = map[string]string{
	"SQLALCHEMY_":     "a Flask-SQLAlchemy option; tokenstore manages its own connection pool (only SQLALCHEMY_DATABASE_URI is read)",
	"CACHE_":          "a Flask-Caching option; tokenstore keeps its own caches",
	"SESSION_MONGODB": "Flask-Session storage; sessions are kept in the database",
}

// ignoredSetting says why name is accepted and ignored, if it is.
func ignoredSetting(name string) (string, bool) {
	if why, ok := ignoredExact[name]; ok {
		return why, true
	}
	for p, why := range ignoredPrefixes {
		if strings.HasPrefix(name, p) {
			if _, real := lookup(name); !real {
				return why, true
			}
		}
	}
	return "", false
}

// ignoredWarning is the one warning logged for an ignored setting.
func ignoredWarning(name, source, why string) string {
	return fmt.Sprintf("%s (%s) is ignored: %s", name, source, why)
}

// DatabaseURL turns a database URL into the form storeopen opens. With
// sqlalchemy set (SQLALCHEMY_DATABASE_URI, or `import --from`), and for any
// URL that names a driver (postgresql+psycopg2://, sqlite+pysqlite://),
// it is read as SQLAlchemy reads it: sqlite:///relative.db is relative to
// the working directory, sqlite:////abs/path.db absolute, sqlite:// (no
// path) and sqlite:///:memory: in memory; the +driver is dropped. Otherwise
// it is tokenstore's DATABASE_URL, returned as given. serve, migrate and
// import all read database URLs through this function. Errors never quote
// the URL (it may hold a password).
func DatabaseURL(raw string, sqlalchemy bool) (string, error) {
	u := strings.TrimSpace(raw)
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok {
		return u, nil // storeopen reports the missing scheme
	}
	base, driver, hasDriver := strings.Cut(strings.ToLower(scheme), "+")
	if !sqlalchemy && !hasDriver {
		return u, nil
	}
	sqlalchemy = true
	switch base {
	case "postgres", "postgresql":
		switch driver {
		case "", "psycopg2", "psycopg", "psycopg2cffi", "pg8000", "asyncpg", "pygresql":
		default:
			return "", fmt.Errorf("a PostgreSQL URL with driver %q: tokenstore speaks PostgreSQL itself; drop +%s", driver, driver)
		}
		if !strings.HasPrefix(rest, "//") {
			return "", errors.New("a PostgreSQL URL starts with postgresql://")
		}
		return "postgresql:" + rest, nil
	case "sqlite", "sqlite3":
		switch driver {
		case "", "pysqlite", "pysqlcipher", "aiosqlite":
		default:
			return "", fmt.Errorf("a SQLite URL with driver %q: drop +%s", driver, driver)
		}
		path, ok := strings.CutPrefix(rest, "//")
		if !ok {
			return "", errors.New("a SQLAlchemy SQLite URL is sqlite:///relative/path, sqlite:////absolute/path or sqlite://")
		}
		// SQLAlchemy: sqlite://<host>/<path>; the host is always empty.
		if path != "" && path[0] != '/' {
			return "", errors.New("a SQLAlchemy SQLite URL has no host: sqlite:///relative/path or sqlite:////absolute/path")
		}
		path = strings.TrimPrefix(path, "/")
		// Query options (?check_same_thread=false, ?mode=ro) tune
		// pysqlite; tokenstore sets its own connection options.
		if i := strings.IndexAny(path, "?#"); i >= 0 {
			path = path[:i]
		}
		if path == "" || path == ":memory:" {
			return "sqlite::memory:", nil
		}
		if unescaped, err := url.PathUnescape(path); err == nil {
			path = unescaped
		}
		// An absolute path becomes sqlite:///abs, a relative one storeopen's
		// sqlite://relative/path, opened from the working directory as
		// SQLAlchemy opens it.
		return "sqlite://" + filepath.Clean(path), nil
	}
	return u, nil // storeopen reports the unsupported scheme
}

func databaseURL(sqlalchemy bool) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		u, err := DatabaseURL(v, sqlalchemy)
		if err != nil {
			return err
		}
		s.DatabaseURL = u
		return nil
	}
}

// FileSetting is one setting read from a settings file.
type FileSetting struct {
	Name string
	// Line is where it was set in a Python file (0 for YAML).
	Line int
	// Str is the value as a setting takes it: a list or tuple is joined
	// with commas, True/False are true/false, None is empty.
	Str string
	// List holds the items of a list or tuple (IsList set).
	List   []string
	IsList bool
	// NotScalar: a dict, or a list holding one, which no tokenstore setting
	// takes (an ignored setting may be one).
	NotScalar bool
}

// Unreadable is a line of a Python settings file that cannot be read
// without running it. Name is the setting it assigned, if any; Msg names
// the file and line, never the value.
type Unreadable struct {
	Name, Msg string
}

// ReadFile reads a settings file. Its format is told by the name: .yaml,
// .yml and .json files are YAML (JSON is YAML); .py and .cfg files are the
// Flask service's Python; any other name is YAML if it parses as a YAML
// mapping and Python otherwise (the Flask service's file "does not need to
// end in .py"). The Python file is never run: its literal assignments are
// read (package pyfile), and every other statement is returned as
// Unreadable. Only upper-case names are settings, as in Flask. Load and
// `providers convert` read settings files with it.
func ReadFile(path string) ([]FileSetting, []Unreadable, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("settings file (%s): %w", SettingsEnv, err)
	}
	ext := strings.ToLower(filepath.Ext(path))
	switch ext {
	case ".yaml", ".yml", ".json":
		return readYAML(path, raw)
	case ".py", ".cfg":
		return readPython(path, raw)
	}
	var probe map[string]any
	if yaml.Unmarshal(raw, &probe) == nil && probe != nil {
		return readYAML(path, raw)
	}
	return readPython(path, raw)
}

func readYAML(path string, raw []byte) ([]FileSetting, []Unreadable, error) {
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("settings file %s: not a YAML mapping of SETTING: value: %w", path, err)
	}
	out := make([]FileSetting, 0, len(m))
	for k, v := range m {
		fs := FileSetting{Name: strings.ToUpper(k)}
		switch t := v.(type) {
		case nil:
		case string:
			fs.Str = t
		case bool:
			fs.Str = strconv.FormatBool(t)
		case float64:
			fs.Str = strconv.FormatFloat(t, 'f', -1, 64)
		case []any:
			fs.IsList = true
			for _, e := range t {
				switch e.(type) {
				case map[string]any, []any:
					fs.NotScalar = true
				}
				fs.List = append(fs.List, fmt.Sprint(e))
			}
			fs.Str = strings.Join(fs.List, ",")
		default:
			fs.NotScalar = true
		}
		out = append(out, fs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil, nil
}

// readPython reads the Flask service's Python settings file.
func readPython(path string, raw []byte) ([]FileSetting, []Unreadable, error) {
	as, err := pyfile.Parse(filepath.Base(path), raw)
	var unread []Unreadable
	if err != nil {
		for _, e := range unwrapAll(err) {
			var le *pyfile.LineError
			if errors.As(e, &le) {
				le.File = path
				unread = append(unread, Unreadable{Name: le.Name, Msg: le.Error() + " (tokenstore reads literal NAME = value assignments only, and never runs the file)"})
			} else {
				unread = append(unread, Unreadable{Msg: e.Error()})
			}
		}
	}
	// A name assigned twice: the last assignment is the one Flask saw.
	last := map[string]int{}
	var out []FileSetting
	for _, a := range as {
		if strings.ToUpper(a.Name) != a.Name {
			continue // Flask takes upper-case names only
		}
		fs := pyValue(a)
		if i, ok := last[a.Name]; ok {
			out[i] = fs
			continue
		}
		last[a.Name] = len(out)
		out = append(out, fs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, unread, nil
}

func pyValue(a pyfile.Assignment) FileSetting {
	fs := FileSetting{Name: a.Name, Line: a.Line}
	if v, ok := a.Value.Scalar(); ok {
		fs.Str = v
		return fs
	}
	if a.Value.Kind == pyfile.Dict {
		fs.NotScalar = true
		return fs
	}
	fs.IsList = true
	for _, it := range a.Value.Items {
		v, ok := it.Scalar()
		if !ok {
			fs.NotScalar = true
			return fs
		}
		fs.List = append(fs.List, v)
	}
	fs.Str = strings.Join(fs.List, ",")
	return fs
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// environNames lists the names of the process environment, so that
// TOKENSTORE_TOKEN_PROVIDERS and TOKENSTORE_IDPn_* can be found; their
// values are read through Load's lookupEnv.
func environNames() []string {
	var names []string
	for _, kv := range os.Environ() {
		if k, _, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}
