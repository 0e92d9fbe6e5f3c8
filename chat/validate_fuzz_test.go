package chat

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzValidateSend checks the send rules on arbitrary input: accepted text
// is trimmed, valid UTF-8 and 1..4096 characters; accepted ids are 1..64
// printable ASCII; everything else is refused with a rule error, never a
// panic.
func FuzzValidateSend(f *testing.F) {
	f.Add("9b2c-1", "hello")
	f.Add("", "x")
	f.Add("id", "   ")
	f.Add("id\t", "x")
	f.Add("ид", "x")
	f.Add(strings.Repeat("i", 65), "x")
	f.Add("id", strings.Repeat("é", 4097))
	f.Add("id", "\xff\xfe")
	f.Fuzz(func(t *testing.T, cmid, text string) {
		got, err := ValidateSend(cmid, text)
		if err != nil {
			if c := CodeOf(err); c != CodeInvalid && c != CodeTooLarge {
				t.Fatalf("got %v, want a rule error", err)
			}
			return
		}
		if got != strings.TrimSpace(got) || !utf8.ValidString(got) {
			t.Fatalf("accepted text %q is not trimmed valid UTF-8", got)
		}
		if n := utf8.RuneCountInString(got); n < 1 || n > MaxTextChars {
			t.Fatalf("accepted text of %d characters", n)
		}
		if len(cmid) < 1 || len(cmid) > MaxClientMsgID {
			t.Fatalf("accepted client_msg_id of %d bytes", len(cmid))
		}
		for _, c := range []byte(cmid) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("accepted client_msg_id %q with a non-printable byte", cmid)
			}
		}
	})
}

// FuzzRegistrationInput checks email normalization and validation: an
// accepted email is lowercase, trimmed, at most 254 bytes and parses as a
// bare address; nothing panics.
func FuzzRegistrationInput(f *testing.F) {
	for _, s := range []string{"alice@example.com", " Alice@Example.COM ", "not-an-email", "a@b", "\"quoted\"@x.io",
		"Name <a@b.io>", "a@b.io,c@d.io", strings.Repeat("e", 250) + "@x.io", "", "@", "a@@b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, email string) {
		n := NormalizeEmail(email)
		if err := validEmail(n); err != nil {
			if CodeOf(err) != CodeInvalid {
				t.Fatalf("got %v, want a rule error", err)
			}
			return
		}
		if n != strings.ToLower(strings.TrimSpace(n)) || len(n) > MaxEmailBytes || !strings.Contains(n, "@") {
			t.Fatalf("accepted email %q", n)
		}
	})
}
