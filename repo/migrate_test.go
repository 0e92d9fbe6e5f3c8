package repo_test

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/uptrace/bun/migrate"

	"github.com/windi-chat/windi/migrations"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// openUnmigrated opens a store without migrating it.
func openUnmigrated(t *testing.T, databaseURL, dataDir string) *repo.Store {
	t.Helper()
	s, err := repo.Open(context.Background(), databaseURL, dataDir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMigrateConcurrentReplicas(t *testing.T) {
	targets := map[string]func(t *testing.T) (string, string){
		repo.DialectSQLite:   func(t *testing.T) (string, string) { return "", t.TempDir() },
		repo.DialectPostgres: func(t *testing.T) (string, string) { return repotest.NewPostgresURL(t), "" },
	}
	for _, dialect := range []string{repo.DialectSQLite, repo.DialectPostgres} {
		t.Run(dialect, func(t *testing.T) {
			url, dir := targets[dialect](t)
			const n = 4
			stores := make([]*repo.Store, n)
			for i := range stores {
				stores[i] = openUnmigrated(t, url, dir)
			}
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i, s := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = s.Migrate(context.Background())
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
				}
			}
			if _, err := stores[0].CreateUser(context.Background(), "a", "a@example.com", "h"); err != nil {
				t.Errorf("create user after migrate: %v", err)
			}
		})
	}
}

func TestMigrateClearsStaleLockOnPostgres(t *testing.T) {
	s := repotest.OpenPostgres(t)
	ctx := context.Background()
	// A process that died while migrating leaves bun/migrate's lock row.
	_, err := s.DB().NewRaw("INSERT INTO bun_migration_locks (table_name) VALUES ('bun_migrations')").Exec(ctx)
	if err != nil {
		t.Fatalf("insert stale lock: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate with stale lock: %v", err)
	}
	var n int
	if err := s.DB().NewRaw("SELECT count(*) FROM bun_migration_locks").Scan(ctx, &n); err != nil {
		t.Fatalf("count locks: %v", err)
	}
	if n != 0 {
		t.Errorf("got %d lock rows after migrate, want 0", n)
	}
}

func TestMigrateDownAndUp(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		ms, err := migrations.Collect(s.Dialect())
		if err != nil {
			t.Fatalf("migrations: %v", err)
		}
		m := migrate.NewMigrator(s.DB(), ms)
		if _, err := m.Rollback(ctx); err != nil {
			t.Fatalf("rollback: %v", err)
		}
		if _, err := s.UserByID(ctx, 1); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Fatalf("after rollback: got %v, want a missing-table error", err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrate after rollback: %v", err)
		}
		mustUser(t, s, "a")
	})
}

// TestRevisionsMigrationKeepsData: a database with the first schema only
// (what the previous release created), holding chats and messages, upgrades
// in place: every message keeps its text and seq and takes rev =
// created_rev = seq, every chat last_rev = last_seq, and the timeline goes
// on from there.
func TestRevisionsMigrationKeepsData(t *testing.T) {
	targets := map[string]func(t *testing.T) (string, string){
		repo.DialectSQLite:   func(t *testing.T) (string, string) { return "", t.TempDir() },
		repo.DialectPostgres: func(t *testing.T) (string, string) { return repotest.NewPostgresURL(t), "" },
	}
	for _, dialect := range []string{repo.DialectSQLite, repo.DialectPostgres} {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			url, dir := targets[dialect](t)
			s := openUnmigrated(t, url, dir)
			fsys, err := migrations.ForDialect(dialect)
			if err != nil {
				t.Fatal(err)
			}
			first := fstest.MapFS{}
			for _, name := range []string{"00001_init.tx.up.sql", "00001_init.tx.down.sql"} {
				b, err := fs.ReadFile(fsys, name)
				if err != nil {
					t.Fatal(err)
				}
				first[name] = &fstest.MapFile{Data: b}
			}
			ms := migrate.NewMigrations()
			if err := ms.Discover(first); err != nil {
				t.Fatal(err)
			}
			m := migrate.NewMigrator(s.DB(), ms)
			if err := m.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Migrate(ctx); err != nil {
				t.Fatalf("migrate to the first schema: %v", err)
			}
			// Data as the previous release wrote it.
			for _, q := range []string{
				"INSERT INTO users (name, email, password_hash) VALUES ('a', 'a@x.io', 'h'), ('b', 'b@x.io', 'h')",
				"INSERT INTO chats (name, type, last_seq) VALUES ('G', 'group', 3)",
				"INSERT INTO groups (id, name, creator_id) VALUES (1, 'G', 1)",
				"INSERT INTO chat_members (chat_id, user_id, role, last_read_seq) VALUES (1, 1, 'owner', 3), (1, 2, 'member', 1)",
				"INSERT INTO messages (chat_id, seq, sender_id, text, client_msg_id) VALUES (1, 1, 1, 'one', 'c1'), (1, 2, 2, 'two', 'c2'), (1, 3, 1, 'three', 'c3')",
			} {
				if _, err := s.DB().ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			c, err := s.ChatByID(ctx, 1)
			if err != nil || c.LastSeq != 3 || c.LastRev != 3 {
				t.Fatalf("chat after upgrade: %+v %v", c, err)
			}
			h, err := s.History(ctx, 1, repo.HistoryQuery{})
			if err != nil || len(h) != 3 {
				t.Fatalf("history after upgrade: %v %v", h, err)
			}
			for i, m := range h {
				if m.Seq != int64(i+1) || m.Rev != m.Seq || m.CreatedRev != m.Seq || m.Deleted || m.EditedAt != nil || m.Text != []string{"one", "two", "three"}[i] {
					t.Errorf("message %d after upgrade: %+v", i, m)
				}
			}
			// The timeline goes on: an edit takes rev 4, a send seq 4 rev 5.
			if r := apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: 1, UserID: 2, Seq: 2, Text: "two!"}); r.Err != nil || r.Message.Rev != 4 {
				t.Fatalf("edit after upgrade: %+v", r)
			}
			if m := mustSend(t, s, 1, 1, "c4", "four"); m.Seq != 4 || m.Rev != 5 {
				t.Fatalf("send after upgrade: %+v", m)
			}
		})
	}
}

// TestMigrateNormalizesEmails runs migration 00002 over accounts stored
// before emails were NFKC-normalized: each moves to its normal form unless
// another account already holds that form, and ASCII addresses stay as
// they are.
func TestMigrateNormalizesEmails(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		stored := map[string]string{ // as stored before → after the migration
			"\ufb01nn@example.com":      "finn@example.com", // the ligature ﬁ
			"ｂｏｂ@example.com":           "bob@example.com",  // fullwidth
			"carol@example.com":         "carol@example.com",
			"fix@example.com":           "fix@example.com",
			"\ufb01x@example.com":       "\ufb01x@example.com", // its normal form is taken: kept
			"a\u030angstrom@example.se": "\u00e5ngstrom@example.se",
		}
		ids := map[string]int64{}
		for email := range stored {
			u, err := s.CreateUser(ctx, "Legacy", email, "hash")
			if err != nil {
				t.Fatalf("create %q: %v", email, err)
			}
			ids[email] = u.ID
		}
		// Run 00002 again, as on a database that predates it.
		if _, err := s.DB().NewDelete().Table("bun_migrations").Where("name = ?", "00002").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		for before, after := range stored {
			u, err := s.UserByID(ctx, ids[before])
			if err != nil {
				t.Fatal(err)
			}
			if u.Email != after {
				t.Errorf("%q: got %q after the migration, want %q", before, u.Email, after)
			}
		}
	})
}
