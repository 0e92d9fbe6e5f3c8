package repo

import (
	"context"
	"strings"

	"github.com/uptrace/bun"
)

// defaultSearchLimit applies when SearchUsers gets a limit below one.
const defaultSearchLimit = 50

// CreateUser stores a new user and returns it with its id and creation time.
// It returns ErrConflict when the email is already registered; of several
// concurrent registrations of one email exactly one succeeds.
func (s *Store) CreateUser(ctx context.Context, name, email, passwordHash string) (User, error) {
	u := User{Name: name, Email: email, PasswordHash: passwordHash, CreatedAt: now()}
	if _, err := s.db.NewInsert().Model(&u).Returning("id").Exec(ctx); err != nil {
		return User{}, wrap("create user", err)
	}
	return u, nil
}

// UserByEmail returns the user with the email, compared exactly (the caller
// normalizes it), or ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	var u User
	err := s.db.NewSelect().Model(&u).Where("u.email = ?", email).Scan(ctx)
	if err != nil {
		return User{}, wrap("user by email", err)
	}
	return u, nil
}

// UserByID returns the user with the id, or ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id int64) (User, error) {
	var u User
	err := s.db.NewSelect().Model(&u).Where("u.id = ?", id).Scan(ctx)
	if err != nil {
		return User{}, wrap("user by id", err)
	}
	return u, nil
}

// UsersExist returns the ids among ids that name no user, in the order of
// ids and without repeats; nil means all exist.
func (s *Store) UsersExist(ctx context.Context, ids []int64) (missing []int64, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var found []int64
	err = s.db.NewSelect().Table("users").Column("id").
		Where("id IN (?)", bun.List(ids)).Scan(ctx, &found)
	if err != nil {
		return nil, wrap("users exist", err)
	}
	seen := make(map[int64]bool, len(ids))
	for _, id := range found {
		seen[id] = true
	}
	for _, id := range ids {
		if !seen[id] {
			missing = append(missing, id)
			seen[id] = true
		}
	}
	return missing, nil
}

// SearchUsers returns up to limit users whose name starts with
// namePrefix, ignoring case, or whose email is exactly email (as stored:
// the caller normalizes it), ordered by name then id. Names compare
// case-insensitively and byte-wise (not by locale), the same on both
// dialects; SQLite folds case for ASCII letters only. LIKE wildcards in
// namePrefix match literally. An empty namePrefix matches no name and an
// empty email no email, so nobody can list everyone; a limit below one
// means defaultSearchLimit.
func (s *Store) SearchUsers(ctx context.Context, namePrefix, email string, limit int) ([]User, error) {
	if limit < 1 {
		limit = defaultSearchLimit
	}
	users := []User{}
	if namePrefix == "" && email == "" {
		return users, nil
	}
	query := s.db.NewSelect().Model(&users).OrderExpr(s.nameOrder()).Limit(int64(limit))
	query = query.WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
		if namePrefix != "" {
			q = q.WhereOr("lower(u.name) LIKE ? ESCAPE '!'", escapeLike(strings.ToLower(namePrefix))+"%")
		}
		if email != "" {
			q = q.WhereOr("u.email = ?", email)
		}
		return q
	})
	if err := query.Scan(ctx); err != nil {
		return nil, wrap("search users", err)
	}
	return users, nil
}

// escapeLike escapes the LIKE wildcards and the escape character itself
// with '!', which SearchUsers names in its ESCAPE clause. '!' avoids the
// backslash, whose meaning in string literals differs between databases.
func escapeLike(s string) string {
	return strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s)
}

// uniqueIDs returns ids without repeats and without skip, in first-seen
// order.
func uniqueIDs(ids []int64, skip int64) []int64 {
	out := make([]int64, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if id != skip && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// nameOrder orders users by lowercased name in byte order, then by name and
// id, so both dialects list the same users in the same order whatever
// collation the Postgres database has.
func (s *Store) nameOrder() string {
	if s.dialect == DialectPostgres {
		return `lower(u.name) COLLATE "C" ASC, u.name COLLATE "C" ASC, u.id ASC`
	}
	return "lower(u.name) ASC, u.name ASC, u.id ASC"
}
