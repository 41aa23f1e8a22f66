package sqlfiles

import (
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// migrationName is goose's file naming: a zero-padded version, a name.
var migrationName = regexp.MustCompile(`^\d{5}_[a-z0-9_]+\.sql$`)

func versions(t *testing.T, dialect string, fsys fs.FS) []string {
	t.Helper()
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatalf("%s: %v", dialect, err)
	}
	if len(entries) == 0 {
		t.Fatalf("%s: no migrations embedded", dialect)
	}
	var names []string
	for _, e := range entries {
		if !migrationName.MatchString(e.Name()) {
			t.Errorf("%s: %s is not named NNNNN_name.sql", dialect, e.Name())
		}
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		up, down := strings.Index(text, "-- +goose Up"), strings.Index(text, "-- +goose Down")
		if up < 0 || down < up {
			t.Errorf("%s/%s: want a -- +goose Up section followed by a -- +goose Down section", dialect, e.Name())
		}
		names = append(names, e.Name())
	}
	return names
}

// TestDialectsInStep checks that the two dialects have the same migrations,
// so a schema change cannot land in one backend only.
func TestDialectsInStep(t *testing.T) {
	pg := versions(t, "postgres", PostgresMigrations())
	lite := versions(t, "sqlite", SQLiteMigrations())
	if !slices.Equal(pg, lite) {
		t.Errorf("postgres migrations %v, sqlite migrations %v: keep them in step", pg, lite)
	}
}
