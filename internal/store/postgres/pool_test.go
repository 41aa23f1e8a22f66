package postgres_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store/postgres"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// TestPoolDefaults: without pool settings in the URL a replica's pool fits
// three replicas into PostgreSQL's default max_connections and lets idle
// connections go; settings in the URL win.
func TestPoolDefaults(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	st, err := postgres.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.Pool().Config()
	st.Close()
	if cfg.MaxConns != postgres.DefaultMaxConns || 3*cfg.MaxConns > 90 {
		t.Errorf("default pool size %d (three replicas must fit in max_connections 100 with room to spare)", cfg.MaxConns)
	}
	if cfg.MaxConnIdleTime != time.Minute {
		t.Errorf("default idle time %v, want 1m", cfg.MaxConnIdleTime)
	}

	sep := "?"
	if strings.Contains(dbURL, "?") {
		sep = "&"
	}
	st, err = postgres.Open(t.Context(), dbURL+sep+"pool_max_conns=5&pool_max_conn_idle_time=10s")
	if err != nil {
		t.Fatal(err)
	}
	cfg = st.Pool().Config()
	st.Close()
	if cfg.MaxConns != 5 || cfg.MaxConnIdleTime != 10*time.Second {
		t.Errorf("URL settings not kept: %d conns, idle %v", cfg.MaxConns, cfg.MaxConnIdleTime)
	}

	// The names inside a value (here a password; trust auth ignores it)
	// are not settings.
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "pool_max_conns=2&pool_max_conn_idle_time=1s")
	st, err = postgres.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg = st.Pool().Config()
	st.Close()
	if cfg.MaxConns != postgres.DefaultMaxConns || cfg.MaxConnIdleTime != postgres.DefaultMaxConnIdleTime {
		t.Errorf("a password naming pool settings changed the pool: %d conns, idle %v", cfg.MaxConns, cfg.MaxConnIdleTime)
	}

	// A key=value DSN names them the same way.
	st, err = postgres.Open(t.Context(), "host=127.0.0.1 port=5432 user=postgres dbname="+strings.TrimPrefix(u.Path, "/")+" sslmode=disable pool_max_conns=3")
	if err != nil {
		t.Fatal(err)
	}
	cfg = st.Pool().Config()
	st.Close()
	if cfg.MaxConns != 3 || cfg.MaxConnIdleTime != postgres.DefaultMaxConnIdleTime {
		t.Errorf("DSN settings: %d conns (want 3), idle %v (want the default)", cfg.MaxConns, cfg.MaxConnIdleTime)
	}
}
