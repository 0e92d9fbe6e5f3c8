package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
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
	script := `curl -fsS "$WINDI_URL/readyz" >/dev/null && test -s "$WINDI_TEST_JWT_SECRET_FILE" && test "$WINDI_REPLICA_URLS" = "$WINDI_URL" &&
		kill -0 "$WINDI_REPLICA_PIDS" && curl -fsS "$WINDI_PPROF_URLS/debug/pprof/cmdline" >/dev/null && exit 7`
	rc := run([]string{"run", "-name", "kit", "-embedded", "-pprof", "-logs", logs, "--", "bash", "-c", script}, &out, &errOut)
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

// TestUpKeepsTheDeploymentUntilSIGTERM starts a seeded embedded deployment
// with up: the env file names a server where the demo users log in, on
// the port asked for, and SIGTERM ends it.
func TestUpKeepsTheDeploymentUntilSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a server")
	}
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(t.TempDir(), "kit.env")
	done := make(chan int, 1)
	var out, errOut testkit.SyncBuffer
	go func() {
		done <- run([]string{"up", "-name", "up", "-embedded", "-seed", "-port", strconv.Itoa(port), "-env-file", envFile}, &out, &errOut)
	}()
	var vars map[string]string
	if err := testkit.WaitFor(90*time.Second, func() bool {
		b, err := os.ReadFile(envFile)
		if err != nil || len(b) == 0 {
			return false
		}
		vars = map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			vars[k] = strings.Trim(v, "'")
		}
		return true
	}); err != nil {
		t.Fatalf("no env file: %v\n%s", err, errOut.String())
	}
	if want := fmt.Sprintf("http://127.0.0.1:%d", port); vars["WINDI_URL"] != want {
		t.Fatalf("WINDI_URL %q, want %q", vars["WINDI_URL"], want)
	}
	c, err := client.New(vars["WINDI_URL"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(context.Background(), "alice@windi.test", "alice-demo-pass"); err != nil {
		t.Fatalf("the seeded Alice cannot log in: %v", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case rc := <-done:
		if rc != 0 {
			t.Fatalf("up exited %d after SIGTERM, want 0\n%s", rc, errOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("up still running 60 s after SIGTERM")
	}
	if code, _, err := testkit.Get(context.Background(), vars["WINDI_URL"]+"/readyz"); err == nil {
		t.Fatalf("the server still answers (%d) after up ended", code)
	}
}
