// Package repotest opens migrated, throw-away repo.Stores for tests: SQLite
// in a temporary directory, and Postgres in a fresh database dropped when
// the test ends. Tests of any package can run against both dialects with
// ForEachDialect.
//
// Postgres is found through WINDI_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), whose user
// must be allowed to create databases. When it cannot be reached, Postgres
// tests are skipped, or fail when CI=true.
package repotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/testkit"
)

// ForEachDialect runs fn as a subtest named after each dialect ("sqlite",
// "postgres"), each with its own freshly migrated store.
func ForEachDialect(t *testing.T, fn func(t *testing.T, s *repo.Store)) {
	t.Helper()
	t.Run(repo.DialectSQLite, func(t *testing.T) {
		fn(t, OpenSQLite(t))
	})
	t.Run(repo.DialectPostgres, func(t *testing.T) {
		fn(t, OpenPostgres(t))
	})
}

// OpenSQLite returns a migrated store on a SQLite file in a temporary
// directory, closed when the test ends.
func OpenSQLite(t testing.TB) *repo.Store {
	t.Helper()
	return open(t, "", t.TempDir())
}

// OpenPostgres returns a migrated store on a fresh Postgres database,
// closed and dropped when the test ends.
func OpenPostgres(t testing.TB) *repo.Store {
	t.Helper()
	return open(t, NewPostgresURL(t), "")
}

func open(t testing.TB, databaseURL, dataDir string) *repo.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := repo.Open(ctx, databaseURL, dataDir)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate %s: %v", s.Dialect(), err)
	}
	return s
}

// NewPostgresURL creates an empty database named windi_test_<random>
// (testkit.CreateDatabase, the harness every test kit shares) and returns
// its URL. The database is dropped, with any open connections, when the
// test ends; cleanups registered later (such as closing a store) run
// before that.
func NewPostgresURL(t testing.TB) string {
	t.Helper()
	adminURL := testkit.AdminDatabaseURL()
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("parse WINDI_TEST_DATABASE_URL: %v", err)
	}
	if !testkit.PostgresReady() {
		unreachable(t, u, errors.New("no answer to a ping within 2 s"))
	}
	name := "windi_test_" + randomHex(t, 8)
	dbURL, err := testkit.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testkit.DropDatabase(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	return dbURL
}

// unreachable ends a test that cannot reach Postgres: a failure on CI,
// where Postgres is part of the setup, a skip elsewhere.
func unreachable(t testing.TB, u *url.URL, err error) {
	t.Helper()
	where := u.Redacted()
	if os.Getenv("CI") == "true" {
		t.Fatalf("postgres at %s unreachable (CI=true, so this fails): %v", where, err)
	}
	t.Skipf("skipping: postgres at %s unreachable (set WINDI_TEST_DATABASE_URL, or CI=true to fail instead): %v", where, err)
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random name: %v", err)
	}
	return hex.EncodeToString(b)
}
