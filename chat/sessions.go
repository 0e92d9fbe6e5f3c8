package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/repo"
)

// MaxDeviceChars is where a session's device name is cut (SPEC §12).
const MaxDeviceChars = 100

// DefaultRefreshTTL is the sliding lifetime of a refresh token (SPEC §9).
const DefaultRefreshTTL = 720 * time.Hour

// pruneEvery is how often a replica deletes the sessions that matter no
// more (expired, or revoked longer ago than an access token lives).
const pruneEvery = 10 * time.Minute

type userAgentKey struct{}

// WithUserAgent returns ctx carrying the caller's User-Agent, the device
// name of a login that names none.
func WithUserAgent(ctx context.Context, ua string) context.Context {
	return context.WithValue(ctx, userAgentKey{}, ua)
}

// deviceName is the session's device: the one the login named, else the
// User-Agent, trimmed and cut to MaxDeviceChars characters.
func deviceName(ctx context.Context, device string) string {
	d := strings.TrimSpace(device)
	if d == "" {
		ua, _ := ctx.Value(userAgentKey{}).(string)
		d = strings.TrimSpace(ua)
	}
	d = strings.ToValidUTF8(strings.ReplaceAll(d, "\x00", ""), "\uFFFD")
	if d == "" {
		return "unknown device"
	}
	if utf8.RuneCountInString(d) > MaxDeviceChars {
		d = string([]rune(d)[:MaxDeviceChars])
	}
	return d
}

// Principal is who an access token speaks for.
type Principal struct {
	UserID    int64
	SessionID int64
	ExpiresAt time.Time
}

// revocations is this replica's cache of revoked sessions whose access
// tokens may still be unexpired: session id -> the moment after which no
// access token of that session can be valid (revocation + access TTL).
// Checking a token against it costs no database query. It is filled by
// this replica's own revocations, by the broker's Revoked envelopes from
// the others, and from the database at start-up, after a broker
// reconnection and periodically (what a lost publication missed).
type revocations struct {
	mu    sync.RWMutex // guards until
	until map[int64]time.Time
}

func (r *revocations) add(until time.Time, ids ...int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if until.After(r.until[id]) {
			r.until[id] = until
		}
	}
}

func (r *revocations) has(id int64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.until[id]
	return ok
}

// prune forgets the sessions whose access tokens have all expired at now.
func (r *revocations) prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, until := range r.until {
		if !until.After(now) {
			delete(r.until, id)
		}
	}
}

func (r *revocations) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.until)
}

// LoginResult is a new access token and refresh token of a session.
type LoginResult struct {
	Token        string
	ExpiresIn    time.Duration
	UserID       int64
	SessionID    int64
	RefreshToken string
}

// startSession creates a session for the user and issues its tokens.
func (s *Service) startSession(ctx context.Context, userID int64, device string) (LoginResult, error) {
	refresh, hash := auth.NewRefreshToken()
	now := s.now()
	sess, err := s.store.CreateSession(ctx, userID, deviceName(ctx, device), hash, now, now.Add(s.refreshTTL))
	if err != nil {
		return LoginResult{}, classify(err)
	}
	return s.issue(sess, refresh)
}

func (s *Service) issue(sess repo.Session, refresh string) (LoginResult, error) {
	tok, exp, err := s.tokens.Issue(sess.UserID, sess.ID)
	if err != nil {
		return LoginResult{}, err
	}
	return LoginResult{Token: tok, ExpiresIn: exp.Sub(s.now()).Round(time.Second), UserID: sess.UserID,
		SessionID: sess.ID, RefreshToken: refresh}, nil
}

// errBadRefresh is the one answer to every refresh token that does not
// refresh: unknown, expired, revoked, reused.
func errBadRefresh() error {
	return errorf(CodeUnauthorized, "invalid, expired or revoked refresh token; log in again")
}

// Refresh rotates a refresh token: the session gets a new access token and
// a new refresh token, and the presented one is spent. A spent token
// presented again revokes its session (reuse detection: someone else holds
// a copy), on every replica; of concurrent refreshes with one token exactly
// one succeeds. Errors: CodeUnauthorized, CodeUnavailable.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (LoginResult, error) {
	if refreshToken == "" || hasNUL(refreshToken) {
		return LoginResult{}, errBadRefresh()
	}
	next, nextHash := auth.NewRefreshToken()
	now := s.now()
	sess, err := s.store.RotateRefresh(ctx, auth.HashRefreshToken(refreshToken), nextHash, now, now.Add(s.refreshTTL))
	switch {
	case errors.Is(err, repo.ErrRefreshReused):
		s.log.WarnContext(ctx, "refresh token reused; session revoked", "event", "session.reuse", "user_id", sess.UserID, "session_id", sess.ID)
		s.announceRevoked(ctx, sess.UserID, sess.ID)
		return LoginResult{}, errBadRefresh()
	case errors.Is(err, repo.ErrNotFound):
		return LoginResult{}, errBadRefresh()
	case err != nil:
		return LoginResult{}, classify(err)
	}
	s.log.InfoContext(ctx, "session refreshed", "event", "session.refreshed", "user_id", sess.UserID, "session_id", sess.ID)
	return s.issue(sess, next)
}

// Authenticate verifies an access token: signature, expiry, a session this
// replica does not know as revoked, and a user that still exists (looked
// up at most once a minute per user and replica): no database query for
// most requests. Errors: CodeUnauthorized, CodeSessionRevoked,
// CodeUnavailable.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	c, err := s.tokens.Parse(token)
	if err != nil {
		return Principal{}, errorf(CodeUnauthorized, "invalid or expired token")
	}
	if s.revoked.has(c.SessionID) {
		return Principal{}, errorf(CodeSessionRevoked, "the session was revoked; log in again")
	}
	if !s.known.has(c.UserID, s.now()) {
		if _, err := s.store.UserByID(ctx, c.UserID); err != nil {
			if errors.Is(err, repo.ErrNotFound) {
				return Principal{}, errorf(CodeUnauthorized, "invalid or expired token")
			}
			return Principal{}, classify(err)
		}
		s.known.add(c.UserID, s.now())
	}
	return Principal{UserID: c.UserID, SessionID: c.SessionID, ExpiresAt: c.ExpiresAt}, nil
}

// knownUserFor is how long a replica trusts that a user it found exists,
// so that a busy user's requests cost no database query each; users are
// never deleted through the API, only by an operator, whose deletion
// takes effect within it.
const knownUserFor = time.Minute

// knownUsers remembers the users whose existence a token check confirmed
// recently: user id -> when.
type knownUsers struct {
	mu   sync.Mutex // guards seen
	seen map[int64]time.Time
}

func (k *knownUsers) has(id int64, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	at, ok := k.seen[id]
	return ok && now.Sub(at) < knownUserFor && !now.Before(at)
}

func (k *knownUsers) add(id int64, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seen[id] = now
}

// prune forgets the entries that no longer count.
func (k *knownUsers) prune(now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, at := range k.seen {
		if now.Sub(at) >= knownUserFor || now.Before(at) {
			delete(k.seen, id)
		}
	}
}

// SessionRevoked reports whether this replica knows session id as revoked
// (WebSockets check it when they sweep).
func (s *Service) SessionRevoked(id int64) bool { return s.revoked.has(id) }

// Session is one of a user's sessions as its owner sees it.
type Session struct {
	repo.Session
	Current bool
}

// Sessions lists the user's live sessions, newest first; current marks the
// asking one.
func (s *Service) Sessions(ctx context.Context, userID, current int64) ([]Session, error) {
	ss, err := s.store.SessionsOf(ctx, userID, s.now())
	if err != nil {
		return nil, classify(err)
	}
	out := make([]Session, len(ss))
	for i, x := range ss {
		out[i] = Session{Session: x, Current: x.ID == current}
	}
	return out, nil
}

// RevokeSession revokes one of the user's sessions on every replica.
// CodeNotFound when it is not the user's or not live.
func (s *Service) RevokeSession(ctx context.Context, userID, sessionID int64) error {
	err := s.store.RevokeSession(ctx, userID, sessionID, s.now())
	if errors.Is(err, repo.ErrNotFound) {
		return errorf(CodeNotFound, "session %d not found", sessionID)
	}
	if err != nil {
		return classify(err)
	}
	s.log.InfoContext(ctx, "session revoked", "event", "session.revoked", "user_id", userID, "session_id", sessionID)
	s.announceRevoked(ctx, userID, sessionID)
	return nil
}

// Logout revokes the caller's own session. A session that went meanwhile
// (revoked elsewhere, expired) is logged out already.
func (s *Service) Logout(ctx context.Context, p Principal) error {
	if err := s.RevokeSession(ctx, p.UserID, p.SessionID); err != nil && CodeOf(err) != CodeNotFound {
		return err
	}
	return nil
}

// ChangePassword checks the current password, stores the new one and
// revokes every other session of the user, on every replica; the caller's
// session stays. Errors: CodeInvalid (new password), CodeUnauthorized
// (wrong current password; nothing changes), CodeRateLimited (the per-email
// login limit counts these attempts too), CodeUnavailable.
func (s *Service) ChangePassword(ctx context.Context, p Principal, current, next string) error {
	if n := utf8.RuneCountInString(next); n < MinPasswordChars || n > MaxPasswordChars {
		return invalid("new_password", "new_password must be %d..%d characters", MinPasswordChars, MaxPasswordChars)
	}
	u, err := s.store.UserByID(ctx, p.UserID)
	if err != nil {
		return classify(err)
	}
	// A stolen access token must not become a password oracle.
	if err := s.limit(ctx, emailKey("login", u.Email), s.limits.LoginPerEmail, time.Minute); err != nil {
		return err
	}
	ok, err := s.hasher.Check(ctx, u.PasswordHash, current)
	if err != nil {
		return hashFailed(err)
	}
	if !ok {
		s.log.InfoContext(ctx, "password change refused", "event", "password.refused", "user_id", u.ID)
		return errorf(CodeUnauthorized, "the current password is wrong")
	}
	hash, err := s.hasher.Hash(ctx, next)
	if err != nil {
		return hashFailed(err)
	}
	revoked, err := s.store.ChangePassword(ctx, u.ID, hash, p.SessionID, s.now())
	if err != nil {
		return classify(err)
	}
	s.log.InfoContext(ctx, "password changed", "event", "password.changed", "user_id", u.ID, "revoked_sessions", len(revoked))
	s.announceRevoked(ctx, u.ID, revoked...)
	return nil
}

// UpdateName changes the user's name (1..100 characters, trimmed).
func (s *Service) UpdateName(ctx context.Context, userID int64, name string) (repo.User, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameChars {
		return repo.User{}, invalid("name", "name must be 1..%d characters", MaxNameChars)
	}
	if hasNUL(name) {
		return repo.User{}, invalid("name", "name must not contain NUL characters")
	}
	u, err := s.store.UpdateUserName(ctx, userID, name)
	if err != nil {
		return repo.User{}, classify(err)
	}
	s.log.InfoContext(ctx, "user renamed", "event", "user.renamed", "user_id", userID)
	return u, nil
}

// User returns any user, for its public profile. CodeNotFound when there
// is none.
func (s *Service) User(ctx context.Context, id int64) (repo.User, error) {
	u, err := s.store.UserByID(ctx, id)
	if err != nil {
		return repo.User{}, classify(err)
	}
	return u, nil
}

// announceRevoked puts the sessions into this replica's cache at once and
// tells every replica (this one included, whose hub closes the sessions'
// WebSockets with 4401) through the broker. A replica that misses the
// publication reads the revocation from the database at its next reload.
func (s *Service) announceRevoked(ctx context.Context, userID int64, ids ...int64) {
	if len(ids) == 0 {
		return
	}
	s.revoked.add(s.now().Add(s.tokens.TTL()), ids...)
	env := event.Envelope{Kind: event.Revoked, UserID: userID, Sessions: ids}
	s.publish(context.WithoutCancel(ctx), env, event.SessionsChannel)
}

// NoteRevoked records sessions another replica revoked (the hub calls it
// for each Revoked envelope).
func (s *Service) NoteRevoked(ids ...int64) {
	s.revoked.add(s.now().Add(s.tokens.TTL()), ids...)
}

// LoadRevocations reads the sessions revoked within the last access-token
// lifetime from the database into the cache and forgets what has expired.
// It runs at start-up (before the server takes requests), after the broker
// reconnects, and periodically; every pruneEvery it also deletes the
// sessions nobody needs any more.
func (s *Service) LoadRevocations(ctx context.Context) error {
	now := s.now()
	ttl := s.tokens.TTL()
	rs, err := s.store.RevokedSince(ctx, now.Add(-ttl))
	if err != nil {
		return fmt.Errorf("chat: load revocations: %w", err)
	}
	for _, r := range rs {
		s.revoked.add(r.RevokedAt.Add(ttl), r.SessionID)
	}
	s.revoked.prune(now)
	s.known.prune(now)
	s.pruneMu.Lock()
	due := now.Sub(s.prunedAt) >= pruneEvery
	if due {
		s.prunedAt = now
	}
	s.pruneMu.Unlock()
	if due {
		if n, err := s.store.PruneSessions(ctx, now.Add(-ttl)); err != nil {
			s.log.WarnContext(ctx, "session prune failed", "event", "session.prune_failed", "err", err)
		} else if n > 0 {
			s.log.InfoContext(ctx, "old sessions pruned", "event", "session.pruned", "sessions", n)
		}
	}
	return nil
}

// RevokedCount is how many sessions this replica's cache holds.
func (s *Service) RevokedCount() int { return s.revoked.len() }
