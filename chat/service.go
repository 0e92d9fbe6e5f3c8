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
	"slices"
	"strings"
	"sync"
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
	LoginPerEmail int // login attempts per email per minute
	LoginPerIP    int // login attempts per client IP (IPv6: per /64) per minute
	RegisterPerIP int // registrations per client IP (IPv6: per /64) per minute
	UserSendRate  int // REST sends per user per second
}

type clientIPKey struct{}

// WithClientIP returns ctx carrying the caller's IP address, for per-IP
// limits.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

func clientIP(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

// Config holds the service's dependencies; Store, Tokens and Broker are
// required.
type Config struct {
	Store  *repo.Store
	Tokens *auth.Tokens
	Argon2 auth.Argon2Params
	// HashSlots bounds the argon2id computations running at once (each
	// holds Argon2.Memory); 0 means GOMAXPROCS. HashWait is how long a
	// registration or login waits for a slot before it is answered
	// CodeUnavailable; 0 means auth.DefaultHashWait.
	HashSlots int
	HashWait  time.Duration
	Logger    *slog.Logger
	Broker    Broker
	Limits    Limits
	Metrics   *metrics.Metrics
	Sequencer SequencerConfig
	// RefreshTTL is the sliding lifetime of a refresh token; 0 means
	// DefaultRefreshTTL. The access tokens' lifetime is Tokens.TTL.
	RefreshTTL time.Duration
	// Now is the clock of sessions and tokens; nil means time.Now. Tests
	// pass a fake one (the Tokens get it too).
	Now func() time.Time
}

// Service applies the chat rules. It is safe for concurrent use.
type Service struct {
	store     *repo.Store
	tokens    *auth.Tokens
	hasher    *auth.Hasher
	log       *slog.Logger
	broker    Broker
	hits      HitCounter
	limits    Limits
	metrics   *metrics.Metrics
	seq       *sequencer
	dummyHash string // compared against on unknown emails so both failures cost the same

	now        func() time.Time
	refreshTTL time.Duration
	revoked    *revocations
	known      *knownUsers
	pruneMu    sync.Mutex // guards prunedAt
	prunedAt   time.Time
}

// New returns a Service and starts its sequencer; Close stops it.
func New(cfg Config) (*Service, error) {
	s := &Service{
		store: cfg.Store, tokens: cfg.Tokens, hasher: auth.NewHasher(cfg.Argon2, cfg.HashSlots, cfg.HashWait), log: cfg.Logger,
		broker: cfg.Broker, hits: cfg.Broker, limits: cfg.Limits, metrics: cfg.Metrics,
	}
	if s.store == nil || s.tokens == nil || s.broker == nil {
		return nil, fmt.Errorf("chat: Store, Tokens and Broker are required")
	}
	s.now, s.refreshTTL = cfg.Now, cfg.RefreshTTL
	if s.now == nil {
		s.now = time.Now
	} else {
		s.tokens = s.tokens.WithClock(s.now)
	}
	if s.refreshTTL <= 0 {
		s.refreshTTL = DefaultRefreshTTL
	}
	s.revoked = &revocations{until: map[int64]time.Time{}}
	s.known = &knownUsers{seen: map[int64]time.Time{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "chat")
	h, err := auth.HashPassword("not a real password", cfg.Argon2)
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

// hasNUL reports whether s holds a NUL byte, which no stored string may:
// the storage layer refuses such strings (a query fails, which would be a
// 500) and PostgreSQL text cannot hold one. Free text is checked here so
// that it is refused as invalid, or, in lookups, matches nothing.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// Register creates an account. Errors: CodeInvalid (naming every bad
// field), CodeRateLimited (too many registrations from the caller's
// address), CodeUnavailable (storage down, or password hashing at capacity:
// retry after RetryAfter), CodeEmailTaken.
func (s *Service) Register(ctx context.Context, name, email, password string) (repo.User, error) {
	var bad fieldErrors
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameChars {
		bad.add(invalid("name", "name must be 1..%d characters", MaxNameChars))
	} else if hasNUL(name) {
		bad.add(invalid("name", "name must not contain NUL characters"))
	}
	raw := email
	email = NormalizeEmail(email)
	if err := validEmail(email); err != nil {
		bad.add(err)
	}
	if n := utf8.RuneCountInString(password); n < MinPasswordChars || n > MaxPasswordChars {
		bad.add(invalid("password", "password must be %d..%d characters", MinPasswordChars, MaxPasswordChars))
	}
	if err := bad.err(); err != nil {
		return repo.User{}, err
	}
	// Counted before the hash, so that concurrent requests cannot all slip
	// under the limit while the first ones are still hashing.
	if ip := clientIP(ctx); ip != "" {
		if err := s.limit(ctx, ipKey("register", ip), s.limits.RegisterPerIP, time.Minute); err != nil {
			return repo.User{}, err
		}
	}
	// An account stored before NFKC normalization keeps its old form; the
	// new form of the same address must not register beside it.
	if old := legacyEmail(raw); old != email && !hasNUL(old) {
		if _, err := s.store.UserByEmail(ctx, old); err == nil {
			return repo.User{}, emailTaken()
		} else if !errors.Is(err, repo.ErrNotFound) {
			return repo.User{}, classify(err)
		}
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return repo.User{}, hashFailed(err)
	}
	u, err := s.store.CreateUser(ctx, name, email, hash)
	if errors.Is(err, repo.ErrConflict) {
		return repo.User{}, emailTaken()
	}
	if err != nil {
		return repo.User{}, classify(err)
	}
	s.log.InfoContext(ctx, "user registered", "event", "user.registered", "user_id", u.ID)
	return u, nil
}

func emailTaken() error {
	return &Error{Code: CodeEmailTaken, Field: "email", Message: "email is already registered"}
}

// hashFailed turns a hashing failure into the caller's answer: busy is
// "unavailable, retry in a second"; a request that went away gets its
// context's error.
func hashFailed(err error) error {
	if errors.Is(err, auth.ErrBusy) {
		return &Error{Code: CodeUnavailable, Message: "the server is busy; retry shortly", RetryAfter: time.Second}
	}
	return err
}

// Login checks credentials, starts a session on device (empty: the
// User-Agent of ctx, see WithUserAgent) and issues its access and refresh
// tokens. An unknown email and a wrong
// password fail identically (CodeUnauthorized) and cost the same time.
// Every attempt counts against the per-email and per-IP limits before the
// password is hashed (CodeRateLimited once a limit is used up, even for the
// right password); CodeUnavailable when hashing stays at capacity.
func (s *Service) Login(ctx context.Context, email, password, device string) (LoginResult, error) {
	raw := email
	email = NormalizeEmail(email)
	// Counting first is what makes the limits hold under concurrency: a
	// burst of attempts for one email or from one address gets no more
	// hashes than the limit, however many arrive at once.
	keys := []struct {
		key string
		max int
	}{{emailKey("login", email), s.limits.LoginPerEmail}}
	if ip := clientIP(ctx); ip != "" {
		keys = append(keys, struct {
			key string
			max int
		}{ipKey("login", ip), s.limits.LoginPerIP})
	}
	var limited error
	for _, k := range keys {
		if err := s.limit(ctx, k.key, k.max, time.Minute); err != nil && limited == nil {
			limited = err
		}
	}
	if limited != nil {
		return LoginResult{}, limited
	}
	u, err := s.userByEmail(ctx, email, legacyEmail(raw))
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		return LoginResult{}, classify(err)
	}
	hash := s.dummyHash
	if err == nil {
		hash = u.PasswordHash
	}
	ok, herr := s.hasher.Check(ctx, hash, password)
	if herr != nil {
		return LoginResult{}, hashFailed(herr)
	}
	if err != nil || !ok {
		s.log.InfoContext(ctx, "login failed", "event", "login.failed", "user_id", u.ID)
		return LoginResult{}, errorf(CodeUnauthorized, "incorrect email or password")
	}
	res, err := s.startSession(ctx, u.ID, device)
	if err != nil {
		return LoginResult{}, err
	}
	s.log.InfoContext(ctx, "login ok", "event", "login.ok", "user_id", u.ID, "session_id", res.SessionID)
	return res, nil
}

// userByEmail finds the account of a normalized address, or of its
// pre-NFKC form (old accounts), or returns repo.ErrNotFound. No stored
// address holds a NUL byte (validEmail), so such input is not looked up.
func (s *Service) userByEmail(ctx context.Context, email, legacy string) (repo.User, error) {
	if hasNUL(email) {
		return repo.User{}, repo.ErrNotFound
	}
	u, err := s.store.UserByEmail(ctx, email)
	if errors.Is(err, repo.ErrNotFound) && legacy != email {
		return s.store.UserByEmail(ctx, legacy)
	}
	return u, err
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
	if max <= 0 {
		return nil
	}
	n, err := s.hits.Hit(ctx, key, window)
	if err != nil {
		s.metrics.BrokerError("hit")
		s.log.WarnContext(ctx, "rate limit check failed; allowing", "event", "broker.error", "op", "hit", "err", err)
		return nil
	}
	// After counting, the window may hold max (this hit included).
	if n <= int64(max) {
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

// Me returns the user.
func (s *Service) Me(ctx context.Context, userID int64) (repo.User, error) {
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		return repo.User{}, classify(err)
	}
	return u, nil
}

// SearchUsers finds users by a prefix of their name or by their exact
// email (normalized as registration stores it, the pre-NFKC form
// included): never a listing of everyone, so an empty q is CodeInvalid.
func (s *Service) SearchUsers(ctx context.Context, q string, limit int) ([]repo.User, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, invalid("q", "q must name a name prefix or an email address")
	}
	if hasNUL(q) {
		return []repo.User{}, nil // no name or email holds one
	}
	us, err := s.store.SearchUsers(ctx, q, NormalizeEmail(q), limit)
	if err != nil {
		return nil, classify(err)
	}
	if old := legacyEmail(q); old != NormalizeEmail(q) {
		more, err := s.store.SearchUsers(ctx, "", old, limit)
		if err != nil {
			return nil, classify(err)
		}
		for _, u := range more {
			if len(us) < limit && !slices.ContainsFunc(us, func(x repo.User) bool { return x.ID == u.ID }) {
				us = append(us, u)
			}
		}
	}
	return us, nil
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
