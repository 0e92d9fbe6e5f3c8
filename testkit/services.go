package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// AdminDatabaseURL is the Postgres server deployments create their
// databases on: WINDI_TEST_DATABASE_URL, or the local one.
func AdminDatabaseURL() string {
	if u := os.Getenv("WINDI_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// RedisURL is the Redis deployments share under key prefixes of their own:
// WINDI_TEST_REDIS_URL, or the local one.
func RedisURL() string {
	if u := os.Getenv("WINDI_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// urlPort is the port a service URL names (def where it names none).
func urlPort(raw string, def int) int {
	u, err := url.Parse(raw)
	if err != nil || u.Port() == "" {
		return def
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return def
	}
	return p
}

// PostgresPort and RedisPort are the ports of AdminDatabaseURL and
// RedisURL: the services the fault tests stop and start.
func PostgresPort() int { return urlPort(AdminDatabaseURL(), 5432) }

// RedisPort is RedisURL's port; see PostgresPort.
func RedisPort() int { return urlPort(RedisURL(), 6379) }

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var ports struct {
	mu    sync.Mutex
	given map[int]bool
}

// FreePort returns a port on 127.0.0.1 that nothing listens on and that
// this process has not handed out before. It is below Linux's ephemeral
// range (32768–60999): a port the kernel picked would be free now and could
// still be taken a moment later by an outgoing connection of a replica
// started meanwhile (seen once in CI: bind: address already in use).
func FreePort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.given == nil {
		ports.given = map[int]bool{}
	}
	for range 200 {
		n, _ := rand.Int(rand.Reader, big.NewInt(12768))
		p := 20000 + int(n.Int64())
		if ports.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		ports.given[p] = true
		return p, nil
	}
	return 0, errors.New("testkit: no free port found")
}

// RepoRoot finds the module root (the directory of go.mod) from the working
// directory up: tests run in their package's directory, tools in the root.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/windi-chat/windi\n") {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("testkit: not inside the windi module (no go.mod of github.com/windi-chat/windi above the working directory)")
		}
		dir = up
	}
}

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Binary returns the windi binary deployments run: WINDI_TEST_BIN, or
// ./cmd/windi built once per process (CGO_ENABLED=0, as the Dockerfile
// builds it) into a temporary directory that RemoveBinary deletes.
func Binary() (string, error) {
	build.once.Do(func() {
		if b := os.Getenv("WINDI_TEST_BIN"); b != "" {
			build.bin = b
			return
		}
		root, err := RepoRoot()
		if err != nil {
			build.err = err
			return
		}
		if build.dir, build.err = os.MkdirTemp("", "windi-testkit-bin-"); build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "windi")
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build.bin, "./cmd/windi")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/windi: %v\n%s", err, out)
		}
	})
	return build.bin, build.err
}

// RemoveBinary deletes the binary Binary built, if it built one (TestMain
// calls it after the tests).
func RemoveBinary() {
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
}

// WaitFor polls ok every 50 ms until it holds, at most d.
func WaitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// --- Postgres and Redis: stop, start, and make sure they end up running.
// The fault tests stop the services of AdminDatabaseURL and RedisURL, which
// must therefore be local: Postgres a Debian cluster (pg_ctlcluster), Redis
// a redis-server on 127.0.0.1.

// pgCluster is the Debian cluster (version, name) serving AdminDatabaseURL's
// port.
func pgCluster() (string, string, error) {
	port := PostgresPort()
	out, err := exec.Command("pg_lsclusters", "--no-header").Output()
	if err != nil {
		return "", "", fmt.Errorf("pg_lsclusters: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == strconv.Itoa(port) {
			return f[0], f[1], nil
		}
	}
	return "", "", fmt.Errorf("pg_lsclusters: no cluster on port %d", port)
}

func pgCtl(action string, extra ...string) error {
	ver, name, err := pgCluster()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--skip-systemctl-redirect", ver, name, action}, extra...)
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// PostgresReady reports whether AdminDatabaseURL answers a ping within 2 s.
func PostgresReady() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDatabaseURL())
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

// PostgresStop stops the cluster in fast mode: sessions are terminated,
// open transactions roll back.
func PostgresStop() error { return pgCtl("stop", "-m", "fast") }

// PostgresStart starts the cluster and waits until it accepts connections.
func PostgresStart() error {
	if err := pgCtl("start"); err != nil && !PostgresReady() {
		return err
	}
	return WaitFor(30*time.Second, PostgresReady)
}

// RedisReady reports whether RedisURL answers a ping within 1 s.
func RedisReady() bool {
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		return false
	}
	opt.MaxRetries = -1
	rc := redis.NewClient(opt)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return rc.Ping(ctx).Err() == nil
}

// RedisStop shuts Redis down without saving and waits until it is gone.
func RedisStop() error {
	port := strconv.Itoa(RedisPort())
	out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", port, "shutdown", "nosave").CombinedOutput()
	if err != nil && RedisReady() {
		return fmt.Errorf("redis-cli shutdown nosave: %v: %s", err, out)
	}
	return WaitFor(10*time.Second, func() bool { return !RedisReady() })
}

// RedisStart starts Redis the way .ci/run does: on the IPv6 loopback too if
// there is one, else IPv4 only; nothing persisted.
func RedisStart() error {
	port := strconv.Itoa(RedisPort())
	start := func(bind ...string) {
		args := append([]string{"--daemonize", "yes", "--bind"}, bind...)
		args = append(args, "--port", port, "--save", "", "--appendonly", "no")
		// Output to a file, never a pipe: the daemon would hold the pipe open.
		_ = exec.Command("redis-server", args...).Run()
	}
	start("127.0.0.1", "-::1")
	if WaitFor(5*time.Second, RedisReady) == nil {
		return nil
	}
	start("127.0.0.1")
	return WaitFor(10*time.Second, RedisReady)
}

// EnsureServices starts Postgres and Redis if they are down: whatever a
// fault test did, the tests after it need them. logf says what it does.
func EnsureServices(logf func(format string, args ...any)) error {
	var errs []error
	if !PostgresReady() {
		logf("Postgres is down: starting it")
		if err := PostgresStart(); err != nil {
			errs = append(errs, fmt.Errorf("restart Postgres: %w", err))
		}
	}
	if !RedisReady() {
		logf("Redis is down: starting it")
		if err := RedisStart(); err != nil {
			errs = append(errs, fmt.Errorf("restart Redis: %w", err))
		}
	}
	return errors.Join(errs...)
}
