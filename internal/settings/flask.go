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

// fileValue is one setting read from a settings file.
type fileValue struct {
	str string
	// line is where it was set in a Python file (0 for YAML).
	line int
	// notScalar: a dict, or a list holding one, which no tokenstore setting
	// takes (an ignored setting may be one).
	notScalar bool
}

// readSettingsFile reads a settings file. Its format is told by the name:
// .yaml, .yml and .json files are YAML (JSON is YAML); .py and .cfg files are
// the Flask service's Python; any other name is YAML if it parses as a YAML
// mapping and Python otherwise (the Flask service's file "does not need to
// end in .py"). The Python file is never run: its literal assignments are
// read (package pyfile), and any other statement is an error naming its
// line. Only upper-case names are settings, as in Flask.
func readSettingsFile(path string) (map[string]fileValue, []string, error) {
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

func readYAML(path string, raw []byte) (map[string]fileValue, []string, error) {
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("settings file %s: not a YAML mapping of SETTING: value: %w", path, err)
	}
	out := make(map[string]fileValue, len(m))
	for k, v := range m {
		key := strings.ToUpper(k)
		switch t := v.(type) {
		case nil:
			out[key] = fileValue{}
		case string:
			out[key] = fileValue{str: t}
		case bool:
			out[key] = fileValue{str: strconv.FormatBool(t)}
		case float64:
			out[key] = fileValue{str: strconv.FormatFloat(t, 'f', -1, 64)}
		case []any:
			parts := make([]string, 0, len(t))
			nested := false
			for _, e := range t {
				switch e.(type) {
				case map[string]any, []any:
					nested = true
				}
				parts = append(parts, fmt.Sprint(e))
			}
			out[key] = fileValue{str: strings.Join(parts, ","), notScalar: nested}
		default:
			out[key] = fileValue{notScalar: true}
		}
	}
	return out, nil, nil
}

// readPython reads the Flask service's Python settings file. The problems
// returned name the lines that could not be read.
func readPython(path string, raw []byte) (map[string]fileValue, []string, error) {
	as, err := pyfile.Parse(filepath.Base(path), raw)
	var problems []string
	if err != nil {
		var le *pyfile.LineError
		for _, e := range unwrapAll(err) {
			if errors.As(e, &le) {
				problems = append(problems, fmt.Sprintf("%s: cannot be read without running the file (%s); tokenstore reads literal NAME = value assignments only", le.Error(), path))
			} else {
				problems = append(problems, e.Error())
			}
		}
	}
	out := map[string]fileValue{}
	for _, a := range as {
		if strings.ToUpper(a.Name) != a.Name {
			continue // Flask takes upper-case names only
		}
		out[a.Name] = pyValue(a)
	}
	return out, problems, nil
}

func pyValue(a pyfile.Assignment) fileValue {
	if v, ok := a.Value.Scalar(); ok {
		return fileValue{str: v, line: a.Line}
	}
	if a.Value.Kind == pyfile.Dict {
		return fileValue{line: a.Line, notScalar: true}
	}
	parts := make([]string, 0, len(a.Value.Items))
	for _, it := range a.Value.Items {
		v, ok := it.Scalar()
		if !ok {
			return fileValue{line: a.Line, notScalar: true}
		}
		parts = append(parts, v)
	}
	return fileValue{str: strings.Join(parts, ","), line: a.Line}
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
