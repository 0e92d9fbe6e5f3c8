package chat

import (
	"strings"
	"testing"
)

// The per-request validation on the send and registration paths:
//
//	go test -run '^$' -bench . -benchmem ./chat/

var sinkErr error

func BenchmarkValidateSend(b *testing.B) {
	for _, bc := range []struct{ name, cmid, text string }{
		{"ascii_100", "3f6c1a9e-load-000042", strings.Repeat("x", 100)},
		{"utf8_4096", "3f6c1a9e-load-000042", strings.Repeat("é", MaxTextChars)},
		{"too_large", "3f6c1a9e-load-000042", strings.Repeat("é", MaxTextChars+1)},
		{"bad_id", "3f6c1a9e\tload", "hi"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.text)))
			for b.Loop() {
				_, sinkErr = ValidateSend(bc.cmid, bc.text)
			}
		})
	}
}

func BenchmarkRegistrationEmail(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = validEmail(NormalizeEmail("  Alice.Smith+chat@Example.COM "))
	}
}
