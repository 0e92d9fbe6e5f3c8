package chat

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/windi-chat/windi/auth"
)

func TestNormalizeEmail(t *testing.T) {
	for in, want := range map[string]string{
		" Alice@Example.COM ":   "alice@example.com",
		"ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ":     "alice@example.com", // fullwidth
		"ﬁnn@example.com":       "finn@example.com",  // the ligature ﬁ
		"bob²@example.com":      "bob2@example.com",  // superscript two
		"ÅSA@example.com":       "åsa@example.com",   // composed after lowercasing
		"A\u030aSA@example.com": "åsa@example.com",   // A + combining ring: the same address
	} {
		if got := NormalizeEmail(in); got != want {
			t.Errorf("NormalizeEmail(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMixedScriptEmails(t *testing.T) {
	for _, c := range []struct {
		email string
		ok    bool
	}{
		{"alice@example.com", true},
		{"jürgen.müller@example.de", true}, // Latin with diacritics
		{"иван@пример.рф", true},           // all Cyrillic
		{"δοκιμή@example.com", true},       // all Greek
		{"山田たろう@example.jp", true},         // Han + Hiragana
		{"user123+tag@example.com", true},  // digits and punctuation are Common
		{"p\u0430ypal@example.com", false}, // Latin with a Cyrillic а
		{"\u0430lice@example.com", false},  // Cyrillic а then Latin
		{"alice@ex\u0430mple.com", false},  // mixed domain label
		{"ο\u006b@example.com", false},     // Greek omicron + Latin k
		{"иван@example.com", true},         // Cyrillic local part, Latin domain: each part is one script
		{"김철수abc@example.kr", true},        // Hangul + Latin
		{"山田\u0430@example.jp", false},     // Han + Cyrillic
	} {
		err := CheckEmail(c.email)
		if (err == nil) != c.ok {
			t.Errorf("CheckEmail(%q) = %v, want ok=%v", c.email, err, c.ok)
		}
	}
}

func TestLimitKeysAreShort(t *testing.T) {
	long := strings.Repeat("e", 240) + "@example.com"
	k := emailKey("login", long)
	if len(k) > 40 || strings.Contains(k, "eee") || !strings.HasPrefix(k, "login:email:") {
		t.Errorf("emailKey = %q (%d bytes), want a short hash under login:email:", k, len(k))
	}
	if emailKey("login", "a@b.io") == emailKey("login", "a@b. io") {
		t.Error("two emails share a key")
	}
	for ip, want := range map[string]string{
		"203.0.113.7":          "login:ip:203.0.113.7",
		"::ffff:203.0.113.7":   "login:ip:203.0.113.7",
		"2001:db8:1:2:3:4:5:6": "login:ip:2001:db8:1:2::/64",
		"2001:db8:1:2::9":      "login:ip:2001:db8:1:2::/64",
		"fe80::1%eth0":         "login:ip:fe80::/64",
	} {
		if got := ipKey("login", ip); got != want {
			t.Errorf("ipKey(%q) = %q, want %q", ip, got, want)
		}
	}
	if k := ipKey("login", strings.Repeat("x", 30000)); len(k) > 40 || strings.Contains(k, "xxx") {
		t.Errorf("ipKey of junk = %q, want a short hash", k)
	}
}

// TestRegisterListsEveryBadField: the service checks all fields before it
// answers, and names each one that breaks a rule.
func TestRegisterListsEveryBadField(t *testing.T) {
	// Validation answers before anything is stored or hashed: a Service
	// without storage or broker will do.
	s := &Service{hasher: auth.NewHasher(auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}, 1, 0), log: slog.New(slog.DiscardHandler)}
	_, err := s.Register(context.Background(), "  ", "p\u0430ypal@example.com", "short")
	e, ok := err.(*Error)
	if !ok || e.Code != CodeInvalid {
		t.Fatalf("got %v, want a CodeInvalid error", err)
	}
	var fields []string
	for _, f := range e.Fields {
		fields = append(fields, f.Field)
	}
	if strings.Join(fields, ",") != "name,email,password" || e.Field != "name" {
		t.Errorf("got fields %v (first %q), want name, email and password", fields, e.Field)
	}
}
