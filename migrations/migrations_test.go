package migrations_test

import (
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/uptrace/bun/migrate"

	"github.com/windi-chat/windi/migrations"
)

// tables are the tables the spec names; every dialect must create them all.
var tables = []string{"users", "chats", "groups", "chat_members", "messages", "sessions"}

var createTable = regexp.MustCompile(`(?i)CREATE TABLE (\w+)`)

func TestDialectsDiscoverSameMigrations(t *testing.T) {
	var names [][]string
	for _, dialect := range []string{"postgres", "sqlite"} {
		fsys, err := migrations.ForDialect(dialect)
		if err != nil {
			t.Fatalf("%s: %v", dialect, err)
		}
		ms := migrate.NewMigrations()
		if err := ms.Discover(fsys); err != nil {
			t.Fatalf("%s: discover: %v", dialect, err)
		}
		var got []string
		for _, m := range ms.Sorted() {
			if m.Up == nil || m.Down == nil {
				t.Errorf("%s: migration %s: got up=%v down=%v, want both", dialect, m.Name, m.Up != nil, m.Down != nil)
			}
			got = append(got, m.Name)
		}
		if len(got) == 0 {
			t.Fatalf("%s: got no migrations, want some", dialect)
		}
		names = append(names, got)

		var created []string
		err = fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".up.sql") {
				return err
			}
			b, err := fs.ReadFile(fsys, path)
			if err != nil {
				return err
			}
			for _, m := range createTable.FindAllStringSubmatch(string(b), -1) {
				created = append(created, m[1])
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: read: %v", dialect, err)
		}
		for _, table := range tables {
			if !slices.Contains(created, table) {
				t.Errorf("%s: got tables %v, want %s among them", dialect, created, table)
			}
		}
	}
	if !slices.Equal(names[0], names[1]) {
		t.Errorf("got postgres migrations %v and sqlite %v, want the same", names[0], names[1])
	}
}

func TestUnknownDialect(t *testing.T) {
	if _, err := migrations.ForDialect("mysql"); err == nil {
		t.Error("got nil error for mysql, want one")
	}
}

func TestCollectAddsGoMigrations(t *testing.T) {
	for _, dialect := range []string{"postgres", "sqlite"} {
		ms, err := migrations.Collect(dialect)
		if err != nil {
			t.Fatalf("%s: %v", dialect, err)
		}
		var names []string
		for _, m := range ms.Sorted() {
			if m.Up == nil || m.Down == nil {
				t.Errorf("%s: migration %s lacks up or down", dialect, m.Name)
			}
			names = append(names, m.Name+"_"+m.Comment)
		}
		if !slices.Contains(names, "00002_nfkc_emails") {
			t.Errorf("%s: got %v, want 00002_nfkc_emails among them", dialect, names)
		}
	}
}
