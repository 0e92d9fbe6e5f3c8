// Package repo persists WinDI Chat data through Bun on Postgres or SQLite;
// it holds no HTTP and no chat rules beyond what must be atomic.
//
// Every method returns ErrNotFound or ErrConflict (wrapped with %w) for the
// conditions its comment names, so callers can test with errors.Is without
// knowing which database runs underneath.
package repo

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
	"github.com/uptrace/bun/migrate"

	"github.com/windi-chat/windi/migrations"
)

// Dialect names returned by Store.Dialect.
const (
	DialectPostgres = "postgres"
	DialectSQLite   = "sqlite"
)

// sqliteFile is the name of the embedded database inside the data directory.
const sqliteFile = "windi.db"

// sqliteMaxOpenConns bounds the SQLite pool. SQLite allows one writer at a
// time anyway; a few connections let WAL readers proceed while a writer
// holds the lock, and every write transaction begins IMMEDIATE so it waits
// (busy_timeout) instead of failing with SQLITE_BUSY.
const sqliteMaxOpenConns = 8

// Store is the WinDI Chat database. It is safe for concurrent use.
type Store struct {
	db      *bun.DB
	dialect string
}

// Open connects to the database. An empty databaseURL means the embedded
// SQLite file windi.db in dataDir, which is created with mode 0700 when
// missing; a postgres:// or postgresql:// URL means Postgres. Any other URL
// is an error. Open checks the connection but does not migrate.
func Open(ctx context.Context, databaseURL, dataDir string) (*Store, error) {
	var s *Store
	switch {
	case databaseURL == "":
		db, err := openSQLite(dataDir)
		if err != nil {
			return nil, err
		}
		s = &Store{db: db, dialect: DialectSQLite}
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		cfg, err := pgx.ParseConfig(withExecMode(databaseURL))
		if err != nil {
			return nil, fmt.Errorf("repo: open postgres: %w", err)
		}
		boundLink(cfg)
		sqldb := stdlib.OpenDB(*cfg)
		// Enough connections for the group-commit workers and concurrent
		// reads, kept open so bursts don't pay for new ones; two replicas
		// stay well under Postgres's default max_connections of 100.
		sqldb.SetMaxOpenConns(32)
		sqldb.SetMaxIdleConns(32)
		sqldb.SetConnMaxIdleTime(5 * time.Minute)
		s = &Store{db: bun.NewDB(sqldb, pgdialect.New()), dialect: DialectPostgres}
	default:
		return nil, fmt.Errorf("repo: unsupported database URL scheme (want postgres:// or postgresql://, or empty for SQLite)")
	}
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// openSQLite opens the embedded database with the pragmas the store relies
// on: foreign keys, WAL, a busy timeout, and IMMEDIATE write transactions.
func openSQLite(dataDir string) (*bun.DB, error) {
	if dataDir == "" {
		dataDir = "."
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("repo: create data dir: %w", err)
	}
	path := filepath.Join(dataDir, sqliteFile)
	dsn := "file:" + escapeSQLitePath(path) +
		"?_pragma=busy_timeout(10000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(ON)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_txlock=immediate"
	sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
	if err != nil {
		return nil, fmt.Errorf("repo: open sqlite: %w", err)
	}
	sqldb.SetMaxOpenConns(sqliteMaxOpenConns)
	sqldb.SetMaxIdleConns(sqliteMaxOpenConns)
	// Connections never expire: each one carries its pragmas, and reopening
	// a SQLite file is cheap but pointless.
	sqldb.SetConnMaxLifetime(0)
	return bun.NewDB(sqldb, sqlitedialect.New()), nil
}

// escapeSQLitePath percent-encodes the characters that would end the path
// part of a SQLite URI filename.
func escapeSQLitePath(p string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return r.Replace(filepath.ToSlash(p))
}

// Migrate runs the embedded migrations of the store's dialect that have not
// run yet. It is idempotent, and concurrent callers (several replicas
// starting at once) run one after the other.
//
// bun/migrate's lock is a row in a table, which a process that dies while
// migrating leaves behind. On Postgres a session advisory lock, which the
// server releases with the session, guards the whole run, so a lock row
// found while holding it is stale and is cleared. SQLite has no such lock:
// a lock row that stays for staleLockAfter is taken as stale, which is safe
// because each migration file runs in one transaction.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations.Collect(s.dialect)
	if err != nil {
		return fmt.Errorf("repo: migrate: %w", err)
	}

	release, err := s.migrationMutex(ctx)
	if err != nil {
		return fmt.Errorf("repo: migrate: %w", err)
	}
	defer release()

	m := migrate.NewMigrator(s.db, ms, migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("repo: migrate: init: %w", err)
	}
	if err := s.lockMigrator(ctx, m); err != nil {
		return fmt.Errorf("repo: migrate: %w", err)
	}
	// Unlock with a fresh context so a cancelled ctx does not leave the lock
	// row behind.
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = m.Unlock(uctx)
	}()
	if _, err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("repo: migrate: %w", err)
	}
	return nil
}

// staleLockAfter is how long a SQLite migration lock row may stay before
// Migrate takes it as left behind by a dead process. Migrations of the
// embedded database take milliseconds.
const staleLockAfter = 10 * time.Second

// migrationLockKey is the Postgres advisory lock key of Migrate, an
// arbitrary constant ("windi" in ASCII).
const migrationLockKey int64 = 0x77696e6469

// migrationMutex serializes Migrate across processes on Postgres, holding a
// session advisory lock on a dedicated connection until release is called.
// On SQLite it does nothing.
func (s *Store) migrationMutex(ctx context.Context) (release func(), err error) {
	if s.dialect != DialectPostgres {
		return func() {}, nil
	}
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("advisory lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("advisory lock: %w", err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(uctx, "SELECT pg_advisory_unlock($1)", migrationLockKey); err != nil {
			// Closing the session is what releases the lock now, so keep
			// this connection out of the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}, nil
}

// lockMigrator takes bun/migrate's lock row, clearing a stale one (see
// Migrate).
func (s *Store) lockMigrator(ctx context.Context, m *migrate.Migrator) error {
	wait := staleLockAfter
	if s.dialect == DialectPostgres {
		// The advisory lock is held: nobody else is migrating.
		wait = 0
	}
	deadline := time.Now().Add(wait)
	for {
		err := m.Lock(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if uerr := m.Unlock(ctx); uerr != nil {
				return errors.Join(err, uerr)
			}
			return m.Lock(ctx)
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("repo: ping %s: %w", s.dialect, err)
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("repo: close: %w", err)
	}
	return nil
}

// Dialect returns DialectPostgres or DialectSQLite.
func (s *Store) Dialect() string { return s.dialect }

// DB returns the underlying Bun database, for tests and tooling.
func (s *Store) DB() *bun.DB { return s.db }

// now returns the current time as the store writes it: UTC, truncated to
// microseconds so that it reads back equal from either dialect.
func now() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}

// withExecMode asks pgx to run statements without preparing and caching
// them, unless the URL says otherwise: Bun writes values into the SQL, so
// nearly every statement text is new, and the default statement cache
// would prepare (a round trip more) and keep each one.
func withExecMode(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return databaseURL
	}
	q := u.Query()
	if q.Get("default_query_exec_mode") == "" {
		q.Set("default_query_exec_mode", "exec")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
