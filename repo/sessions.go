package repo

import (
	"context"
	"errors"
	"time"

	"github.com/uptrace/bun"
)

// ErrRefreshReused means a refresh token that was already rotated came
// back: someone holds a copy. The session it belonged to is revoked by the
// same call.
var ErrRefreshReused = errors.New("refresh token reused")

// Session is one login (one device). RefreshHash is the SHA-256 of its
// current refresh token, never the token; ExpiresAt is when that token
// stops working unless it is rotated before (a sliding lifetime).
type Session struct {
	bun.BaseModel `bun:"table:sessions,alias:s"`

	ID          int64      `bun:"id,pk,autoincrement"`
	UserID      int64      `bun:"user_id,notnull"`
	Device      string     `bun:"device,notnull"`
	RefreshHash string     `bun:"refresh_hash,notnull"`
	CreatedAt   time.Time  `bun:"created_at,notnull"`
	LastUsedAt  time.Time  `bun:"last_used_at,notnull"`
	ExpiresAt   time.Time  `bun:"expires_at,notnull"`
	RevokedAt   *time.Time `bun:"revoked_at"`
}

// AfterScanRow normalizes the times to UTC.
func (s *Session) AfterScanRow(context.Context) error {
	s.CreatedAt, s.LastUsedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.LastUsedAt.UTC(), s.ExpiresAt.UTC()
	if s.RevokedAt != nil {
		t := s.RevokedAt.UTC()
		s.RevokedAt = &t
	}
	return nil
}

// live reports whether the session still refreshes at t.
func (s Session) live(t time.Time) bool { return s.RevokedAt == nil && s.ExpiresAt.After(t) }

// spentToken is a refresh token that was rotated, kept until it would have
// expired so that its reuse is recognised.
type spentToken struct {
	bun.BaseModel `bun:"table:spent_refresh_tokens,alias:st"`

	Hash      string    `bun:"hash,pk"`
	SessionID int64     `bun:"session_id,notnull"`
	ExpiresAt time.Time `bun:"expires_at,notnull"`
}

// Revocation is a revoked session, for the replicas' revocation caches.
type Revocation struct {
	SessionID int64     `bun:"id"`
	UserID    int64     `bun:"user_id"`
	RevokedAt time.Time `bun:"revoked_at"`
}

// dbTime is how the store writes a time: UTC, in microseconds, so that it
// reads back equal from either dialect and compares right in SQL.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// CreateSession stores a new session of userID created at t whose refresh
// token (hashed) expires at expires. ErrNotFound when the user does not
// exist.
func (s *Store) CreateSession(ctx context.Context, userID int64, device, refreshHash string, t, expires time.Time) (Session, error) {
	t = dbTime(t)
	sess := Session{UserID: userID, Device: device, RefreshHash: refreshHash, CreatedAt: t, LastUsedAt: t, ExpiresAt: dbTime(expires)}
	if _, err := s.db.NewInsert().Model(&sess).Returning("id").Exec(ctx); err != nil {
		return Session{}, wrap("create session", err)
	}
	return sess, nil
}

// RotateRefresh replaces the session's refresh token oldHash by newHash at
// t, with the new expiry, and returns the session as it is now. Of
// concurrent rotations of one token exactly one succeeds, on every replica
// and both dialects (the update compares the hash it replaces).
//
// Errors: ErrNotFound when oldHash names no live session and no spent
// token that could still be valid (unknown, expired, revoked);
// ErrRefreshReused when oldHash was rotated already (a concurrent rotation
// that won counts too): the session is revoked at t, and returned so the
// caller can announce it.
func (s *Store) RotateRefresh(ctx context.Context, oldHash, newHash string, t, expires time.Time) (Session, error) {
	t, expires = dbTime(t), dbTime(expires)
	var out Session
	var reused bool
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		out, reused = Session{}, false
		var sess Session
		err := tx.NewSelect().Model(&sess).Where("s.refresh_hash = ?", oldHash).Scan(ctx)
		if errors.Is(wrap("", err), ErrNotFound) {
			var sp spentToken
			if err := tx.NewSelect().Model(&sp).Where("st.hash = ?", oldHash).Scan(ctx); err != nil {
				return err
			}
			if !sp.ExpiresAt.After(t) {
				return ErrNotFound // too old to tell anything
			}
			revoked, err := revokeTx(ctx, tx, sp.SessionID, t)
			if err != nil {
				return err
			}
			out, reused = revoked, true
			return nil
		}
		if err != nil {
			return err
		}
		if !sess.live(t) {
			return ErrNotFound
		}
		res, err := tx.NewUpdate().Model((*Session)(nil)).
			Set("refresh_hash = ?", newHash).Set("last_used_at = ?", t).Set("expires_at = ?", expires).
			Where("id = ? AND refresh_hash = ? AND revoked_at IS NULL", sess.ID, oldHash).Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			// A concurrent rotation of the same token committed first.
			revoked, err := revokeTx(ctx, tx, sess.ID, t)
			if err != nil {
				return err
			}
			out, reused = revoked, true
			return nil
		}
		spent := spentToken{Hash: oldHash, SessionID: sess.ID, ExpiresAt: sess.ExpiresAt}
		if _, err := tx.NewInsert().Model(&spent).Exec(ctx); err != nil {
			return err
		}
		// Spent tokens past their expiry can tell nothing any more.
		if _, err := tx.NewDelete().Model((*spentToken)(nil)).
			Where("session_id = ? AND expires_at <= ?", sess.ID, t).Exec(ctx); err != nil {
			return err
		}
		sess.RefreshHash, sess.LastUsedAt, sess.ExpiresAt = newHash, t, expires
		out = sess
		return nil
	})
	if err != nil {
		return Session{}, wrap("rotate refresh token", err)
	}
	if reused {
		return out, ErrRefreshReused
	}
	return out, nil
}

// revokeTx revokes session id at t unless it is revoked already, and
// returns it.
func revokeTx(ctx context.Context, tx bun.Tx, id int64, t time.Time) (Session, error) {
	if _, err := tx.NewUpdate().Model((*Session)(nil)).Set("revoked_at = ?", t).
		Where("id = ? AND revoked_at IS NULL", id).Exec(ctx); err != nil {
		return Session{}, err
	}
	var sess Session
	err := tx.NewSelect().Model(&sess).Where("s.id = ?", id).Scan(ctx)
	return sess, err
}

// SessionsOf returns the user's sessions that are live at t (not revoked,
// not expired), newest first.
func (s *Store) SessionsOf(ctx context.Context, userID int64, t time.Time) ([]Session, error) {
	out := []Session{}
	err := s.db.NewSelect().Model(&out).
		Where("s.user_id = ? AND s.revoked_at IS NULL AND s.expires_at > ?", userID, dbTime(t)).
		OrderExpr("s.created_at DESC, s.id DESC").Scan(ctx)
	if err != nil {
		return nil, wrap("sessions of user", err)
	}
	return out, nil
}

// RevokeSession revokes the user's session id at t. ErrNotFound when it is
// not the user's, or not live at t (revoked already, expired): revoking
// twice changes nothing.
func (s *Store) RevokeSession(ctx context.Context, userID, id int64, t time.Time) error {
	t = dbTime(t)
	res, err := s.db.NewUpdate().Model((*Session)(nil)).Set("revoked_at = ?", t).
		Where("id = ? AND user_id = ? AND revoked_at IS NULL AND expires_at > ?", id, userID, t).Exec(ctx)
	if err != nil {
		return wrap("revoke session", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap("revoke session", err)
	} else if n == 0 {
		return wrap("revoke session", ErrNotFound)
	}
	return nil
}

// ChangePassword stores the user's new password hash and revokes every
// other live session of the user at t, in one transaction, and returns the
// ids of the sessions it revoked. keep is the session that stays (0 for
// none). ErrNotFound when the user does not exist.
func (s *Store) ChangePassword(ctx context.Context, userID int64, hash string, keep int64, t time.Time) ([]int64, error) {
	t = dbTime(t)
	var revoked []int64
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		revoked = nil
		res, err := tx.NewUpdate().Model((*User)(nil)).Set("password_hash = ?", hash).Where("id = ?", userID).Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		if err := tx.NewSelect().Model((*Session)(nil)).Column("id").
			Where("user_id = ? AND id <> ? AND revoked_at IS NULL", userID, keep).
			Order("id").Scan(ctx, &revoked); err != nil {
			return err
		}
		if len(revoked) == 0 {
			return nil
		}
		_, err = tx.NewUpdate().Model((*Session)(nil)).Set("revoked_at = ?", t).
			Where("id IN (?)", bun.List(revoked)).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, wrap("change password", err)
	}
	return revoked, nil
}

// RevokedSince returns the sessions revoked after since, oldest first: the
// ones whose access tokens may still be unexpired.
func (s *Store) RevokedSince(ctx context.Context, since time.Time) ([]Revocation, error) {
	out := []Revocation{}
	err := s.db.NewSelect().Model((*Session)(nil)).Column("id", "user_id", "revoked_at").
		Where("revoked_at IS NOT NULL AND revoked_at > ?", dbTime(since)).
		Order("revoked_at", "id").Scan(ctx, &out)
	if err != nil {
		return nil, wrap("revoked sessions", err)
	}
	for i := range out {
		out[i].RevokedAt = out[i].RevokedAt.UTC()
	}
	return out, nil
}

// PruneSessions deletes the sessions (and their spent tokens) that can
// matter no more: expired, or revoked, before t.
func (s *Store) PruneSessions(ctx context.Context, t time.Time) (int64, error) {
	t = dbTime(t)
	res, err := s.db.NewDelete().Model((*Session)(nil)).
		Where("expires_at <= ? OR revoked_at <= ?", t, t).Exec(ctx)
	if err != nil {
		return 0, wrap("prune sessions", err)
	}
	n, err := res.RowsAffected()
	return n, wrap("prune sessions", err)
}

// UpdateUserName sets the user's name and returns the user. ErrNotFound
// when it does not exist.
func (s *Store) UpdateUserName(ctx context.Context, userID int64, name string) (User, error) {
	res, err := s.db.NewUpdate().Model((*User)(nil)).Set("name = ?", name).Where("id = ?", userID).Exec(ctx)
	if err != nil {
		return User{}, wrap("update user name", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return User{}, wrap("update user name", err)
	} else if n == 0 {
		return User{}, wrap("update user name", ErrNotFound)
	}
	return s.UserByID(ctx, userID)
}
