package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/windi-chat/windi/auth"
)

var cheap = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}

func TestPasswordRoundTrip(t *testing.T) {
	h, err := auth.HashPassword("correct horse", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$") {
		t.Fatalf("got hash %q, want an argon2id PHC string", h)
	}
	if !auth.CheckPassword(h, "correct horse") {
		t.Error("the right password did not match")
	}
	if auth.CheckPassword(h, "correct horsf") {
		t.Error("a wrong password matched")
	}
	h2, _ := auth.HashPassword("correct horse", cheap)
	if h == h2 {
		t.Error("two hashes of one password are equal; the salt is not random")
	}
	for _, bad := range []string{"", "$argon2id$", "$bcrypt$x$y$z$w", h[:len(h)-4] + "!!!!"} {
		if auth.CheckPassword(bad, "correct horse") {
			t.Errorf("malformed hash %q matched", bad)
		}
	}
}

func TestTokens(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tk := auth.NewTokens(secret, time.Hour)
	s, exp, err := tk.Issue(42, 7)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tk.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != 42 || c.SessionID != 7 || !c.ExpiresAt.Equal(exp.Truncate(time.Second)) {
		t.Errorf("got %+v, want user 42, session 7, expiry %v", c, exp)
	}

	expired, _, _ := tk.IssueAt(42, 7, time.Now().Add(-2*time.Hour), time.Hour)
	other, _, _ := auth.NewTokens([]byte("another secret, also 32 bytes..."), time.Hour).Issue(42, 7)
	noSID, _, _ := tk.IssueAt(42, 0, time.Now(), time.Hour)
	claims := jwt.RegisteredClaims{Subject: "42", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), IssuedAt: jwt.NewNumericDate(time.Now())}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs256, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ecKey)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims).SignedString(secret)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "42"}).SignedString(secret)
	legacy, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	badSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "abc", ExpiresAt: claims.ExpiresAt}).SignedString(secret)

	for name, tok := range map[string]string{
		"expired": expired, "other secret": other, "alg none": none, "RS256": rs256, "ES256": es256,
		"HS512": hs512, "no exp": noExp, "bad sub": badSub, "garbage": "abc.def.ghi", "empty": "",
		"no sid": noSID, "legacy (sub, no sid)": legacy,
	} {
		if _, err := tk.Parse(tok); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: got err %v, want ErrInvalidToken", name, err)
		}
	}
}

// BenchmarkHashPassword measures the production argon2id cost on this
// machine (documented in the README).
func BenchmarkHashPassword(b *testing.B) {
	for b.Loop() {
		if _, err := auth.HashPassword("correct horse battery staple", auth.DefaultArgon2); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTokensClock checks expiry against an injected clock: valid up to
// exp, invalid from then on.
func TestTokensClock(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tk := auth.NewTokens([]byte("0123456789abcdef0123456789abcdef"), 15*time.Minute).WithClock(func() time.Time { return now })
	s, exp, err := tk.Issue(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(15 * time.Minute); !exp.Equal(want) {
		t.Errorf("got expiry %v, want %v", exp, want)
	}
	now = exp.Add(-time.Second)
	if _, err := tk.Parse(s); err != nil {
		t.Errorf("a second before expiry: got %v, want valid", err)
	}
	now = exp.Add(time.Second)
	if _, err := tk.Parse(s); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a second after expiry: got %v, want ErrInvalidToken", err)
	}
}

func TestRefreshTokens(t *testing.T) {
	a, ha := auth.NewRefreshToken()
	b, hb := auth.NewRefreshToken()
	if a == b || ha == hb {
		t.Fatal("two refresh tokens are equal")
	}
	if len(a) != 43 || len(ha) != 64 {
		t.Errorf("got lengths %d and %d, want 43 (256 bits, base64url) and 64 (hex SHA-256)", len(a), len(ha))
	}
	if auth.HashRefreshToken(a) != ha || strings.Contains(ha, a) {
		t.Error("hash does not match its token, or contains it")
	}
}
