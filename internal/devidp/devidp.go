//go:build dev

// Package devidp is the OpenID Provider of `tokenstore dev`: zitadel's
// certified op package with its example in-memory storage, a login page of
// its own, demo users and clients given by the caller. It signs in people at
// the dev server (the login client) and plays the demo token providers
// (one client each), so a newcomer sees the whole service work without an
// outside identity provider.
//
// Everything it holds is in memory: after a restart the dev server's stored
// refresh tokens are unknown here and the page shows them as needing
// re-authorization, which is the state a real provider's revocation leads to.
//
// It is for loopback use only: passwords are compared in plain text and
// /dev/token hands out access tokens for a username and password. That is
// why every file here carries the dev build tag: only `tokenstore dev`
// (built with -tags dev) links this package, and production builds cannot
// import it by accident.
package devidp

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is a demo person who can sign in at the provider.
type User struct {
	// ID is the subject of their tokens.
	ID       string
	Username string
	Password string
	Name     string
	Email    string
}

// Client is an OAuth2 client registered at the provider.
type Client struct {
	ID     string
	Secret string
	// RedirectURIs are the exact callback URLs the client may use.
	RedirectURIs []string
}

// Options configure New.
type Options struct {
	// Issuer is the provider's base URL, http://127.0.0.1:PORT (no path):
	// the discovery document is at Issuer + /.well-known/openid-configuration.
	Issuer  string
	Users   []User
	Clients []Client
	Logger  *slog.Logger
}

// IDP is a configured provider; serve its Handler.
type IDP struct {
	issuer   string
	storage  *devStorage
	provider *op.Provider
	users    []User
	loginC   string // client whose tokens /dev/token issues
	log      *slog.Logger
	mux      *http.ServeMux
}

// DemoUsers are the people `tokenstore dev` offers. Their passwords are
// printed at start: this provider listens on loopback only.
func DemoUsers() []User {
	return []User{
		{ID: "alice", Username: "alice", Password: "alice-demo", Name: "Alice Example", Email: "alice@example.test"},
		{ID: "bob", Username: "bob", Password: "bob-demo", Name: "Bob Example", Email: "bob@example.test"},
	}
}

//go:embed templates/*.html
var templatesFS embed.FS

var pages = template.Must(template.ParseFS(templatesFS, "templates/*.html"))

// New builds the provider. The first client is the one /dev/token issues
// tokens for (the login client of the dev server).
func New(opt Options) (*IDP, error) {
	if opt.Issuer == "" || len(opt.Clients) == 0 {
		return nil, errors.New("devidp: an issuer and at least one client are needed")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	users := map[string]*storage.User{}
	for _, u := range opt.Users {
		first, last, _ := strings.Cut(u.Name, " ")
		users[u.ID] = &storage.User{ID: u.ID, Username: u.Username, Password: u.Password, FirstName: first, LastName: last,
			Email: u.Email, EmailVerified: true, PreferredLanguage: language.English}
	}
	clients := map[string]*storage.Client{}
	for _, c := range opt.Clients {
		clients[c.ID] = storage.WebClient(c.ID, c.Secret, c.RedirectURIs...)
	}
	// NewStorageWithClients, not RegisterClients: the latter writes a
	// package-global map.
	st := &devStorage{Storage: storage.NewStorageWithClients(userStore{users}, clients)}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("devidp: key: %w", err)
	}
	// The settings of zitadel's example server, without its SetupServer,
	// which replaces the process-wide default logger.
	p, err := op.NewProvider(&op.Config{
		CryptoKey:             key,
		CryptoKeyId:           "devidp",
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
	}, st, op.StaticIssuer(opt.Issuer), op.WithAllowInsecure(), op.WithLogger(opt.Logger.With("component", "devidp")))
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	d := &IDP{issuer: opt.Issuer, storage: st, provider: p, users: opt.Users, loginC: opt.Clients[0].ID, log: opt.Logger, mux: http.NewServeMux()}
	d.mux.HandleFunc("GET /login/username", d.loginPage)
	d.mux.HandleFunc("POST /login/username", d.checkLogin)
	d.mux.HandleFunc("POST /dev/token", d.devToken)
	d.mux.HandleFunc("GET /{$}", d.home)
	d.mux.Handle("/", p)
	return d, nil
}

// Issuer is the provider's issuer URL.
func (d *IDP) Issuer() string { return d.issuer }

// DiscoveryURL is the provider's .well-known/openid-configuration URL.
func (d *IDP) DiscoveryURL() string { return d.issuer + "/.well-known/openid-configuration" }

// Handler serves the provider: the OpenID endpoints, the login page and
// /dev/token.
func (d *IDP) Handler() http.Handler { return d.mux }

// Serve serves on ln until ctx ends.
func (d *IDP) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

type loginData struct {
	ID, Username, Error string
	Users               []User
}

func (d *IDP) loginPage(w http.ResponseWriter, r *http.Request) {
	d.renderLogin(w, http.StatusOK, loginData{ID: r.URL.Query().Get("authRequestID")})
}

func (d *IDP) renderLogin(w http.ResponseWriter, status int, data loginData) {
	data.Users = d.users
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// No form-action: browsers apply it to the redirects after the POST
	// too, and those end at the client, on another origin.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, "login.html", data); err != nil {
		d.log.Warn("devidp: rendering the login page", "error", err)
	}
}

// checkLogin checks the password against the pending authorization request
// and sends the browser on to the op's callback, which issues the code.
func (d *IDP) checkLogin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "The form could not be read.", http.StatusBadRequest)
		return
	}
	id, user := r.PostForm.Get("id"), r.PostForm.Get("username")
	if err := d.storage.CheckUsernamePassword(user, r.PostForm.Get("password"), id); err != nil {
		msg := "That username and password do not match a demo user."
		if err.Error() == "request not found" {
			msg = "This sign-in request expired or is unknown; go back to the application and start again."
		}
		d.renderLogin(w, http.StatusUnauthorized, loginData{ID: id, Username: user, Error: msg})
		return
	}
	http.Redirect(w, r, op.AuthCallbackURL(d.provider)(op.ContextWithIssuer(r.Context(), d.issuer), id), http.StatusFound)
}

func (d *IDP) home(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "tokenstore development OpenID Provider\nissuer: %s\ndiscovery: %s\n", d.issuer, d.DiscoveryURL())
}

// devToken issues an access token of the login client for a demo user given
// by HTTP basic auth, so a terminal can call the API with a bearer token
// without a browser (what the printed curl line does). Only the token is in
// the answer, as text, to be captured with $(...).
func (d *IDP) devToken(w http.ResponseWriter, r *http.Request) {
	name, pass, ok := r.BasicAuth()
	var u *User
	for i := range d.users {
		if d.users[i].Username == name {
			u = &d.users[i]
		}
	}
	if !ok || u == nil || subtle.ConstantTimeCompare([]byte(u.Password), []byte(pass)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="tokenstore dev"`)
		http.Error(w, "Give a demo user's name and password with -u user:password.", http.StatusUnauthorized)
		return
	}
	client, err := d.storage.GetClientByClientID(r.Context(), d.loginC)
	if err != nil {
		http.Error(w, "The login client is not registered.", http.StatusInternalServerError)
		return
	}
	req := tokenRequest{subject: u.ID, audience: []string{d.loginC}, scopes: []string{oidc.ScopeOpenID, oidc.ScopeEmail, oidc.ScopeProfile}}
	ctx := op.ContextWithIssuer(r.Context(), d.issuer)
	tok, _, validity, err := op.CreateAccessToken(ctx, req, op.AccessTokenTypeJWT, d.provider, client, "")
	if err != nil {
		d.log.Warn("devidp: issuing a dev token failed", "error", err)
		http.Error(w, "The token could not be issued.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(validity.Seconds())})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, tok)
}

type tokenRequest struct {
	subject          string
	audience, scopes []string
}

func (t tokenRequest) GetSubject() string    { return t.subject }
func (t tokenRequest) GetAudience() []string { return t.audience }
func (t tokenRequest) GetScopes() []string   { return t.scopes }

// userStore holds the demo users for the example storage.
type userStore struct{ users map[string]*storage.User }

func (u userStore) GetUserByID(id string) *storage.User { return u.users[id] }
func (u userStore) GetUserByUsername(name string) *storage.User {
	ids := make([]string, 0, len(u.users))
	for id := range u.users {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if u.users[id].Username == name {
			return u.users[id]
		}
	}
	return nil
}

// ExampleClientID names the example storage's JWT-profile service user;
// unused here.
func (u userStore) ExampleClientID() string { return storage.ServiceUserID }

// devStorage is the example storage with its clients made to issue JWT
// access tokens (so the page can show their claims, and the dev server can
// check bearer tokens locally), to accept any scope a TokenProvider asks
// for (demo scopes such as files.read) and to put profile claims into ID
// tokens.
type devStorage struct{ *storage.Storage }

func (s *devStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return devClient{c}, nil
}

type devClient struct{ op.Client }

func (devClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (devClient) IsScopeAllowed(string) bool          { return true }

// IDTokenUserinfoClaimsAssertion puts name and email into the ID token, so
// the dev server's session knows who signed in without a userinfo call.
func (devClient) IDTokenUserinfoClaimsAssertion() bool { return true }
