package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/windi-chat/windi/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveBinary()
	os.Exit(code)
}

// TestRunPassesTheDeploymentAndTheStatus runs a command against an
// embedded deployment: the command sees WINDI_URL (it answers /readyz)
// and the secret file, its exit status is windi-testkit's, and the logs
// are kept where -logs says.
func TestRunPassesTheDeploymentAndTheStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a server")
	}
	logs := t.TempDir()
	var out, errOut bytes.Buffer
	script := `curl -fsS "$WINDI_URL/readyz" >/dev/null && test -s "$WINDI_TEST_JWT_SECRET_FILE" && test "$WINDI_REPLICA_URLS" = "$WINDI_URL" && exit 7`
	rc := run([]string{"run", "-name", "kit", "-embedded", "-logs", logs, "--", "bash", "-c", script}, &out, &errOut)
	if rc != 7 {
		t.Fatalf("got exit status %d, want the command's 7\nstdout:\n%s\nstderr:\n%s", rc, &out, &errOut)
	}
	if !strings.Contains(out.String(), "kit windi-1: pid ") {
		t.Fatalf("no replica line in the output:\n%s", &out)
	}
	if _, err := os.Stat(filepath.Join(logs, "kit-windi-1.log")); err != nil {
		t.Fatalf("log not kept: %v", err)
	}
	if rc := run([]string{"run", "-embedded"}, &out, &errOut); rc != 2 {
		t.Fatalf("no command: got %d, want 2", rc)
	}
	if rc := run([]string{"run", "-env", "NOEQUALS", "--", "true"}, &out, &errOut); rc != 2 {
		t.Fatalf("bad -env: got %d, want 2", rc)
	}
}
