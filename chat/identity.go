package chat

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/mail"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// NormalizeEmail returns the form an email address is stored and compared
// in: trimmed, NFKC-normalized and lowercased. NFKC folds compatibility
// variants onto their plain letters (fullwidth "ａｌｉｃｅ", ligatures such as
// "ﬁ", superscripts), so two addresses that read the same compare equal
// and cannot both be registered; it runs again after lowercasing because
// case mapping can leave a string that is no longer normalized.
func NormalizeEmail(email string) string {
	return norm.NFKC.String(strings.ToLower(norm.NFKC.String(strings.TrimSpace(email))))
}

// legacyEmail is how addresses were normalized before NFKC (trimmed and
// lowercased only). Accounts stored then keep that form, and login and
// registration look it up too, so no stored address needs rewriting.
func legacyEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// CheckEmail says why email, as a client typed it, is not an address that
// Register accepts, or returns nil. The request validator checks the
// spec's `format: email` with it, so that a 422 lists a bad email beside
// the other bad fields of the same request.
func CheckEmail(email string) error {
	if err := validEmail(NormalizeEmail(email)); err != nil {
		return errors.New(err.Message)
	}
	return nil
}

// validEmail checks a normalized address: at most MaxEmailBytes, a bare
// address as net/mail parses it, and no label mixing scripts.
func validEmail(email string) *Error {
	if len(email) == 0 || len(email) > MaxEmailBytes {
		return invalid("email", "email must be a valid address up to %d bytes", MaxEmailBytes)
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" {
		return invalid("email", "email must be a valid address")
	}
	at := strings.LastIndexByte(email, '@')
	if mixedScript(email[:at]) {
		return invalid("email", "email must not mix letters of different scripts (such as Latin and Cyrillic) in its local part")
	}
	for _, label := range strings.Split(email[at+1:], ".") {
		if mixedScript(label) {
			return invalid("email", "email must not mix letters of different scripts in a domain label")
		}
	}
	return nil
}

// scriptSets are the combinations of scripts one identifier may use beside
// a single script, after Unicode TS #39's "highly restrictive" level:
// Japanese, Chinese and Korean writing mix Han with their own scripts and
// with Latin.
var scriptSets = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Bopomofo"},
	{"Latin", "Han", "Hangul"},
}

// mixedScript reports whether s holds letters of scripts that do not go
// together: "pаypal" with a Cyrillic "а" is mixed, "pаураl" written all in
// Cyrillic is not (a whole-script look-alike; catching those needs TS #39's
// confusables table, which neither the standard library nor x/text ships).
// Characters of the Common and Inherited scripts (digits, punctuation,
// combining marks) belong to every script.
func mixedScript(s string) bool {
	var seen []string
	for _, r := range s {
		sc := scriptOf(r)
		if sc == "" || slices.Contains(seen, sc) {
			continue
		}
		seen = append(seen, sc)
	}
	if len(seen) <= 1 {
		return false
	}
	for _, set := range scriptSets {
		if subset(seen, set) {
			return false
		}
	}
	return true
}

// scriptOf names r's Unicode script, or "" for Common, Inherited and
// unassigned code points.
func scriptOf(r rune) string {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' {
			return "Latin"
		}
		return ""
	}
	for name, table := range unicode.Scripts {
		if name != "Common" && name != "Inherited" && unicode.Is(table, r) {
			return name
		}
	}
	return ""
}

func subset(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	return true
}

// Rate-limit keys are built from client input (an email typed at login, an
// address from X-Forwarded-For), which must not become a key as it came:
// its length and bytes are the client's choice, and emails are personal
// data that need not sit in Redis in the clear.

// emailKey is the limit key of an email: a hash, so every key has the same
// short length.
func emailKey(kind, email string) string {
	sum := sha256.Sum256([]byte(email))
	return kind + ":email:" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// ipKey is the limit key of a client address. IPv6 clients are counted per
// /64, the block one subscriber gets, since one host can use every address
// of it; anything that is not an address is hashed.
func ipKey(kind, ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		sum := sha256.Sum256([]byte(ip))
		return kind + ":ip:?" + base64.RawURLEncoding.EncodeToString(sum[:18])
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		return kind + ":ip:" + netip.PrefixFrom(addr, 64).Masked().String()
	}
	return kind + ":ip:" + addr.String()
}
