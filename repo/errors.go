package repo

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNotFound means the row asked for does not exist, or a row it
	// references (a user, a chat) does not.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique key already holds the value, such as a
	// registered email.
	ErrConflict = errors.New("conflict")
	// ErrNotMember means the user is not a member of the chat.
	ErrNotMember = errors.New("not a member")
	// ErrUnavailable means the database could not be reached; nothing was
	// written, unless the error is also ErrInDoubt.
	ErrUnavailable = errors.New("database unavailable")
	// ErrInDoubt comes with ErrUnavailable when the connection broke after
	// a transaction's COMMIT was sent: it may have committed, its answer
	// lost (Postgres stopping mid-batch does this). Only the database can
	// tell, once it answers again (StoredSends).
	ErrInDoubt = errors.New("transaction outcome unknown")
)

// SQLite extended result codes, from sqlite3.h.
const (
	sqliteConstraintForeignKey = 787
	sqliteConstraintPrimaryKey = 1555
	sqliteConstraintUnique     = 2067
)

// Postgres SQLSTATE codes.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// sqliteCoder is implemented by modernc.org/sqlite errors; matching the
// method keeps the driver out of this package's imports.
type sqliteCoder interface {
	Code() int
}

// isUniqueViolation reports whether err is a unique or primary key
// violation on either dialect.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == pgUniqueViolation
	}
	var sErr sqliteCoder
	if errors.As(err, &sErr) {
		c := sErr.Code()
		return c == sqliteConstraintUnique || c == sqliteConstraintPrimaryKey
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isForeignKeyViolation reports whether err is a foreign key violation on
// either dialect.
func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == pgForeignKeyViolation
	}
	var sErr sqliteCoder
	if errors.As(err, &sErr) {
		return sErr.Code() == sqliteConstraintForeignKey
	}
	return strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
}

// wrap turns driver errors into the package sentinels and adds op as
// context: sql.ErrNoRows becomes ErrNotFound, a unique violation
// ErrConflict, a foreign key violation ErrNotFound (the referenced row is
// missing). It returns nil for a nil err.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrNotMember):
		return fmt.Errorf("repo: %s: %w", op, err)
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("repo: %s: %w", op, ErrNotFound)
	case isUniqueViolation(err):
		return fmt.Errorf("repo: %s: %w: %w", op, ErrConflict, err)
	case isForeignKeyViolation(err):
		return fmt.Errorf("repo: %s: %w: %w", op, ErrNotFound, err)
	case isUnavailable(err):
		return fmt.Errorf("repo: %s: %w: %w", op, ErrUnavailable, err)
	default:
		return fmt.Errorf("repo: %s: %w", op, err)
	}
}

// isUnavailable reports whether err means the database could not be reached
// or the connection broke, as opposed to a statement failing.
func isUnavailable(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exceptions; class 57: operator intervention,
		// such as 57P01 admin_shutdown when Postgres stops mid-statement.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57")
	}
	// ErrConnClosed: a statement on a connection pgx closed already (its
	// previous statement broke it: a deadline, a dead link).
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || pgconn.SafeToRetry(err)
}
