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

// contractMarker in a migration file says that its Up section may remove or
// tighten what the previous release's binary used, because that release no
// longer uses it (the contract step of expand-then-contract,
// docs/upgrading.md). The text after it says why.
const contractMarker = "-- tokenstore:contract "

// breaking are statements by which a migration could break the previous
// release's binary while it still runs on the migrated schema during a
// rolling upgrade: removing or renaming what it reads or writes, changing a
// column it uses, a new constraint its writes may not meet, data it relies
// on deleted.
var breaking = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\bDROP\s+(TABLE|COLUMN|INDEX|CONSTRAINT|VIEW|TRIGGER|TYPE|FUNCTION)\b`),
	regexp.MustCompile(`(?i)\bRENAME\b`),
	regexp.MustCompile(`(?i)\bALTER\s+COLUMN\b`),
	regexp.MustCompile(`(?i)\bADD\s+(CONSTRAINT|PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY)\b`),
	regexp.MustCompile(`(?i)\bCREATE\s+UNIQUE\s+INDEX\b`),
	regexp.MustCompile(`(?i)\b(TRUNCATE|DELETE\s+FROM)\b`),
}

// addNotNull is an added column the previous release's INSERTs do not
// name: NOT NULL without a DEFAULT fails them.
var addNotNull = regexp.MustCompile(`(?i)\bADD\s+(COLUMN\s+)?[^;]*?\bNOT\s+NULL\b[^;]*`)

// upSection is a migration's Up section without its SQL comments.
func upSection(text string) string {
	up, _, _ := strings.Cut(text, "-- +goose Down")
	var b strings.Builder
	for _, line := range strings.Split(up, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// breakingStatements returns what in a migration's Up section could break
// the previous release, unless the file carries the contract marker.
func breakingStatements(text string) []string {
	if strings.Contains(text, contractMarker) {
		return nil
	}
	up := upSection(text)
	var found []string
	for _, re := range breaking {
		found = append(found, re.FindAllString(up, -1)...)
	}
	for _, m := range addNotNull.FindAllString(up, -1) {
		if !regexp.MustCompile(`(?i)\bDEFAULT\b`).MatchString(m) {
			found = append(found, strings.TrimSpace(m))
		}
	}
	return found
}

// TestMigrationsOnlyExpand holds every migration after the first (which
// creates the schema) to the rule of rolling upgrades: a release's
// migrations only add, so that the previous release's pods keep working on
// the migrated schema until they are replaced. Removing what an older
// release used is a later release's contract step and must say so
// (contractMarker).
func TestMigrationsOnlyExpand(t *testing.T) {
	for dialect, fsys := range map[string]fs.FS{"postgres": PostgresMigrations(), "sqlite": SQLiteMigrations()} {
		for _, name := range versions(t, dialect, fsys)[1:] {
			data, err := fs.ReadFile(fsys, name)
			if err != nil {
				t.Fatal(err)
			}
			if found := breakingStatements(string(data)); len(found) > 0 {
				t.Errorf("%s/%s would break the previous release during a rolling upgrade (%q); make it additive, or, "+
					"if that release no longer uses what it removes, say so with a %q line (docs/upgrading.md)",
					dialect, name, found, strings.TrimSpace(contractMarker))
			}
		}
	}
}

// TestBreakingStatementsFound: the check above finds what it must and
// lets additive changes, comments and the Down section through.
func TestBreakingStatementsFound(t *testing.T) {
	for _, tc := range []struct {
		up   string
		want bool
	}{
		{"ALTER TABLE grants ADD COLUMN service_account_uid text;", false},
		{"ALTER TABLE t ADD COLUMN n integer NOT NULL DEFAULT 0;", false},
		{"CREATE INDEX t_idx ON t (a);\nCREATE TABLE x (id integer PRIMARY KEY, v text NOT NULL);", false},
		{"-- we no longer DROP TABLE anything\nSELECT 1;", false},
		{"UPDATE credentials SET subject = '' WHERE subject IS NULL;", false},
		{"ALTER TABLE credentials DROP COLUMN subject;", true},
		{"DROP TABLE link_states;", true},
		{"ALTER TABLE credentials RENAME COLUMN subject TO sub;", true},
		{"ALTER TABLE credentials ALTER COLUMN scopes TYPE jsonb;", true},
		{"ALTER TABLE grants ADD COLUMN pod text NOT NULL;", true},
		{"alter table grants add column pod text not null;", true},
		{"ALTER TABLE grants ADD CONSTRAINT one UNIQUE (user_id);", true},
		{"CREATE UNIQUE INDEX g ON grants (user_id);", true},
		{"DELETE FROM sessions;", true},
	} {
		text := "-- +goose Up\n" + tc.up + "\n\n-- +goose Down\nDROP TABLE whatever;\n"
		if got := len(breakingStatements(text)) > 0; got != tc.want {
			t.Errorf("%q: breaking = %v, want %v", tc.up, got, tc.want)
		}
		if tc.want && len(breakingStatements(text+"\n"+contractMarker+"unused since 0.3\n")) != 0 {
			t.Errorf("%q: the contract marker is not honoured", tc.up)
		}
	}
}
