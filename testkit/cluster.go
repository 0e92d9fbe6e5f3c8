package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options describe a deployment.
type Options struct {
	// Name labels the deployment: its database is windi_<name>_…, and
	// kept logs are named after it. Default "testkit".
	Name string
	// Replicas is how many windi processes run; default 1.
	Replicas int
	// Nginx puts nginx in front of the replicas, configured from
	// deploy/nginx/windi.conf.template the way the nginx image renders it.
	Nginx bool
	// Embedded runs the default a user gets with no setup: SQLite in each
	// replica's data directory and the in-process broker, no DATABASE_URL,
	// REDIS_URL or JWT_SECRET (the server generates the secret in its data
	// directory). Replicas must then be 1: embedded replicas share nothing.
	Embedded bool
	// RedisURL is the replicas' REDIS_URL; default RedisURL(). A Redis
	// Cluster URL (addr= in the query) works too.
	RedisURL string
	// Env is KEY=VALUE for every replica, after the defaults (the last of
	// a repeated key wins): limits, JWT_TTL (default 2h, so tokens outlive
	// the longest test), WINDI_LOG_LEVEL…
	Env []string
	// Binary is the windi binary; default Binary().
	Binary string
	// Dir holds logs, data directories and nginx's files; New creates a
	// temporary one when empty (Close then removes it), Start uses the
	// test's TempDir.
	Dir string
	// Place, when set, adjusts each replica before it first starts: its
	// Host, Wrap and Env (a replica in a network namespace).
	Place func(r *Replica)
	// PlaceDB, when set, runs once the database exists, before any replica
	// starts (e.g. to point replicas at Postgres through a proxy).
	PlaceDB func(c *Cluster)
	// Port, when set, is replica 1's port (a proxy in front of it keeps
	// pointing at it across deployments); the others get free ones.
	Port int
	// Seed runs `windi seed` (the demo users and chats) with replica 1's
	// environment before any replica starts.
	Seed bool
	// Pprof gives every replica a pprof listener (WINDI_PPROF_ADDR) on a
	// free port of its host: Replica.PprofURL.
	Pprof bool
}

// Cluster is one running deployment.
type Cluster struct {
	// URL is where clients go: nginx when there is one, else replica 1.
	URL      string
	Replicas []*Replica
	// DatabaseURL and DatabaseName name the deployment's own database
	// ("" when embedded).
	DatabaseURL  string
	DatabaseName string
	// RedisURL and Prefix: the Redis the replicas share and the key
	// prefix (WINDI_REDIS_PREFIX) that is theirs alone ("" when embedded).
	RedisURL string
	Prefix   string
	// Secret is the JWT_SECRET of the replicas ("" when embedded: see
	// SecretFile).
	Secret string
	// Dir holds the logs: windi-N.log, nginx-error.log and nginx-access.log
	// (the template's access log, query strings redacted).
	Dir string
	// NginxErrorLog and NginxAccessLog are nginx's logs ("" without nginx).
	NginxErrorLog  string
	NginxAccessLog string

	o       Options
	bin     string
	ownDir  bool
	nginx   *proc
	closeMu sync.Mutex
	closed  bool
}

// Replica is one windi process; it can be killed and started again on the
// same port.
type Replica struct {
	Index int    // 1, 2, …
	Host  string // the address it listens on: 127.0.0.1, or one in a network namespace
	Port  int
	URL   string // http://Host:Port
	// Wrap is a command the binary runs under (e.g. ip netns exec NS).
	Wrap []string
	// Env is KEY=VALUE for this replica alone, after the cluster's.
	Env []string
	// PprofURL is the replica's pprof listener (Options.Pprof), e.g.
	// http://127.0.0.1:PORT/debug/pprof/profile; "" without one.
	PprofURL string

	c    *Cluster
	mu   sync.Mutex // guards p and name
	p    *proc
	name string // X-Windi-Replica of the running process
}

// Start starts a deployment for t and ends it when t ends (Close); when t
// failed it prints the last lines of every log. Logs are copied to the
// directory WINDI_TEST_LOGS names, if set, prefixed with the test's name.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	c, err := New(context.Background(), o)
	if c != nil {
		t.Cleanup(func() {
			logs := c.Logs()
			if n := c.TokensInLogs(); n > 0 {
				t.Errorf("testkit: %d access tokens in nginx's logs (%s, %s); tokens never reach logs", n, c.NginxErrorLog, c.NginxAccessLog)
			}
			if err := c.Close(); err != nil {
				t.Errorf("testkit: %v", err)
			}
			if keep := os.Getenv("WINDI_TEST_LOGS"); keep != "" {
				if err := copyLogs(logs, keep, strings.ReplaceAll(t.Name(), "/", "_")+"-"); err != nil {
					t.Logf("testkit: keep logs: %v", err)
				}
			}
			if t.Failed() {
				t.Log(Tails(logs, 25))
			}
		})
	}
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return c
}

// New starts a deployment: its database (unless embedded), every replica
// (in parallel, each until /readyz answers 200) and nginx. On an error it
// returns what it started, to Close, with the error.
func New(ctx context.Context, o Options) (*Cluster, error) {
	if o.Name == "" {
		o.Name = "testkit"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Embedded && o.Replicas > 1 {
		return nil, errors.New("testkit: embedded replicas share nothing: Replicas must be 1")
	}
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{o: o, bin: bin, Dir: o.Dir}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "windi-testkit-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.ownDir = d, true
	}
	// nginx's worker (nobody, when started as root) reads files here.
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return c, err
	}
	if !o.Embedded {
		c.RedisURL = o.RedisURL
		if c.RedisURL == "" {
			c.RedisURL = RedisURL()
		}
		c.Prefix = "windi-" + o.Name + "-" + RandomHex(4) + ":"
		c.Secret = RandomHex(32)
		if err := c.createDatabase(ctx); err != nil {
			return c, err
		}
	}
	for i := range o.Replicas {
		port, err := o.Port, error(nil)
		if i > 0 || port == 0 {
			if port, err = FreePort(); err != nil {
				return c, err
			}
		}
		r := &Replica{c: c, Index: i + 1, Host: "127.0.0.1", Port: port}
		if o.Place != nil {
			o.Place(r)
		}
		if o.Pprof {
			pp, err := FreePort()
			if err != nil {
				return c, err
			}
			r.Env = append(r.Env, fmt.Sprintf("WINDI_PPROF_ADDR=%s:%d", r.Host, pp))
			r.PprofURL = fmt.Sprintf("http://%s:%d", r.Host, pp)
		}
		r.URL = fmt.Sprintf("http://%s:%d", r.Host, r.Port)
		c.Replicas = append(c.Replicas, r)
	}
	if o.PlaceDB != nil {
		o.PlaceDB(c)
	}
	if o.Seed {
		if err := c.seed(ctx); err != nil {
			return c, err
		}
	}
	errs := make([]error, len(c.Replicas))
	var wg sync.WaitGroup
	for i, r := range c.Replicas {
		wg.Go(func() { errs[i] = r.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	c.URL = c.Replicas[0].URL
	if o.Nginx {
		if err := c.startNginx(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// seed runs `windi seed` with replica 1's environment; its output goes to
// seed.log.
func (c *Cluster) seed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	r := c.Replicas[0]
	cmd := exec.CommandContext(ctx, c.bin, "seed")
	cmd.Env = c.env(r)
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(c.Dir, "seed.log"), out, 0o644)
	if err != nil {
		return fmt.Errorf("windi seed: %v\n%s", err, out)
	}
	return nil
}

// StopProcesses stops nginx, then every replica (SIGTERM, SIGKILL after
// 20 s), and leaves the rest (database, keys, logs) to Close: a caller
// that keeps the logs copies them after this, so they hold the replicas'
// shutdown too. Stopping twice is harmless.
func (c *Cluster) StopProcesses() {
	if c.nginx != nil {
		c.nginx.stop(5 * time.Second)
	}
	var wg sync.WaitGroup
	for _, r := range c.Replicas {
		wg.Go(func() { r.Stop(20 * time.Second) })
	}
	wg.Wait()
}

// SecretFile is where an embedded replica keeps the JWT secret it
// generated ("" for a replica given JWT_SECRET).
func (c *Cluster) SecretFile() string {
	if !c.o.Embedded {
		return ""
	}
	return filepath.Join(c.Replicas[0].dataDir(), "jwt_secret")
}

// Embedded reports whether the deployment runs on the embedded default.
func (c *Cluster) Embedded() bool { return c.o.Embedded }

// Close stops nginx, then every replica (SIGTERM, SIGKILL after 20 s),
// drops the database and deletes the Redis keys of the deployment.
// Closing twice is harmless.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.StopProcesses()
	err := c.dropData()
	if c.ownDir {
		_ = os.RemoveAll(c.Dir)
	}
	return err
}

func (c *Cluster) createDatabase(ctx context.Context) error {
	name := fmt.Sprintf("windi_%s_%d_%s", strings.ReplaceAll(c.o.Name, "-", "_"), time.Now().Unix(), RandomHex(3))
	u, err := CreateDatabase(ctx, name)
	if err != nil {
		return err
	}
	c.DatabaseName, c.DatabaseURL = name, u
	return nil
}

// withPath replaces the path of a URL, keeping its query.
func withPath(raw, path string) string {
	base, query, _ := strings.Cut(raw, "?")
	if i := strings.Index(base, "://"); i >= 0 {
		if j := strings.Index(base[i+3:], "/"); j >= 0 {
			base = base[:i+3+j]
		}
	}
	if query != "" {
		return base + path + "?" + query
	}
	return base + path
}

// dropData drops the database and deletes the keys under Prefix.
func (c *Cluster) dropData() error {
	if c.o.Embedded {
		return nil
	}
	ctx := context.Background()
	var errs []error
	if c.DatabaseName != "" {
		errs = append(errs, DropDatabase(ctx, c.DatabaseName))
	}
	cluster := IsClusterURL(c.RedisURL) || slices.Contains(c.o.Env, "WINDI_REDIS_CLUSTER=1")
	if err := DeleteKeys(ctx, c.RedisURL, c.Prefix, cluster); err != nil {
		errs = append(errs, fmt.Errorf("delete Redis keys %s*: %w", c.Prefix, err))
	}
	return errors.Join(errs...)
}

// env is the environment of replica r: this process's, without any windi
// settings, then the deployment's, then Options.Env, then r.Env.
func (c *Cluster) env(r *Replica) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WINDI_") || k == "DATABASE_URL" || k == "REDIS_URL" || strings.HasPrefix(k, "JWT_") {
			continue
		}
		env = append(env, kv)
	}
	if !c.o.Embedded {
		env = append(env,
			"DATABASE_URL="+c.DatabaseURL,
			"REDIS_URL="+c.RedisURL,
			"JWT_SECRET="+c.Secret,
			"WINDI_REDIS_PREFIX="+c.Prefix,
		)
	}
	env = append(env,
		"JWT_TTL=2h",
		fmt.Sprintf("WINDI_ADDR=%s:%d", r.Host, r.Port),
		"WINDI_DATA_DIR="+r.dataDir(),
		"WINDI_LOG_LEVEL=info",
	)
	env = append(env, c.o.Env...)
	return append(env, r.Env...)
}

// SetDatabaseURL points every replica started from now on at another
// DATABASE_URL for the deployment's database (a proxy in front of it); for
// PlaceDB.
func (c *Cluster) SetDatabaseURL(u string) { c.DatabaseURL = u }

func (r *Replica) dataDir() string { return filepath.Join(r.c.Dir, fmt.Sprintf("data-%d", r.Index)) }

// LogPath is the replica's log (stdout and stderr, appended across
// restarts).
func (r *Replica) LogPath() string {
	return filepath.Join(r.c.Dir, fmt.Sprintf("windi-%d.log", r.Index))
}

func (r *Replica) proc() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// Name is the X-Windi-Replica of the running process ("" before it was
// ready).
func (r *Replica) Name() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.name
}

// Start starts the replica (again) on its port and waits up to 60 s for
// /readyz to answer 200.
func (r *Replica) Start() error {
	c := r.c
	bin, args := c.bin, []string{"serve"}
	if len(r.Wrap) > 0 {
		bin, args = r.Wrap[0], append(append(slices.Clone(r.Wrap[1:]), c.bin), args...)
	}
	p, err := startProc(fmt.Sprintf("windi-%d", r.Index), r.LogPath(), c.env(r), bin, args...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.p, r.name = p, ""
	r.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, hdr, err := httpGet(context.Background(), r.URL+"/readyz")
		if err == nil && code == http.StatusOK {
			name := hdr.Get("X-Windi-Replica")
			if name == "" {
				return fmt.Errorf("windi-%d: /readyz has no X-Windi-Replica", r.Index)
			}
			r.mu.Lock()
			r.name = name
			r.mu.Unlock()
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("windi-%d (pid %d) exited before it was ready: %v", r.Index, p.pid(), p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("windi-%d did not answer /readyz on %s within 60 s (last: %d %v)", r.Index, r.URL, code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGTERM (the replica closes its WebSockets with 1001 and
// drains) and SIGKILL after grace; it returns once the process is gone.
func (r *Replica) Stop(grace time.Duration) {
	if p := r.proc(); p != nil {
		p.stop(grace)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (r *Replica) Kill() {
	if p := r.proc(); p != nil {
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
	}
}

// Signal sends sig to the running process.
func (r *Replica) Signal(sig os.Signal) {
	if p := r.proc(); p != nil {
		p.signal(sig)
	}
}

// Wait waits up to d for the process to exit and reports whether it did.
func (r *Replica) Wait(d time.Duration) bool {
	p := r.proc()
	return p == nil || p.wait(d)
}

// Alive reports whether the process runs.
func (r *Replica) Alive() bool {
	p := r.proc()
	return p != nil && p.alive()
}

// PID is the process id of the latest start (0 before one).
func (r *Replica) PID() int {
	if p := r.proc(); p != nil {
		return p.pid()
	}
	return 0
}

// startNginx renders deploy/nginx/windi.conf.template the way the nginx
// image does (only its two placeholders) and starts nginx on a free port
// in front of every replica.
func (c *Cluster) startNginx() error {
	ngx, err := exec.LookPath("nginx")
	if err != nil {
		ngx = "/usr/sbin/nginx"
		if _, err := os.Stat(ngx); err != nil {
			return errors.New("nginx is not installed (apt-get install nginx; .ci/run's services step does)")
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	tmpl, err := os.ReadFile(filepath.Join(root, "deploy/nginx/windi.conf.template"))
	if err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	var ups strings.Builder
	for _, r := range c.Replicas {
		fmt.Fprintf(&ups, "server %s:%d; ", r.Host, r.Port)
	}
	conf := strings.NewReplacer(
		"${WINDI_UPSTREAM_SERVERS}", strings.TrimSpace(ups.String()),
		"${WINDI_PROXY_PORT}", fmt.Sprintf("127.0.0.1:%d", port),
	).Replace(string(tmpl))
	if err := os.WriteFile(filepath.Join(c.Dir, "windi.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	c.NginxErrorLog = filepath.Join(c.Dir, "nginx-error.log")
	// The template logs requests (query strings redacted) to stdout.
	c.NginxAccessLog = filepath.Join(c.Dir, "nginx-access.log")
	// One process (no master), so Pdeathsig takes nginx down with an
	// aborted test.
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[2]s notice;
events { worker_connections 4096; }
http {
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/windi.conf;
}
`, c.Dir, c.NginxErrorLog)
	mainPath := filepath.Join(c.Dir, "nginx.conf")
	if err := os.WriteFile(mainPath, []byte(main), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command(ngx, "-q", "-t", "-e", c.NginxErrorLog, "-p", c.Dir+"/", "-c", mainPath).CombinedOutput(); err != nil {
		return fmt.Errorf("nginx -t: %v\n%s", err, out)
	}
	p, err := startProc("nginx", c.NginxAccessLog, os.Environ(), ngx, "-e", c.NginxErrorLog, "-p", c.Dir+"/", "-c", mainPath)
	if err != nil {
		return err
	}
	c.nginx = p
	c.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, err := httpGet(context.Background(), c.URL+"/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if !p.alive() || time.Now().After(deadline) {
			b, _ := os.ReadFile(c.NginxErrorLog)
			return fmt.Errorf("nginx on %s not ready (%d %v):\n%s", c.URL, code, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// NginxPID is nginx's process id (0 without nginx).
func (c *Cluster) NginxPID() int {
	if c.nginx == nil {
		return 0
	}
	return c.nginx.pid()
}

var nginxDisabled = regexp.MustCompile(`upstream server temporarily disabled`)

// NginxStats counts, from nginx's logs, the requests nginx sent on to
// another replica after one refused or failed them (the access log lists
// every replica tried), the times it marked a replica failed (for
// fail_timeout, 10 s; logged for REST requests only: the WebSocket paths
// log critical errors alone, see the template), and the requests it
// answered 502 or 504 itself (no replica could take them).
func (c *Cluster) NginxStats() string {
	var retried, disabled, gateway int
	if b, err := os.ReadFile(c.NginxErrorLog); err == nil {
		disabled = len(nginxDisabled.FindAll(b, -1))
	}
	if b, err := os.ReadFile(c.NginxAccessLog); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if _, ups, ok := strings.Cut(line, "upstream="); ok && strings.Contains(strings.Fields(ups + " x")[0], ",") {
				retried++
			}
			if strings.Contains(line, `" 502 `) || strings.Contains(line, `" 504 `) {
				gateway++
			}
		}
	}
	return fmt.Sprintf("nginx: %d requests retried on another replica, replicas marked failed %d times, %d requests answered 502/504", retried, disabled, gateway)
}

// TokensInLogs counts the lines of nginx's logs that hold an access token
// (a JWT after token=): SPEC says tokens never reach logs.
func (c *Cluster) TokensInLogs() int {
	n := 0
	for _, l := range []string{c.NginxErrorLog, c.NginxAccessLog} {
		if b, err := os.ReadFile(l); err == nil && l != "" {
			n += strings.Count(string(b), "token=eyJ")
		}
	}
	return n
}

// NginxTraffic summarizes nginx's access log: requests, WebSocket upgrades
// and the requests each replica got.
func (c *Cluster) NginxTraffic() string {
	b, err := os.ReadFile(c.NginxAccessLog)
	if err != nil {
		return "nginx: no access log"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	upgrades := 0
	per := make([]int, len(c.Replicas))
	for _, l := range lines {
		if strings.Contains(l, `" 101 `) {
			upgrades++
		}
		for i, r := range c.Replicas {
			if strings.Contains(l, fmt.Sprintf("upstream=%s:%d", r.Host, r.Port)) {
				per[i]++
			}
		}
	}
	var to []string
	for i, n := range per {
		to = append(to, fmt.Sprintf("%d to windi-%d", n, i+1))
	}
	return fmt.Sprintf("nginx access log: %d requests, %d WebSocket upgrades; %s", len(lines), upgrades, strings.Join(to, ", "))
}

// LogCount counts the lines of every replica's log that contain each of
// substrs.
func (c *Cluster) LogCount(substrs ...string) int {
	n := 0
	for _, r := range c.Replicas {
		n += r.LogCount(substrs...)
	}
	return n
}

// LogCount counts the lines of the replica's log that contain each of
// substrs.
func (r *Replica) LogCount(substrs ...string) int {
	b, err := os.ReadFile(r.LogPath())
	if err != nil {
		return 0
	}
	n := 0
line:
	for _, l := range strings.Split(string(b), "\n") {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				continue line
			}
		}
		n++
	}
	return n
}

// Logs lists the deployment's log files that exist.
func (c *Cluster) Logs() []string {
	var logs []string
	for _, r := range c.Replicas {
		logs = append(logs, r.LogPath())
	}
	logs = append(logs, c.NginxErrorLog, c.NginxAccessLog)
	return slices.DeleteFunc(logs, func(p string) bool {
		if p == "" {
			return true
		}
		_, err := os.Stat(p)
		return err != nil
	})
}

// Tails returns the last n lines of each of logs, each under a heading.
func Tails(logs []string, n int) string {
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- last %d lines of %s:\n%s\n", min(n, len(lines)), filepath.Base(l), strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}

// copyLogs copies logs into dir, each named prefix+its base name.
func copyLogs(logs []string, dir, prefix string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, prefix+filepath.Base(l)), b, 0o644)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CopyLogs copies the deployment's logs into dir, each named prefix+its
// base name (windi-1.log, nginx-error.log…).
func (c *Cluster) CopyLogs(dir, prefix string) error { return copyLogs(c.Logs(), dir, prefix) }

// WaitReady polls every replica's /readyz until each answers want, at most
// d; it returns how long that took.
func (c *Cluster) WaitReady(want int, d time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		ok, last := true, ""
		for _, r := range c.Replicas {
			code, _, err := httpGet(context.Background(), r.URL+"/readyz")
			if err != nil || code != want {
				ok, last = false, fmt.Sprintf("windi-%d: %d %v", r.Index, code, err)
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

// WaitRouted polls GET /readyz through URL until one reaches r; it returns
// how long that took.
func (c *Cluster) WaitRouted(r *Replica, d time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		_, hdr, err := httpGet(context.Background(), c.URL+"/readyz")
		if err == nil && hdr.Get("X-Windi-Replica") == r.Name() {
			return time.Since(start), nil
		}
		if time.Since(start) > d {
			return time.Since(start), fmt.Errorf("no request reached windi-%d through %s within %s", r.Index, c.URL, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// noKeepAlive is for probes: each request on a fresh connection, so none
// lingers on a server being measured or killed.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}, Timeout: 5 * time.Second}

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

// Get answers the status and header of GET url within 3 s, on a fresh
// connection (a probe that leaves nothing open).
func Get(ctx context.Context, url string) (int, http.Header, error) { return httpGet(ctx, url) }
