// Package settings loads tokenstore's settings the way the Flask service did:
// built-in defaults, then a settings file named by TOKENSTORE_SETTINGS (the
// Flask service's Python file, or YAML; see readSettingsFile), then
// TOKENSTORE_-prefixed environment variables, then command-line flags.
//
// Setting names are the Flask service's (OIDC_DISCOVERY_URL, CRYPTOKEY, ...),
// upper case, the same in the file, the environment and (lower-cased, dashes
// for underscores) as flags. Settings the Flask stack read that tokenstore
// has no use for (SECRET_KEY, Flask-Session, Flask-SQLAlchemy and flask_tern
// names) are accepted with a warning each. A bad value stops the start with
// one message that names every offending setting; secret values never
// appear in it.
package settings

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tokenstore/tokenstore/internal/crypto"
)

// EnvPrefix is the prefix of every environment variable tokenstore reads.
const EnvPrefix = "TOKENSTORE_"

// SettingsEnv names the settings file, as in the Flask service.
const SettingsEnv = EnvPrefix + "SETTINGS"

// Settings is the whole configuration of one tokenstore process.
type Settings struct {
	// ListenAddress is where the HTTP API listens.
	ListenAddress string
	// MetricsAddress is where /metrics is served, on a listener of its
	// own: never on ListenAddress, so that the API's Service and Ingress
	// never route it. Empty serves no metrics.
	MetricsAddress string
	// HTTPReadTimeout, HTTPWriteTimeout and HTTPIdleTimeout bound how long
	// the API's listener waits for a whole request, for its answer to be
	// written, and keeps an idle keep-alive connection (net/http's
	// ReadTimeout, WriteTimeout, IdleTimeout).
	HTTPReadTimeout  time.Duration
	HTTPWriteTimeout time.Duration
	HTTPIdleTimeout  time.Duration
	// RateLimitPerAddress and RateLimitPerPrincipal are requests per minute
	// one client address, and one signed-in person, program or workload,
	// may make to the limited routes of one replica; 0 turns that limit
	// off. RateLimitBurst is the size of each bucket.
	RateLimitPerAddress   int
	RateLimitPerPrincipal int
	RateLimitBurst        int
	// ExternalURL is the public base URL redirect URIs are built from.
	ExternalURL string
	// DatabaseURL is postgres://…, postgresql://…, sqlite:///absolute/path,
	// sqlite://relative/path or sqlite::memory: (storeopen's forms); a
	// SQLALCHEMY_DATABASE_URI is turned into one of them (DatabaseURL).
	DatabaseURL string
	// MigrateOnStart runs pending migrations before serving.
	MigrateOnStart bool
	// CryptoKey is the raw CRYPTOKEY list (see internal/crypto.ParseKeyRing).
	CryptoKey string

	OIDCDiscoveryURL string
	OIDCClientID     string
	OIDCClientSecret string
	OIDCScope        []string
	OIDCAudience     []string
	// BearerOpaque is how opaque (non-JWT) bearer tokens from the login
	// issuer are checked: "refuse" (the default), "introspection" (RFC
	// 7662, with the login client's credentials) or "userinfo" (any token
	// the issuer's userinfo endpoint accepts; see README for the risk).
	BearerOpaque string
	// BearerVerifyRate bounds the calls made to the login issuer to check
	// bearer tokens (JWKS fetches, introspection, userinfo), per second
	// and replica; 0 leaves them unbounded.
	BearerVerifyRate  float64
	SessionCookieName string
	// SessionCookieSecure: "auto" (Secure when EXTERNAL_URL is https), "true", "false".
	SessionCookieSecure   string
	SessionCookieSameSite string
	SessionLifetime       time.Duration
	SessionIdleTimeout    time.Duration
	// RolesClaim are the claim paths a person's roles are read from in
	// the login issuer's tokens (see auth.Roles); empty means
	// auth.DefaultRolesClaims.
	RolesClaim []string
	// AdminRoles are the roles (or groups) that may use the admin API;
	// empty turns the admin API off.
	AdminRoles []string

	CORSOrigins             []string
	CORSAllowHeaders        []string
	CORSMaxAge              time.Duration
	CORSSupportsCredentials bool
	TrustedProxies          []string
	AllowedReturnURLs       []string

	ProvidersFile  string
	WatchNamespace string
	// WorkloadAudience is the audience workloads' projected ServiceAccount
	// tokens must carry (checked through TokenReview).
	WorkloadAudience string
	LeaderElection   bool

	LogLevel  string
	LogFormat string

	// WebhookURL receives CloudEvents about credentials and providers that
	// need attention; empty sends none. WebhookSecret keys their HMAC.
	WebhookURL    string
	WebhookSecret string
	// RefresherInterval is the background refresher's pause between
	// passes; 0 turns it off. RefresherWindow: access tokens lapsing within
	// it are refreshed ahead; 0 leaves idle keep-alive only.
	RefresherInterval time.Duration
	RefresherWindow   time.Duration
	// AuditRetention: audit events older than this are pruned; 0 keeps them.
	AuditRetention time.Duration
	// ExpiringWarning: credentials whose refresh token's absolute expiry is
	// this close are announced (webhook credential.expiring); 0 turns the
	// scan off.
	ExpiringWarning time.Duration

	// TracingEndpoint is the OTLP/HTTP collector spans are sent to (e.g.
	// http://otel-collector:4318); empty turns tracing off.
	TracingEndpoint string
	// TracingSampleRatio is the share of new traces sampled (0..1); a
	// request that arrives with a traceparent follows its caller's choice.
	TracingSampleRatio float64
	// TracingServiceName is the service.name of the spans.
	TracingServiceName string

	// Warnings are notes about accepted-but-ignored or renamed settings, for
	// the caller to log once at start.
	Warnings []string
}

// option describes one setting: its names, default, help and how to parse it.
type option struct {
	name    string
	aliases []string
	def     string
	help    string
	secret  bool
	set     func(s *Settings, v string) error
}

func str(f func(*Settings) *string) func(*Settings, string) error {
	return func(s *Settings, v string) error { *f(s) = strings.TrimSpace(v); return nil }
}

func list(f func(*Settings) *[]string) func(*Settings, string) error {
	return func(s *Settings, v string) error { *f(s) = splitList(v); return nil }
}

func boolean(f func(*Settings) *bool) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*f(s) = b
		return nil
	}
}

// count accepts a non-negative whole number.
func count(f func(*Settings) *int) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return fmt.Errorf("want a whole number, 0 or more; got %q", v)
		}
		*f(s) = n
		return nil
	}
}

// duration accepts Go durations ("90m", "720h") or plain seconds, as Flask's
// PERMANENT_SESSION_LIFETIME is given.
func duration(f func(*Settings) *time.Duration) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		v = strings.TrimSpace(v)
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if n < 0 {
				return fmt.Errorf("must not be negative, got %d", n)
			}
			*f(s) = time.Duration(n) * time.Second
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a duration such as 90m or 720h, or a number of seconds; got %q", v)
		}
		if d < 0 {
			return fmt.Errorf("must not be negative, got %s", d)
		}
		*f(s) = d
		return nil
	}
}

var options = []option{
	{name: "LISTEN_ADDRESS", def: ":8080", help: "address the HTTP API listens on", set: str(func(s *Settings) *string { return &s.ListenAddress })},
	{name: "METRICS_ADDRESS", def: ":9090", help: "address /metrics is served on, a listener of its own (never LISTEN_ADDRESS); empty: no metrics", set: str(func(s *Settings) *string { return &s.MetricsAddress })},
	{name: "HTTP_READ_TIMEOUT", def: "30s", help: "longest time the API waits for a whole request, headers and body", set: duration(func(s *Settings) *time.Duration { return &s.HTTPReadTimeout })},
	{name: "HTTP_WRITE_TIMEOUT", def: "60s", help: "longest time from the end of a request's headers to the end of its answer (above the longest provider call and refresh wait, 50 s)", set: duration(func(s *Settings) *time.Duration { return &s.HTTPWriteTimeout })},
	{name: "HTTP_IDLE_TIMEOUT", def: "120s", help: "an idle keep-alive connection is closed after this", set: duration(func(s *Settings) *time.Duration { return &s.HTTPIdleTimeout })},
	{name: "RATE_LIMIT_PER_ADDRESS", def: "600", help: "requests per minute one client address may make to sign-in, the link callback, the token and the token-exchange endpoints without being signed in (per replica); 0: no limit", set: count(func(s *Settings) *int { return &s.RateLimitPerAddress })},
	{name: "RATE_LIMIT_PER_PRINCIPAL", def: "6000", help: "requests per minute one signed-in person, program or workload may make to the link callback, the token and the token-exchange endpoints (per replica); 0: no limit", set: count(func(s *Settings) *int { return &s.RateLimitPerPrincipal })},
	{name: "RATE_LIMIT_BURST", def: "100", help: "requests a client address or principal may make at once before its per-minute rate applies", set: count(func(s *Settings) *int { return &s.RateLimitBurst })},
	{name: "EXTERNAL_URL", def: "http://localhost:8080", help: "public base URL; redirect URIs are built from it", set: str(func(s *Settings) *string { return &s.ExternalURL })},
	// SQLALCHEMY_DATABASE_URI comes first so that DATABASE_URL, given in
	// the same source, wins.
	{name: "SQLALCHEMY_DATABASE_URI", help: "the Flask service's database URL, read as SQLAlchemy does (sqlite:///relative.db, sqlite:////absolute.db, postgresql+psycopg2://…); sets DATABASE_URL", secret: true, set: databaseURL(true)},
	{name: "DATABASE_URL", def: "sqlite://tokenstore.db", help: "postgres://…, postgresql://…, sqlite:///absolute/path or sqlite://relative/path (a SQLAlchemy URL with a +driver is read as SQLALCHEMY_DATABASE_URI)", secret: true, set: databaseURL(false)},
	{name: "MIGRATE_ON_START", def: "false", help: "apply pending database migrations before serving", set: boolean(func(s *Settings) *bool { return &s.MigrateOnStart })},
	{name: "CRYPTOKEY", help: "comma-separated 32-byte encryption keys (raw, base64 or hex); the first encrypts, all decrypt", secret: true, set: str(func(s *Settings) *string { return &s.CryptoKey })},
	{name: "OIDC_DISCOVERY_URL", help: "login provider's .well-known/openid-configuration URL", set: str(func(s *Settings) *string { return &s.OIDCDiscoveryURL })},
	{name: "OIDC_CLIENT_ID", help: "login client id", set: str(func(s *Settings) *string { return &s.OIDCClientID })},
	{name: "OIDC_CLIENT_SECRET", help: "login client secret", secret: true, set: str(func(s *Settings) *string { return &s.OIDCClientSecret })},
	{name: "OIDC_SCOPE", def: "openid email profile", help: "scopes requested at login (space or comma separated)", set: list(func(s *Settings) *[]string { return &s.OIDCScope })},
	{name: "OIDC_AUDIENCE", help: "audiences accepted on bearer access tokens from the login issuer (default: the client id)", set: list(func(s *Settings) *[]string { return &s.OIDCAudience })},
	{name: "BEARER_OPAQUE", def: "refuse", help: "opaque (non-JWT) bearer tokens from the login issuer: refuse, introspection (RFC 7662 at the issuer's introspection_endpoint, with OIDC_CLIENT_ID/OIDC_CLIENT_SECRET; the token must be active and issued to or for OIDC_AUDIENCE) or userinfo (any token the issuer's userinfo endpoint accepts, including other applications' tokens: unsafe unless the issuer serves this service alone)", set: func(s *Settings, v string) error {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case "refuse", "introspection", "userinfo":
			s.BearerOpaque = m
		default:
			return fmt.Errorf("want refuse, introspection or userinfo, got %q", v)
		}
		return nil
	}},
	{name: "BEARER_VERIFY_RATE", def: "10", help: "calls per second (per replica) to the login issuer to check bearer tokens (JWKS refetches, introspection, userinfo); beyond it unchecked tokens are answered 503; 0: unbounded", set: func(s *Settings, v string) error {
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || r < 0 {
			return fmt.Errorf("want a number of calls per second, 0 or more, got %q", v)
		}
		s.BearerVerifyRate = r
		return nil
	}},
	{name: "SESSION_COOKIE_NAME", def: "tokenstore_session", help: "name of the session cookie", set: str(func(s *Settings) *string { return &s.SessionCookieName })},
	{name: "SESSION_COOKIE_SECURE", def: "auto", help: "auto (Secure when EXTERNAL_URL is https), true or false", set: str(func(s *Settings) *string { return &s.SessionCookieSecure })},
	{name: "SESSION_COOKIE_SAMESITE", def: "Lax", help: "Lax, Strict or None", set: str(func(s *Settings) *string { return &s.SessionCookieSameSite })},
	{name: "PERMANENT_SESSION_LIFETIME", aliases: []string{"SESSION_LIFETIME"}, def: "744h", help: "how long a login session lasts (duration or seconds, as Flask's setting)", set: duration(func(s *Settings) *time.Duration { return &s.SessionLifetime })},
	{name: "SESSION_IDLE_TIMEOUT", def: "168h", help: "a session unused this long ends", set: duration(func(s *Settings) *time.Duration { return &s.SessionIdleTimeout })},
	{name: "ROLES_CLAIM", help: "comma-separated dotted claim paths a person's roles are read from in the login issuer's ID and access tokens; {client_id} stands for OIDC_CLIENT_ID (default realm_access.roles,resource_access.{client_id}.roles,roles,groups)", set: func(s *Settings, v string) error {
		paths := splitList(v)
		for _, p := range paths {
			if slices.Contains(strings.Split(p, "."), "") {
				return fmt.Errorf("claim path %q: want dot-separated claim names such as realm_access.roles", p)
			}
		}
		s.RolesClaim = paths
		return nil
	}},
	{name: "ADMIN_ROLES", help: "roles or groups (from ROLES_CLAIM) whose holders may use the admin API (/api/v1.0/admin); none by default, which turns the admin API off", set: list(func(s *Settings) *[]string { return &s.AdminRoles })},
	{name: "SESSION_TYPE", def: "database", help: "kept for the Flask service's settings files: sessions are always kept in the database so every replica serves them", set: func(s *Settings, v string) error {
		switch strings.TrimSpace(v) {
		case "", "database", "sqlalchemy":
		case "filesystem", "redis", "memcached", "null":
			s.Warnings = append(s.Warnings, fmt.Sprintf("SESSION_TYPE=%s is ignored: sessions are kept in the database so that every replica serves them", v))
		default:
			return fmt.Errorf("unknown session type %q (sessions are kept in the database)", v)
		}
		return nil
	}},
	{name: "SESSION_FILE_DIR", help: "ignored (sessions are kept in the database); accepted so the Flask service's settings files load", set: func(s *Settings, v string) error {
		if strings.TrimSpace(v) != "" {
			s.Warnings = append(s.Warnings, "SESSION_FILE_DIR is ignored: sessions are kept in the database")
		}
		return nil
	}},
	{name: "CORS_ORIGINS", def: "*", help: "origins allowed to call the API from a browser (Flask-Cors' setting); * (the default) is every origin, never with credentials", set: list(func(s *Settings) *[]string { return &s.CORSOrigins })},
	{name: "CORS_ALLOW_HEADERS", def: "Authorization,Content-Type,X-CSRF-Token", help: "request headers allowed cross-origin", set: list(func(s *Settings) *[]string { return &s.CORSAllowHeaders })},
	{name: "CORS_MAX_AGE", def: "10m", help: "how long browsers may cache a preflight answer", set: duration(func(s *Settings) *time.Duration { return &s.CORSMaxAge })},
	{name: "CORS_SUPPORTS_CREDENTIALS", def: "false", help: "allow cookies on cross-origin requests from an explicit CORS_ORIGINS list (Flask-Cors' default: no)", set: boolean(func(s *Settings) *bool { return &s.CORSSupportsCredentials })},
	{name: "TRUSTED_PROXIES", help: "CIDRs of reverse proxies whose X-Forwarded-* headers are believed (the Flask service's ProxyFix)", set: list(func(s *Settings) *[]string { return &s.TrustedProxies })},
	{name: "ALLOWED_RETURN_URLS", help: "origins (scheme://host[:port]) that return_url may point to; EXTERNAL_URL's origin is always allowed", set: list(func(s *Settings) *[]string { return &s.AllowedReturnURLs })},
	{name: "PROVIDERS_FILE", help: "file or folder of TokenProvider and Secret manifests (the file source)", set: str(func(s *Settings) *string { return &s.ProvidersFile })},
	{name: "WATCH_NAMESPACE", help: "namespace whose TokenProviders are served (the Kubernetes source); off outside a cluster unless set", set: str(func(s *Settings) *string { return &s.WatchNamespace })},
	{name: "WORKLOAD_AUDIENCE", def: "tokenstore", help: "audience of the projected ServiceAccount tokens workloads present (Kubernetes source only)", set: str(func(s *Settings) *string { return &s.WorkloadAudience })},
	{name: "LEADER_ELECTION", def: "true", help: "elect one replica to write TokenProvider status (Kubernetes source only)", set: boolean(func(s *Settings) *bool { return &s.LeaderElection })},
	{name: "LOG_LEVEL", def: "info", help: "debug, info, warn or error", set: str(func(s *Settings) *string { return &s.LogLevel })},
	{name: "LOG_FORMAT", def: "json", help: "json or text", set: str(func(s *Settings) *string { return &s.LogFormat })},
	{name: "WEBHOOK_URL", help: "URL that receives signed CloudEvents (credential.needs_reauth, credential.recovered, credential.expiring, provider.not_ready); none by default", set: str(func(s *Settings) *string { return &s.WebhookURL })},
	{name: "WEBHOOK_SECRET", help: "HMAC-SHA256 key of the webhook signature (required with WEBHOOK_URL)", secret: true, set: str(func(s *Settings) *string { return &s.WebhookSecret })},
	{name: "REFRESHER_INTERVAL", def: "1m", help: "pause between background refresher passes; 0 turns the refresher off", set: duration(func(s *Settings) *time.Duration { return &s.RefresherInterval })},
	{name: "REFRESHER_WINDOW", def: "0", help: "refresh access tokens in the background when they lapse within this (keep it below the providers' token lifetime); 0: only keep idle-timeout refresh tokens alive", set: duration(func(s *Settings) *time.Duration { return &s.RefresherWindow })},
	{name: "AUDIT_RETENTION", def: "2160h", help: "audit events older than this are deleted; 0 keeps them forever", set: duration(func(s *Settings) *time.Duration { return &s.AuditRetention })},
	{name: "EXPIRING_WARNING", def: "168h", help: "announce credential.expiring (webhook) for refresh tokens whose absolute expiry is this close; 0 turns the scan off", set: duration(func(s *Settings) *time.Duration { return &s.ExpiringWarning })},
	{name: "TRACING_ENDPOINT", help: "OTLP/HTTP endpoint that receives OpenTelemetry traces (e.g. http://otel-collector:4318); empty: tracing off", set: str(func(s *Settings) *string { return &s.TracingEndpoint })},
	{name: "TRACING_SAMPLE_RATIO", def: "1.0", help: "share of new traces sampled, 0 to 1 (requests carrying a traceparent follow the caller's decision)", set: func(s *Settings, v string) error {
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("want a number from 0 to 1, got %q", v)
		}
		s.TracingSampleRatio = r
		return nil
	}},
	{name: "TRACING_SERVICE_NAME", def: "tokenstore", help: "service.name of the exported spans", set: str(func(s *Settings) *string { return &s.TracingServiceName })},
}

// providerSuffixes are the Flask service's per-provider settings: <ID>_<suffix>
// for each id in TOKEN_PROVIDERS.
var providerSuffixes = []string{"DISCOVERY_URL", "CLIENT_ID", "CLIENT_SECRET", "SCOPE", "MD_NAME", "MD_DESCRIPTION", "MD_URL", "MD_ICON", "MD_LOGO", "SERVER_METADATA_URL"}

// movedSetting reports Flask service settings that now live elsewhere:
// naming them is an error with directions rather than a silent no-op, since
// a start without the providers they declared would break every client.
func movedSetting(name string) (string, bool) {
	moved := name == "TOKEN_PROVIDERS"
	if !moved && !strings.HasPrefix(name, "OIDC_") {
		for _, suf := range providerSuffixes {
			if strings.HasSuffix(name, "_"+suf) && len(name) > len(suf)+1 {
				moved = true
				break
			}
		}
	}
	if moved {
		return "token providers are now TokenProvider manifests: run `tokenstore providers convert` to turn TOKEN_PROVIDERS and the IDPn_* settings into them, then point PROVIDERS_FILE at the result (or apply it to the cluster), and remove these settings", true
	}
	return "", false
}

// FlagName is the command-line flag of a setting: LISTEN_ADDRESS -> listen-address.
func FlagName(setting string) string {
	return strings.ReplaceAll(strings.ToLower(setting), "_", "-")
}

// AddFlags registers one flag per setting on fs, so flags can override
// everything (flags come last).
func AddFlags(fs *pflag.FlagSet) {
	for _, o := range options {
		help := o.help
		if o.def != "" {
			help += " (default " + o.def + ")"
		}
		help += " [$" + EnvPrefix + o.name + "]"
		fs.String(FlagName(o.name), "", help)
	}
	fs.String("settings", "", "settings file: the Flask service's Python file (.py, .cfg) or YAML (.yaml, .yml, .json) [$"+SettingsEnv+"]")
}

// Names lists every setting name, for documentation.
func Names() []string {
	n := make([]string, 0, len(options))
	for _, o := range options {
		n = append(n, o.name)
	}
	return n
}

// Load builds Settings from defaults, the settings file, the environment
// (lookupEnv, usually os.LookupEnv) and the flags that were set on fs (may be
// nil), and checks that reqs are met. Every problem found, with any setting
// and from any source, is reported in the one returned error.
func Load(fs *pflag.FlagSet, lookupEnv func(string) (string, bool), reqs ...Requirement) (*Settings, error) {
	return LoadWithDefaults(fs, lookupEnv, nil, reqs...)
}

// LoadWithDefaults is Load with a command's own defaults (setting name to
// value) laid over the built-in ones, below the settings file, the
// environment and the flags: `tokenstore dev` uses it so that a settings
// file still wins over its embedded defaults.
func LoadWithDefaults(fs *pflag.FlagSet, lookupEnv func(string) (string, bool), defaults map[string]string, reqs ...Requirement) (*Settings, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	s := &Settings{}
	var problems []string
	apply := func(o option, v, source string) {
		if err := o.set(s, v); err != nil {
			// The value itself is left out for secret settings.
			problems = append(problems, fmt.Sprintf("%s (from %s): %v", o.name, source, redact(o, err)))
		}
	}
	for _, o := range options {
		if o.def != "" {
			_ = o.set(s, o.def)
		}
		if v, ok := defaults[o.name]; ok {
			apply(o, v, "the command's defaults")
		}
	}
	var moved []string // Flask service provider settings found, by where

	// 1. the settings file
	path, _ := lookupEnv(SettingsEnv)
	if fs != nil {
		if f := fs.Lookup("settings"); f != nil && f.Changed {
			path = f.Value.String()
		}
	}
	if path != "" {
		values, unread, err := ReadFile(path)
		if err != nil {
			return nil, err
		}
		for _, u := range unread {
			problems = append(problems, u.Msg)
		}
		for _, v := range values {
			k := v.Name
			where := path
			if v.Line > 0 {
				where = fmt.Sprintf("%s:%d", path, v.Line)
			}
			if why, ok := ignoredSetting(k); ok {
				s.Warnings = append(s.Warnings, ignoredWarning(k, where, why))
				continue
			}
			o, ok := lookup(k)
			if !ok {
				if _, isMoved := movedSetting(k); isMoved {
					moved = append(moved, k+" ("+where+")")
				} else if hint := suggest(k); hint != "" {
					problems = append(problems, fmt.Sprintf("%s (in %s): unknown setting%s", k, where, hint))
				} else {
					s.Warnings = append(s.Warnings, fmt.Sprintf("%s (in %s) is not a tokenstore setting; ignored", k, where))
				}
				continue
			}
			if v.NotScalar {
				problems = append(problems, fmt.Sprintf("%s (in %s): want a string, number, boolean or list of them", k, where))
				continue
			}
			apply(o, v.Str, where)
		}
	}

	// 2. the environment
	for _, o := range options {
		for _, n := range append([]string{o.name}, o.aliases...) {
			if v, ok := lookupEnv(EnvPrefix + n); ok {
				apply(o, v, "$"+EnvPrefix+n)
			}
		}
	}
	for _, k := range environNames() {
		name := strings.TrimPrefix(k, EnvPrefix)
		if _, known := lookup(name); known || name == "SETTINGS" {
			continue
		}
		if _, set := lookupEnv(k); !set {
			continue
		}
		if why, ok := ignoredSetting(name); ok {
			s.Warnings = append(s.Warnings, ignoredWarning(name, "$"+k, why))
		} else if _, isMoved := movedSetting(name); isMoved {
			moved = append(moved, "$"+k)
		}
	}
	if _, ok := lookupEnv(EnvPrefix + "TOKEN_PROVIDERS"); ok && !slices.Contains(moved, "$"+EnvPrefix+"TOKEN_PROVIDERS") {
		moved = append(moved, "$"+EnvPrefix+"TOKEN_PROVIDERS")
	}
	if len(moved) > 0 {
		hint, _ := movedSetting("TOKEN_PROVIDERS")
		problems = append(problems, strings.Join(moved, ", ")+": "+hint)
	}

	// 3. flags
	if fs != nil {
		for _, o := range options {
			if f := fs.Lookup(FlagName(o.name)); f != nil && f.Changed {
				apply(o, f.Value.String(), "--"+f.Name)
			}
		}
	}

	problems = append(problems, s.check()...)
	problems = append(problems, s.missing(reqs)...)
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return s, nil
}

// Error lists every problem with the settings, one per line.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "invalid setting: " + e.Problems[0]
	}
	return "invalid settings:\n  " + strings.Join(e.Problems, "\n  ")
}

// check validates values that parsed but make no sense.
func (s *Settings) check() []string {
	var p []string
	if _, err := url.Parse(s.ExternalURL); err != nil || !strings.HasPrefix(s.ExternalURL, "http://") && !strings.HasPrefix(s.ExternalURL, "https://") {
		p = append(p, fmt.Sprintf("EXTERNAL_URL: want an absolute http(s) URL, got %q", s.ExternalURL))
	}
	s.ExternalURL = strings.TrimRight(s.ExternalURL, "/")
	switch {
	case strings.HasPrefix(s.DatabaseURL, "postgres://"), strings.HasPrefix(s.DatabaseURL, "postgresql://"), strings.HasPrefix(s.DatabaseURL, "sqlite:"):
	default:
		p = append(p, "DATABASE_URL: want postgres://…, postgresql://… or sqlite://path (the scheme was not recognised)")
	}
	if s.CryptoKey != "" {
		// Checked here rather than when the store opens, so that a bad key
		// is reported with every other fault of the same start.
		if _, err := crypto.ParseKeyRing(s.CryptoKey); err != nil {
			p = append(p, err.Error())
		}
	}
	if s.OIDCDiscoveryURL != "" {
		if u, err := url.Parse(s.OIDCDiscoveryURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, fmt.Sprintf("OIDC_DISCOVERY_URL: want an absolute http(s) URL, got %q", s.OIDCDiscoveryURL))
		}
	}
	// Port 0 is a fresh port for each listener, so two of them never clash.
	if s.MetricsAddress != "" && s.MetricsAddress == s.ListenAddress && !strings.HasSuffix(s.ListenAddress, ":0") {
		p = append(p, "METRICS_ADDRESS: must differ from LISTEN_ADDRESS (/metrics is never served on the API's listener); empty serves no metrics")
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"HTTP_READ_TIMEOUT", s.HTTPReadTimeout}, {"HTTP_WRITE_TIMEOUT", s.HTTPWriteTimeout}, {"HTTP_IDLE_TIMEOUT", s.HTTPIdleTimeout}} {
		if t.d <= 0 {
			p = append(p, t.name+": must be above 0 (a connection without a timeout can be held open forever)")
		}
	}
	if s.RateLimitBurst < 1 {
		p = append(p, "RATE_LIMIT_BURST: must be 1 or more")
	}
	switch s.SessionCookieSecure {
	case "auto", "true", "false":
	default:
		p = append(p, fmt.Sprintf("SESSION_COOKIE_SECURE: want auto, true or false, got %q", s.SessionCookieSecure))
	}
	switch strings.ToLower(s.SessionCookieSameSite) {
	case "strict", "lax", "none":
		// Strict works for linking too: a provider's cross-site redirect
		// back is answered with a same-site hop (server.hop).
	default:
		p = append(p, fmt.Sprintf("SESSION_COOKIE_SAMESITE: want Lax, Strict or None, got %q", s.SessionCookieSameSite))
	}
	if s.SessionLifetime <= 0 {
		p = append(p, "PERMANENT_SESSION_LIFETIME: must be positive")
	}
	for _, o := range s.AllowedReturnURLs {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			p = append(p, fmt.Sprintf("ALLOWED_RETURN_URLS: %q is not an origin such as https://app.example.com", o))
		}
	}
	for _, o := range s.CORSOrigins {
		if o == "*" && s.CORSSupportsCredentials {
			p = append(p, "CORS_ORIGINS: \"*\" cannot be combined with CORS_SUPPORTS_CREDENTIALS=true; list the origins")
		}
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p = append(p, fmt.Sprintf("LOG_LEVEL: want debug, info, warn or error, got %q", s.LogLevel))
	}
	if s.WebhookURL != "" {
		if u, err := url.Parse(s.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, "WEBHOOK_URL: want an absolute http(s) URL")
		}
		if s.WebhookSecret == "" {
			p = append(p, "WEBHOOK_SECRET: required with WEBHOOK_URL, so that receivers can tell tokenstore's events from forgeries")
		}
	}
	if s.TracingEndpoint != "" {
		if u, err := url.Parse(s.TracingEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, "TRACING_ENDPOINT: want an absolute http(s) URL such as http://otel-collector:4318")
		}
		if s.TracingServiceName == "" {
			p = append(p, "TRACING_SERVICE_NAME: must not be empty when TRACING_ENDPOINT is set")
		}
	}
	switch s.LogFormat {
	case "json", "text":
	default:
		p = append(p, fmt.Sprintf("LOG_FORMAT: want json or text, got %q", s.LogFormat))
	}
	return p
}

// Requirement is a setting a command cannot work without.
type Requirement string

const (
	RequireCryptoKey Requirement = "CRYPTOKEY"
	RequireLogin     Requirement = "OIDC"
)

// Require reports, in one error, every required setting that is missing.
// Load does the same for the requirements it is given, together with every
// other fault; Require is for a requirement known only later.
func (s *Settings) Require(reqs ...Requirement) error {
	if p := s.missing(reqs); len(p) > 0 {
		return &Error{Problems: p}
	}
	return nil
}

func (s *Settings) missing(reqs []Requirement) []string {
	var p []string
	for _, r := range reqs {
		switch r {
		case RequireCryptoKey:
			if s.CryptoKey == "" {
				p = append(p, "CRYPTOKEY: missing; generate one with `tokenstore keys generate` and set $TOKENSTORE_CRYPTOKEY")
			}
		case RequireLogin:
			if s.OIDCDiscoveryURL == "" {
				p = append(p, "OIDC_DISCOVERY_URL: missing; people sign in with OpenID Connect at this provider")
			}
			if s.OIDCClientID == "" {
				p = append(p, "OIDC_CLIENT_ID: missing")
			}
		}
	}
	return p
}

// CookieSecure resolves SESSION_COOKIE_SECURE=auto against EXTERNAL_URL.
func (s *Settings) CookieSecure() bool {
	switch s.SessionCookieSecure {
	case "true":
		return true
	case "false":
		return false
	}
	return strings.HasPrefix(s.ExternalURL, "https://")
}

func lookup(name string) (option, bool) {
	name = strings.ToUpper(strings.TrimSpace(name))
	for _, o := range options {
		if o.name == name || slices.Contains(o.aliases, name) {
			return o, true
		}
	}
	return option{}, false
}

func splitList(v string) []string {
	f := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if len(f) == 0 {
		return nil
	}
	return f
}

func redact(o option, err error) error {
	if o.secret {
		return errors.New("the value could not be used (not shown: it is secret)")
	}
	return err
}

// suggest proposes the closest known setting name for a typo.
func suggest(name string) string {
	best, bestD := "", 4
	for _, o := range options {
		if d := distance(name, o.name); d < bestD {
			best, bestD = o.name, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// distance is the Levenshtein distance, for suggestions only.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
