// Package auth hashes passwords with argon2id and issues and verifies the
// HS256 JSON Web Tokens that WinDI Chat clients present on every request.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
)

// ErrInvalidToken reports a token that is malformed, forged, expired, or
// signed with anything but HS256.
var ErrInvalidToken = errors.New("invalid token")

// Argon2Params are the argon2id cost parameters. The defaults follow the
// OWASP recommendation (19 MiB, 2 passes, 1 lane), which costs about 30 ms on
// one core of the reference machine. Memory is allocated in full by every
// computation (a hash at registration, a check at login) while it runs, so
// concurrent computations cost Memory KiB each: Hasher bounds how many run
// at once.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultArgon2 is the cost used in production.
var DefaultArgon2 = Argon2Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// HashPassword returns a PHC-formatted argon2id hash of password.
func HashPassword(password string, p Argon2Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches hash. A malformed hash never
// matches.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// Tokens issues and verifies HS256 JWTs carrying the user id in `sub` and
// the session id in `sid`.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a Tokens signing with secret; tokens live for ttl.
func NewTokens(secret []byte, ttl time.Duration) *Tokens {
	return &Tokens{secret: secret, ttl: ttl, now: time.Now}
}

// WithClock returns a copy of t that reads the time from now (tests pass a
// fake clock).
func (t *Tokens) WithClock(now func() time.Time) *Tokens {
	c := *t
	c.now = now
	return &c
}

// TTL is how long an issued token stays valid.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Claims is what a verified access token says.
type Claims struct {
	UserID    int64
	SessionID int64
	ExpiresAt time.Time
}

// claims are the JWT's claims: the registered ones and `sid`.
type claims struct {
	jwt.RegisteredClaims
	SID int64 `json:"sid"`
}

// Issue returns a signed token for userID's session sessionID and its
// expiry.
func (t *Tokens) Issue(userID, sessionID int64) (string, time.Time, error) {
	return t.IssueAt(userID, sessionID, t.now(), t.ttl)
}

// IssueAt signs a token issued at iat that lives for ttl. Tests use it to
// mint expired tokens.
func (t *Tokens) IssueAt(userID, sessionID int64, iat time.Time, ttl time.Duration) (string, time.Time, error) {
	exp := iat.Add(ttl)
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(userID, 10),
			IssuedAt:  jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
		SID: sessionID,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return s, exp, nil
}

// Parse verifies token and returns its claims. Only HS256 with this secret
// is accepted, and `exp` and a positive `sid` are required (a token from
// before sessions existed cannot be revoked, so it is not accepted).
func (t *Tokens) Parse(token string) (Claims, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return Claims{}, fmt.Errorf("%w: bad subject", ErrInvalidToken)
	}
	if c.SID <= 0 {
		return Claims{}, fmt.Errorf("%w: no session", ErrInvalidToken)
	}
	return Claims{UserID: id, SessionID: c.SID, ExpiresAt: c.ExpiresAt.Time}, nil
}

// RefreshTokenBytes is the entropy of a refresh token.
const RefreshTokenBytes = 32

// NewRefreshToken returns a random refresh token (256 bits, base64url) and
// the hash under which it is stored.
func NewRefreshToken() (token, hash string) {
	b := make([]byte, RefreshTokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails; it panics if the source breaks
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashRefreshToken(token)
}

// HashRefreshToken is how a refresh token is stored and looked up: SHA-256,
// hex. A plain hash suffices (no salt, no stretching) because the token is
// 256 random bits, not a password someone chose: nothing can be guessed
// from the hash, and a database leak yields no usable token.
func HashRefreshToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
