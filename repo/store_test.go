package repo_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun/migrate"

	"github.com/windi-chat/windi/migrations"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

func TestMigrateIdempotent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		// The helper migrated once already.
		for i := 0; i < 2; i++ {
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("migrate again (%d): %v", i, err)
			}
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
		var n int
		if err := s.DB().NewSelect().Table("bun_migrations").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
			t.Fatalf("count migrations: %v", err)
		}
		fsys, err := migrations.ForDialect(s.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		ms := migrate.NewMigrations()
		if err := ms.Discover(fsys); err != nil {
			t.Fatal(err)
		}
		if want := len(ms.Sorted()); n != want {
			t.Errorf("got %d applied migrations, want %d (each once)", n, want)
		}
	})
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	t.Run("unsupported URL", func(t *testing.T) {
		if _, err := repo.Open(ctx, "mysql://localhost/x", t.TempDir()); err == nil {
			t.Fatal("got nil error, want one for mysql://")
		}
	})
	t.Run("sqlite creates data dir", func(t *testing.T) {
		dir := t.TempDir() + "/nested/data"
		s, err := repo.Open(ctx, "", dir)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer s.Close()
		if got := s.Dialect(); got != repo.DialectSQLite {
			t.Errorf("got dialect %q, want %q", got, repo.DialectSQLite)
		}
		var mode string
		if err := s.DB().NewRaw("PRAGMA journal_mode").Scan(ctx, &mode); err != nil {
			t.Fatalf("journal_mode: %v", err)
		}
		if mode != "wal" {
			t.Errorf("got journal_mode %q, want wal", mode)
		}
		var fk int
		if err := s.DB().NewRaw("PRAGMA foreign_keys").Scan(ctx, &fk); err != nil {
			t.Fatalf("foreign_keys: %v", err)
		}
		if fk != 1 {
			t.Errorf("got foreign_keys %d, want 1", fk)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		s, err := repo.Open(ctx, repotest.NewPostgresURL(t), "")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer s.Close()
		if got := s.Dialect(); got != repo.DialectPostgres {
			t.Errorf("got dialect %q, want %q", got, repo.DialectPostgres)
		}
	})
}
