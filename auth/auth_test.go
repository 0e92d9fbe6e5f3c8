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
	s, exp, err := tk.Issue(42)
	if err != nil {
		t.Fatal(err)
	}
	id, gotExp, err := tk.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if id != 42 || !gotExp.Equal(exp.Truncate(time.Second)) {
		t.Errorf("got (%d, %v), want (42, %v)", id, gotExp, exp)
	}

	expired, _, _ := tk.IssueAt(42, time.Now().Add(-2*time.Hour), time.Hour)
	other, _, _ := auth.NewTokens([]byte("another secret, also 32 bytes..."), time.Hour).Issue(42)
	claims := jwt.RegisteredClaims{Subject: "42", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)), IssuedAt: jwt.NewNumericDate(time.Now())}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs256, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ecKey)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims).SignedString(secret)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "42"}).SignedString(secret)
	badSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "abc", ExpiresAt: claims.ExpiresAt}).SignedString(secret)

	for name, tok := range map[string]string{
		"expired": expired, "other secret": other, "alg none": none, "RS256": rs256, "ES256": es256,
		"HS512": hs512, "no exp": noExp, "bad sub": badSub, "garbage": "abc.def.ghi", "empty": "",
	} {
		if _, _, err := tk.Parse(tok); !errors.Is(err, auth.ErrInvalidToken) {
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
