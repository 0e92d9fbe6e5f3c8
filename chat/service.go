// Package chat holds WinDI Chat's rules in one place: who may read, send to,
// join or leave a chat, how sends are deduplicated and numbered, and how read
// watermarks move. REST handlers and WebSocket connections both call it, so a
// message sent either way follows the same path.
package chat

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/metrics"
	"github.com/windi-chat/windi/repo"
)

// Limits from SPEC §5.
const (
	MaxTextChars     = 4096
	MaxNameChars     = 100
	MaxEmailBytes    = 254
	MinPasswordChars = 8
	MaxPasswordChars = 128
	MaxClientMsgID   = 64
	MaxGroupMembers  = 1000
)

// HitCounter counts events in fixed windows, shared by every replica (the
// broker); rate limits are built on it.
type HitCounter interface {
	Hit(ctx context.Context, key string, window time.Duration) (int64, error)
	Hits(ctx context.Context, key string, window time.Duration) (int64, error)
}

// Limits are the service's abuse limits; zero turns one off.
type Limits struct {
	LoginPerEmail int // failed login attempts per email per minute
	LoginPerIP    int // failed login attempts per client IP per minute
	UserSendRate  int // REST sends per user per second
}

type ipKey struct{}

// WithClientIP returns ctx carrying the caller's IP address, for per-IP
// limits.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, ipKey{}, ip)
}

func clientIP(ctx context.Context) string {
	ip, _ := ctx.Value(ipKey{}).(string)
	return ip
}

// Config holds the service's dependencies; Store, Tokens and Broker are
// required.
type Config struct {
	Store     *repo.Store
	Tokens    *auth.Tokens
	Argon2    auth.Argon2Params
	Logger    *slog.Logger
	Broker    Broker
	Limits    Limits
	Metrics   *metrics.Metrics
	Sequencer SequencerConfig
}

// Service applies the chat rules. It is safe for concurrent use.
type Service struct {
	store     *repo.Store
	tokens    *auth.Tokens
	argon     auth.Argon2Params
	log       *slog.Logger
	broker    Broker
	hits      HitCounter
	limits    Limits
	metrics   *metrics.Metrics
	seq       *sequencer
	dummyHash string // compared against on unknown emails so both failures cost the same
}

// New returns a Service and starts its sequencer; Close stops it.
func New(cfg Config) (*Service, error) {
	s := &Service{
		store: cfg.Store, tokens: cfg.Tokens, argon: cfg.Argon2, log: cfg.Logger,
		broker: cfg.Broker, hits: cfg.Broker, limits: cfg.Limits, metrics: cfg.Metrics,
	}
	if s.store == nil || s.tokens == nil || s.broker == nil {
		return nil, fmt.Errorf("chat: Store, Tokens and Broker are required")
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "chat")
	h, err := auth.HashPassword("not a real password", s.argon)
	if err != nil {
		return nil, err
	}
	s.dummyHash = h
	s.seq = newSequencer(s, cfg.Sequencer.withDefaults())
	return s, nil
}

// Close stops accepting sends and waits until those already queued are
// committed and published.
func (s *Service) Close() { s.seq.close() }

// Tokens returns the token issuer and verifier.
func (s *Service) Tokens() *auth.Tokens { return s.tokens }

// NormalizeEmail trims and lowercases an email address.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// hasNUL reports whether s holds a NUL byte, which no stored string may:
// the storage layer refuses such strings (a query fails, which would be a
// 500) and PostgreSQL text cannot hold one. Free text is checked here so
// that it is refused as invalid, or, in lookups, matches nothing.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// Register creates an account. Errors: CodeInvalid, CodeEmailTaken.
func (s *Service) Register(ctx context.Context, name, email, password string) (repo.User, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameChars {
		return repo.User{}, invalid("name", "name must be 1..%d characters", MaxNameChars)
	}
	if hasNUL(name) {
		return repo.User{}, invalid("name", "name must not contain NUL characters")
	}
	email = NormalizeEmail(email)
	if err := validEmail(email); err != nil {
		return repo.User{}, err
	}
	if n := utf8.RuneCountInString(password); n < MinPasswordChars || n > MaxPasswordChars {
		return repo.User{}, invalid("password", "password must be %d..%d characters", MinPasswordChars, MaxPasswordChars)
	}
	hash, err := auth.HashPassword(password, s.argon)
	if err != nil {
		return repo.User{}, err
	}
	u, err := s.store.CreateUser(ctx, name, email, hash)
	if errors.Is(err, repo.ErrConflict) {
		return repo.User{}, &Error{Code: CodeEmailTaken, Field: "email", Message: "email is already registered"}
	}
	if err != nil {
		return repo.User{}, classify(err)
	}
	s.log.InfoContext(ctx, "user registered", "event", "user.registered", "user_id", u.ID)
	return u, nil
}

func validEmail(email string) error {
	if len(email) == 0 || len(email) > MaxEmailBytes {
		return invalid("email", "email must be a valid address up to %d bytes", MaxEmailBytes)
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return invalid("email", "email must be a valid address")
	}
	return nil
}

// LoginResult is an issued access token.
type LoginResult struct {
	Token     string
	ExpiresIn time.Duration
	UserID    int64
}

// Login checks credentials and issues a token. An unknown email and a wrong
// password fail identically (CodeUnauthorized) and cost the same time.
func (s *Service) Login(ctx context.Context, email, password string) (LoginResult, error) {
	email = NormalizeEmail(email)
	// Failed attempts count; once an email or an address has used up its
	// failures for the minute, even the right password waits.
	keys := []struct {
		key string
		max int
	}{{"login:email:" + email, s.limits.LoginPerEmail}}
	if ip := clientIP(ctx); ip != "" {
		keys = append(keys, struct {
			key string
			max int
		}{"login:ip:" + ip, s.limits.LoginPerIP})
	}
	for _, k := range keys {
		if err := s.blocked(ctx, k.key, k.max, time.Minute); err != nil {
			return LoginResult{}, err
		}
	}
	u, err := repo.User{}, repo.ErrNotFound // no registered address has a NUL byte (validEmail)
	if !hasNUL(email) {
		u, err = s.store.UserByEmail(ctx, email)
	}
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		return LoginResult{}, classify(err)
	}
	hash := s.dummyHash
	if err == nil {
		hash = u.PasswordHash
	}
	ok := auth.CheckPassword(hash, password)
	if err != nil || !ok {
		s.log.InfoContext(ctx, "login failed", "event", "login.failed", "user_id", u.ID)
		for _, k := range keys {
			if k.max > 0 {
				_ = s.limit(ctx, k.key, k.max, time.Minute) // count the failure; the next attempt is refused
			}
		}
		return LoginResult{}, errorf(CodeUnauthorized, "incorrect email or password")
	}
	tok, exp, err := s.tokens.Issue(u.ID)
	if err != nil {
		return LoginResult{}, err
	}
	s.log.InfoContext(ctx, "login ok", "event", "login.ok", "user_id", u.ID)
	return LoginResult{Token: tok, ExpiresIn: time.Until(exp).Round(time.Second), UserID: u.ID}, nil
}

// AllowUserSend applies the per-user send limit of REST sends
// (CodeRateLimited); WebSocket connections have their own per-connection
// limit.
func (s *Service) AllowUserSend(ctx context.Context, userID int64) error {
	return s.limit(ctx, fmt.Sprintf("send:user:%d", userID), s.limits.UserSendRate, time.Second)
}

// limit counts one hit on key and refuses once the window holds more than
// max; max 0 is off. A broker failure lets the request through: limits
// protect the service, they must not take it down.
func (s *Service) limit(ctx context.Context, key string, max int, window time.Duration) error {
	return s.rate(ctx, key, max, window, true)
}

// blocked refuses when key already holds max hits in the current window,
// without counting.
func (s *Service) blocked(ctx context.Context, key string, max int, window time.Duration) error {
	return s.rate(ctx, key, max, window, false)
}

// rate implements limit (count: hit, then compare) and blocked (peek).
func (s *Service) rate(ctx context.Context, key string, max int, window time.Duration, count bool) error {
	if max <= 0 {
		return nil
	}
	hits := s.hits.Hits
	if count {
		hits = s.hits.Hit
	}
	n, err := hits(ctx, key, window)
	if err != nil {
		s.metrics.BrokerError("hit")
		s.log.WarnContext(ctx, "rate limit check failed; allowing", "event", "broker.error", "op", "hit", "err", err)
		return nil
	}
	// After counting, the window may hold max (this hit included); before,
	// it must leave room for one more.
	if count && n <= int64(max) || !count && n < int64(max) {
		return nil
	}
	return s.limited(ctx, key, window)
}

func (s *Service) limited(ctx context.Context, key string, window time.Duration) error {
	retry := window - time.Duration(time.Now().UnixNano()%int64(window))
	parts := strings.SplitN(key, ":", 3)
	s.log.InfoContext(ctx, "rate limited", "event", "rate_limited", "limit", parts[0]+":"+parts[1])
	return &Error{Code: CodeRateLimited, Message: "too many requests; retry later", RetryAfter: retry}
}

// Authenticate verifies a bearer token and that its user still exists.
func (s *Service) Authenticate(ctx context.Context, token string) (int64, time.Time, error) {
	id, exp, err := s.tokens.Parse(token)
	if err != nil {
		return 0, time.Time{}, errorf(CodeUnauthorized, "invalid or expired token")
	}
	if _, err := s.store.UserByID(ctx, id); err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return 0, time.Time{}, errorf(CodeUnauthorized, "invalid or expired token")
		}
		return 0, time.Time{}, classify(err)
	}
	return id, exp, nil
}

// Me returns the user.
func (s *Service) Me(ctx context.Context, userID int64) (repo.User, error) {
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		return repo.User{}, classify(err)
	}
	return u, nil
}

// SearchUsers finds users by a prefix of name or email.
func (s *Service) SearchUsers(ctx context.Context, q string, limit int) ([]repo.User, error) {
	if hasNUL(q) {
		return nil, nil // no name or email holds one
	}
	us, err := s.store.SearchUsers(ctx, strings.TrimSpace(q), limit)
	return us, classify(err)
}

// classify turns store errors into service errors: sentinels into codes, a
// lost connection into CodeUnavailable, anything else passes through.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ce *Error
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, repo.ErrNotFound):
		return errorf(CodeNotFound, "not found")
	case isUnavailable(err):
		return &Error{Code: CodeUnavailable, Message: "storage is unavailable; nothing was stored, retry"}
	}
	return err
}

// errorIs is errors.Is for a nil-able err.
func errorIs(err, target error) bool { return err != nil && errors.Is(err, target) }

func isUnavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, repo.ErrUnavailable)
}

// dedupIDs returns ids without duplicates and without skip, in order.
func dedupIDs(ids []int64, skip int64) []int64 {
	seen := make(map[int64]bool, len(ids))
	out := make([]int64, 0, len(ids))
	for _, id := range ids {
		if id != skip && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
