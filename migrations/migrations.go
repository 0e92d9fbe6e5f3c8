// Package migrations embeds the numbered SQL migrations of WinDI Chat, one
// set per database dialect, in the file naming that bun/migrate discovers
// (<version>_<name>.tx.up.sql and .tx.down.sql, statements separated by
// --bun:split lines), and holds the few migrations that must be Go
// (<version>_<name>.go, one for both dialects). Collect returns them all.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"

	"github.com/uptrace/bun/migrate"
)

//go:embed postgres/*.sql
var postgresFS embed.FS

//go:embed sqlite/*.sql
var sqliteFS embed.FS

// Postgres holds the Postgres migrations at the root of the filesystem.
var Postgres = mustSub(postgresFS, "postgres")

// SQLite holds the SQLite migrations at the root of the filesystem.
var SQLite = mustSub(sqliteFS, "sqlite")

// ForDialect returns the migrations for dialect, "postgres" or "sqlite".
func ForDialect(dialect string) (fs.FS, error) {
	switch dialect {
	case "postgres":
		return Postgres, nil
	case "sqlite":
		return SQLite, nil
	default:
		return nil, fmt.Errorf("migrations: unknown dialect %q", dialect)
	}
}

// Collect returns every migration of dialect, SQL and Go, ready for a
// migrate.Migrator.
func Collect(dialect string) (*migrate.Migrations, error) {
	fsys, err := ForDialect(dialect)
	if err != nil {
		return nil, err
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(fsys); err != nil {
		return nil, fmt.Errorf("migrations: discover: %w", err)
	}
	for _, register := range []func(*migrate.Migrations) error{registerNFKCEmails} {
		if err := register(ms); err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
	}
	return ms, nil
}

// mustSub panics when dir is missing, which only a broken build can cause.
func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(fmt.Sprintf("migrations: %v", err))
	}
	return sub
}
