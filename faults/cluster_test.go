package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// The services the scenarios stop and start. The tests manage the local
// Postgres cluster with pg_ctlcluster and the local Redis with
// redis-cli/redis-server, so these URLs must point at 127.0.0.1.
func adminDatabaseURL() string {
	if u := os.Getenv("WINDI_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// urlPort is the port a service URL names (its default where it names
// none): the scenarios stop and start whatever listens there.
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

func pgPort() int    { return urlPort(adminDatabaseURL(), 5432) }
func redisPort() int { return urlPort(redisURL(), 6379) }

func redisURL() string {
	if u := os.Getenv("WINDI_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// requireFaults skips unless WINDI_FAULTS=1: these tests stop the shared
// Postgres and Redis for seconds at a time.
func requireFaults(t *testing.T) {
	t.Helper()
	if os.Getenv("WINDI_FAULTS") != "1" {
		t.Skip("fault tests start servers and nginx and stop Postgres and Redis: set WINDI_FAULTS=1 (bash .ci/run faults does)")
	}
	if testing.Short() {
		t.Skip("fault tests take minutes")
	}
}

// quietRedis drops go-redis's own log lines (dial failures while the
// tests have Redis stopped on purpose).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// build is the windi binary, built once per test run.
var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// repoRoot is the module root (the tests run in faults/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	return root
}

// windiBinary builds ./cmd/windi once (CGO_ENABLED=0), or returns
// WINDI_FAULTS_BIN.
func windiBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	build.once.Do(func() {
		if b := os.Getenv("WINDI_FAULTS_BIN"); b != "" {
			build.bin = b
			return
		}
		build.dir, build.err = os.MkdirTemp("", "windi-faults-bin-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "windi")
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		start := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build.bin, "./cmd/windi")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build ./cmd/windi: %v\n%s", err, out)
			return
		}
		fmt.Printf("faults: built %s in %s\n", build.bin, time.Since(start).Round(time.Millisecond))
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a child process writing to a log file. Children get SIGKILL when
// the test process dies (Pdeathsig), so an aborted run leaves none behind.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
	log  *os.File
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: lf}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// wait waits for the process to exit, at most d.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	p.signal(syscall.SIGTERM)
	if !p.wait(grace) {
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
	}
}

// httpGet answers the status and header of GET url within 3 s.
func httpGet(ctx context.Context, rawURL string) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header, nil
}

// noKeepAlive is for probes: each request on a fresh connection, so none
// lingers on a server being measured or killed.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second}

// cluster is one deployment for one test: a fresh database, a Redis key
// prefix, replicas of the windi binary and (optionally) nginx in front.
type cluster struct {
	t        *testing.T
	dir      string
	bin      string
	dbName   string
	dbURL    string
	prefix   string
	secret   string
	env      []string // extra environment for every replica
	replicas []*replica
	nginx    *proc
	nginxLog string
	base     string // the proxy's URL (or the only replica's, without nginx)
}

// replica is one windi process; it can be killed and started again on the
// same port.
type replica struct {
	c    *cluster
	idx  int
	port int
	url  string

	mu   sync.Mutex // guards p and name
	p    *proc
	name string // X-Windi-Replica of the running process
}

type clusterOptions struct {
	replicas int
	nginx    bool
	env      []string // KEY=VALUE for every replica
}

// startCluster starts a deployment; everything stops, and the database
// and keys go, when the test ends. Postgres and Redis are restarted then
// if a scenario left them down.
func startCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	bin := windiBinary(t)
	t.Cleanup(func() { ensureServices(t) })
	c := &cluster{
		t: t, dir: t.TempDir(), bin: bin,
		dbName: fmt.Sprintf("windi_faults_%d_%s", time.Now().Unix(), randomHex(3)),
		prefix: "faults-" + randomHex(4) + ":",
		secret: randomHex(32),
		env:    o.env,
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.createDatabase()
	t.Cleanup(c.cleanupData)
	t.Cleanup(c.stopAll)
	for i := range o.replicas {
		r := &replica{c: c, idx: i + 1, port: freePort(t)}
		r.url = fmt.Sprintf("http://127.0.0.1:%d", r.port)
		c.replicas = append(c.replicas, r)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.replicas))
	for i, r := range c.replicas {
		wg.Go(func() { errs[i] = r.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c.base = c.replicas[0].url
	if o.nginx {
		c.startNginx()
	}
	return c
}

func (c *cluster) createDatabase() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDatabaseURL())
	if err != nil {
		c.t.Fatalf("connect to %s: %v", adminDatabaseURL(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE "`+c.dbName+`"`); err != nil {
		c.t.Fatal(err)
	}
	u, err := url.Parse(adminDatabaseURL())
	if err != nil {
		c.t.Fatal(err)
	}
	u.Path = "/" + c.dbName
	c.dbURL = u.String()
}

// cleanupData drops the database and the Redis keys of this cluster.
func (c *cluster) cleanupData() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, adminDatabaseURL()); err == nil {
		if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS "`+c.dbName+`" WITH (FORCE)`); err != nil {
			c.t.Logf("drop database %s: %v", c.dbName, err)
		}
		conn.Close(ctx)
	} else {
		c.t.Logf("drop database %s: %v", c.dbName, err)
	}
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		return
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	iter := rc.Scan(ctx, 0, c.prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		rc.Del(ctx, keys[:n]...)
		keys = keys[n:]
	}
}

// stopAll stops nginx, then the replicas; it keeps or prints their logs.
func (c *cluster) stopAll() {
	if c.nginx != nil {
		c.nginx.stop(5 * time.Second)
	}
	var wg sync.WaitGroup
	for _, r := range c.replicas {
		wg.Go(func() {
			if p := r.proc(); p != nil {
				p.stop(20 * time.Second)
			}
		})
	}
	wg.Wait()
	logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	if keep := os.Getenv("WINDI_FAULTS_LOGS"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err == nil {
			for _, l := range logs {
				if b, err := os.ReadFile(l); err == nil {
					_ = os.WriteFile(filepath.Join(keep, c.t.Name()+"-"+filepath.Base(l)), b, 0o644)
				}
			}
		}
	}
	if c.t.Failed() {
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			c.t.Logf("--- last lines of %s:\n%s", filepath.Base(l), strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	}
}

// replicaEnv is the environment of a replica: the test's own, without any
// windi settings, plus the cluster's.
func (c *cluster) replicaEnv(r *replica) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WINDI_") || k == "DATABASE_URL" || k == "REDIS_URL" || strings.HasPrefix(k, "JWT_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"DATABASE_URL="+c.dbURL,
		"REDIS_URL="+redisURL(),
		"JWT_SECRET="+c.secret,
		// Tokens outlive the longest run (the soak), so clients need not
		// refresh mid-test.
		"JWT_TTL=2h",
		"WINDI_REDIS_PREFIX="+c.prefix,
		fmt.Sprintf("WINDI_ADDR=127.0.0.1:%d", r.port),
		fmt.Sprintf("WINDI_DATA_DIR=%s/data-%d", c.dir, r.idx),
		"WINDI_LOG_LEVEL=info",
	)
	return append(env, c.env...)
}

func (r *replica) proc() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// Name is the X-Windi-Replica of the running process.
func (r *replica) Name() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.name
}

// start starts the replica (again) on its port and waits for /readyz.
func (r *replica) start() error {
	c := r.c
	p, err := startProc(fmt.Sprintf("windi-%d", r.idx), filepath.Join(c.dir, fmt.Sprintf("windi-%d.log", r.idx)), c.replicaEnv(r), c.bin, "serve")
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.p, r.name = p, ""
	r.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, hdr, err := httpGet(context.Background(), r.url+"/readyz")
		if err == nil && code == http.StatusOK {
			r.mu.Lock()
			r.name = hdr.Get("X-Windi-Replica")
			r.mu.Unlock()
			if r.Name() == "" {
				return fmt.Errorf("windi-%d: /readyz has no X-Windi-Replica", r.idx)
			}
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("windi-%d (pid %d) exited before it was ready: %v", r.idx, p.pid(), p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("windi-%d did not answer /readyz on %s within 60 s (last: %d %v)", r.idx, r.url, code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startNginx renders deploy/nginx/windi.conf.template the way .ci/run and
// the nginx image do (only its two placeholders) and starts nginx on a
// free port in front of every replica.
func (c *cluster) startNginx() {
	t := c.t
	ngx, err := exec.LookPath("nginx")
	if err != nil {
		ngx = "/usr/sbin/nginx"
		if _, err := os.Stat(ngx); err != nil {
			t.Fatal("nginx is not installed (apt-get install nginx; .ci/run's services step does)")
		}
	}
	tmpl, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/nginx/windi.conf.template"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var ups strings.Builder
	for _, r := range c.replicas {
		fmt.Fprintf(&ups, "server 127.0.0.1:%d; ", r.port)
	}
	conf := strings.NewReplacer(
		"${WINDI_UPSTREAM_SERVERS}", strings.TrimSpace(ups.String()),
		"${WINDI_PROXY_PORT}", fmt.Sprintf("127.0.0.1:%d", port),
	).Replace(string(tmpl))
	if err := os.WriteFile(filepath.Join(c.dir, "windi.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.nginxLog = filepath.Join(c.dir, "nginx-error.log")
	// One process (no master), so the Pdeathsig of startProc takes nginx
	// down with an aborted test.
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[2]s notice;
events { worker_connections 4096; }
http {
    log_format windi '$remote_addr "$request" $status upstream=$upstream_addr $upstream_status $request_time';
    access_log %[1]s/nginx-access.log windi;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/windi.conf;
}
`, c.dir, c.nginxLog)
	mainPath := filepath.Join(c.dir, "nginx.conf")
	if err := os.WriteFile(mainPath, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ngx, "-q", "-t", "-e", c.nginxLog, "-p", c.dir+"/", "-c", mainPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	p, err := startProc("nginx", filepath.Join(c.dir, "nginx.out.log"), os.Environ(), ngx, "-e", c.nginxLog, "-p", c.dir+"/", "-c", mainPath)
	if err != nil {
		t.Fatal(err)
	}
	c.nginx = p
	c.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, err := httpGet(context.Background(), c.base+"/readyz")
		if err == nil && code == http.StatusOK {
			return
		}
		if !p.alive() || time.Now().After(deadline) {
			b, _ := os.ReadFile(c.nginxLog)
			t.Fatalf("nginx on %s not ready (%d %v):\n%s", c.base, code, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	nginxConnectFailed = regexp.MustCompile(`connect\(\) failed`)
	nginxDisabled      = regexp.MustCompile(`upstream server temporarily disabled`)
)

// nginxStats counts, from nginx's logs, the upstream connects that failed
// (nginx then tries the next replica), the times it marked a replica
// failed (for fail_timeout, 10 s), and the requests it answered 502 or
// 504 itself (no replica could take them).
func (c *cluster) nginxStats() string {
	var refused, disabled, gateway int
	if b, err := os.ReadFile(c.nginxLog); err == nil {
		refused = len(nginxConnectFailed.FindAll(b, -1))
		disabled = len(nginxDisabled.FindAll(b, -1))
	}
	// The access log: ours, or the template's own (it may log to stdout).
	for _, f := range []string{"nginx-access.log", "nginx.out.log"} {
		b, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `" 502 `) || strings.Contains(line, `" 504 `) {
				gateway++
			}
		}
	}
	return fmt.Sprintf("nginx: %d refused upstream connects retried, replicas marked failed %d times, %d requests answered 502/504", refused, disabled, gateway)
}

// logCount counts the lines of every replica's log that contain each of
// substrs.
func (c *cluster) logCount(substrs ...string) int {
	logs, _ := filepath.Glob(filepath.Join(c.dir, "windi-*.log"))
	n := 0
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
	line:
		for _, line := range strings.Split(string(b), "\n") {
			for _, s := range substrs {
				if !strings.Contains(line, s) {
					continue line
				}
			}
			n++
		}
	}
	return n
}

// waitReady polls every replica's /readyz until each answers want, at most
// d; it returns how long that took.
func (c *cluster) waitReady(want int, d time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		ok := true
		var last string
		for _, r := range c.replicas {
			code, _, err := httpGet(context.Background(), r.url+"/readyz")
			if err != nil || code != want {
				ok = false
				last = fmt.Sprintf("windi-%d: %d %v", r.idx, code, err)
				break
			}
		}
		if ok {
			return time.Since(start), nil
		}
		if time.Since(start) > d {
			return time.Since(start), fmt.Errorf("/readyz not %d on every replica within %s (%s)", want, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRouted polls GET /readyz through the proxy until the proxy sends one
// to r; it returns how long that took.
func (c *cluster) waitRouted(r *replica, d time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		_, hdr, err := httpGet(context.Background(), c.base+"/readyz")
		if err == nil && hdr.Get("X-Windi-Replica") == r.Name() {
			return time.Since(start), nil
		}
		if time.Since(start) > d {
			return time.Since(start), fmt.Errorf("the proxy sent no request to windi-%d within %s of its restart", r.idx, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- Postgres and Redis: stop, start, and make sure they end up running ---

// pgCluster is the Debian cluster (version, name) that serves pgPort.
func pgCluster() (string, string, error) {
	out, err := exec.Command("pg_lsclusters", "--no-header").Output()
	if err != nil {
		return "", "", fmt.Errorf("pg_lsclusters: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == strconv.Itoa(pgPort()) {
			return f[0], f[1], nil
		}
	}
	return "", "", fmt.Errorf("pg_lsclusters: no cluster on port %d", pgPort())
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

func pgReady() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDatabaseURL())
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

func redisReady() bool {
	opt, err := redis.ParseURL(redisURL())
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

// pgStop stops the cluster (fast mode: sessions are terminated, open
// transactions roll back).
func pgStop() error { return pgCtl("stop", "-m", "fast") }

// pgStart starts the cluster and waits until it accepts connections.
func pgStart() error {
	if err := pgCtl("start"); err != nil && !pgReady() {
		return err
	}
	return waitFor(30*time.Second, pgReady)
}

// redisStop shuts Redis down without saving and waits until it is gone.
func redisStop() error {
	out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(redisPort()), "shutdown", "nosave").CombinedOutput()
	if err != nil && redisReady() {
		return fmt.Errorf("redis-cli shutdown nosave: %v: %s", err, out)
	}
	return waitFor(10*time.Second, func() bool { return !redisReady() })
}

// redisStart starts Redis the way .ci/run does: IPv6 loopback if there is
// one, else IPv4 only.
func redisStart() error {
	start := func(bind ...string) {
		args := append([]string{"--daemonize", "yes", "--bind"}, bind...)
		args = append(args, "--port", strconv.Itoa(redisPort()), "--save", "", "--appendonly", "no")
		// Output to a file, never a pipe: the daemon would hold the pipe open.
		cmd := exec.Command("redis-server", args...)
		_ = cmd.Run()
	}
	start("127.0.0.1", "-::1")
	if waitFor(5*time.Second, redisReady) == nil {
		return nil
	}
	start("127.0.0.1")
	return waitFor(10*time.Second, redisReady)
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// ensureServices starts Postgres and Redis if they are down: whatever a
// scenario did, other tests on this machine need them.
func ensureServices(t testing.TB) {
	if !pgReady() {
		t.Log("Postgres is down: starting it")
		if err := pgStart(); err != nil {
			t.Errorf("restart Postgres: %v", err)
		}
	}
	if !redisReady() {
		t.Log("Redis is down: starting it")
		if err := redisStart(); err != nil {
			t.Errorf("restart Redis: %v", err)
		}
	}
}

// metricValue reads one unlabelled sample from Prometheus text.
func metricValue(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
