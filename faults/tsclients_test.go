package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sdkBuild is the TypeScript SDK in sdk/ts, built once per test run the
// way .ci/run's node_sdk_build does: npm ci (when node_modules is missing
// or older than the lock file), then npm run build (tsc into dist/).
var sdkBuild struct {
	once sync.Once
	dir  string // sdk/ts
	err  error
}

// tsSDK builds sdk/ts and returns its directory; node runs its compiled
// scripts from dist/ there, where its node_modules resolve.
func tsSDK(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	sdkBuild.once.Do(func() {
		for _, tool := range []string{"node", "npm"} {
			if _, err := exec.LookPath(tool); err != nil {
				sdkBuild.err = fmt.Errorf("%s is not installed: Node.js >= 20 with npm is required for the TypeScript clients (sdk/ts)", tool)
				return
			}
		}
		dir := filepath.Join(root, "sdk", "ts")
		run := func(args ...string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			cmd := exec.CommandContext(ctx, "npm", args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "npm_config_prefer_offline=true", "npm_config_fund=false", "npm_config_audit=false")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("npm %s in sdk/ts: %v\n%s", strings.Join(args, " "), err, out)
			}
			fmt.Printf("faults: npm %s in sdk/ts in %s\n", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
			return nil
		}
		if stale(filepath.Join(dir, "node_modules", ".package-lock.json"), filepath.Join(dir, "package-lock.json")) {
			if sdkBuild.err = run("ci", "--no-fund", "--no-audit"); sdkBuild.err != nil {
				return
			}
		}
		if sdkBuild.err = run("run", "--silent", "build"); sdkBuild.err != nil {
			return
		}
		sdkBuild.dir = dir
	})
	if sdkBuild.err != nil {
		t.Fatal(sdkBuild.err)
	}
	return sdkBuild.dir
}

// stale reports whether target is missing or older than source.
func stale(target, source string) bool {
	ti, err := os.Stat(target)
	if err != nil {
		return true
	}
	si, err := os.Stat(source)
	return err == nil && si.ModTime().After(ti.ModTime())
}

// tsClientSpec is one WindiConnection of sdk/ts/test/faults-client.ts.
type tsClientSpec struct {
	Name   string `json:"name"`
	Token  string `json:"token"`
	ChatID int64  `json:"chatId,omitempty"`
	Target string `json:"target,omitempty"`
}

// tsEvent is one line the script reports.
type tsEvent struct {
	Ev        string `json:"ev"`
	At        int64  `json:"at"` // Unix ms
	Client    string `json:"client"`
	Replica   string `json:"replica"`
	State     string `json:"state"`
	Error     string `json:"error"`
	Cmid      string `json:"cmid"`
	Text      string `json:"text"`
	Chat      int64  `json:"chat"`
	Seq       int64  `json:"seq"`
	ID        int64  `json:"id"`
	Sender    int64  `json:"sender"`
	Duplicate bool   `json:"duplicate"`
	Attempts  int    `json:"attempts"`
}

// tsClients is the node process running the TypeScript clients.
type tsClients struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{} // closed when the process has exited and its output is read
	err    error         // Wait's result, set before done closes
	stderr strings.Builder
	mu     sync.Mutex // guards stderr while the process runs
}

// startTSClients runs faults-client.js with node against base; every
// line it reports goes to onEvent, from one goroutine, in order.
func startTSClients(t *testing.T, base string, chatID int64, run string, interval time.Duration, specs []tsClientSpec, logPath string, onEvent func(tsEvent)) *tsClients {
	t.Helper()
	dir := tsSDK(t)
	cfg, err := json.Marshal(map[string]any{"chatId": chatID, "run": run, "intervalMs": interval.Milliseconds(), "clients": specs})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tsClients{done: make(chan struct{})}
	cmd := exec.Command("node", "dist/test/faults-client.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WINDI_URL="+base, "WINDI_FAULTS_CLIENTS="+string(cfg))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with an aborted test
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{mu: &ts.mu, w: &ts.stderr}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if ts.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node faults-client.js: %v", err)
	}
	ts.cmd = cmd
	go func() {
		defer close(ts.done)
		defer lf.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			fmt.Fprintf(lf, "%s\n", line)
			var ev tsEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				onEvent(tsEvent{Ev: "garbage", Error: fmt.Sprintf("%v: %q", err, line)})
				continue
			}
			onEvent(ev)
		}
		ts.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-ts.done:
		default:
			_ = ts.cmd.Process.Kill()
			<-ts.done
		}
	})
	return ts
}

// command writes one line to the script's stdin.
func (ts *tsClients) command(cmd string) error {
	_, err := io.WriteString(ts.stdin, cmd+"\n")
	return err
}

// wait waits until the script has exited, at most d.
func (ts *tsClients) wait(d time.Duration) error {
	select {
	case <-ts.done:
		if ts.err != nil {
			return fmt.Errorf("node faults-client.js: %v; stderr:\n%s", ts.err, ts.stderrText())
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("node faults-client.js still running %s after close", d)
	}
}

func (ts *tsClients) stderrText() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
