package app_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
)

// TestWeakSecretRefused: a JWT_SECRET under 32 bytes, or the value the
// docker-compose.yml example used to ship, stops start-up with a message
// naming JWT_SECRET and the way out, unless WINDI_INSECURE_DEV=1.
func TestWeakSecretRefused(t *testing.T) {
	open := func(t *testing.T, secret string, insecure bool) error {
		t.Helper()
		cfg := app.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), JWTSecret: secret, JWTTTL: 15 * time.Minute, InsecureDev: insecure}
		m := app.New(cfg, slog.New(slog.DiscardHandler))
		defer m.Close()
		return m.Open(context.Background())
	}
	for name, secret := range map[string]string{
		"short":           "s3cret",
		"31 bytes":        strings.Repeat("x", 31),
		"compose example": app.ComposeExampleSecret,
	} {
		t.Run(name, func(t *testing.T) {
			err := open(t, secret, false)
			if err == nil || !strings.Contains(err.Error(), "JWT_SECRET") || !strings.Contains(err.Error(), "WINDI_INSECURE_DEV=1") {
				t.Errorf("got %v, want a refusal naming JWT_SECRET and WINDI_INSECURE_DEV=1", err)
			}
			if err := open(t, secret, true); err != nil {
				t.Errorf("with WINDI_INSECURE_DEV=1: got %v, want a start", err)
			}
		})
	}
	if err := open(t, strings.Repeat("k", 32), false); err != nil {
		t.Errorf("32 random-looking bytes: got %v, want a start", err)
	}
}

// TestComposeExampleSecretIsGone: docker-compose.yml no longer ships a
// default secret, so ComposeExampleSecret only names the old one.
func TestComposeExampleSecretIsGone(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), app.ComposeExampleSecret) {
		t.Error("docker-compose.yml still holds the example secret as a default")
	}
}
