package testkit_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testkit.RemoveBinary()
	os.Exit(code)
}

// requireServices skips without Postgres and Redis, except in CI, where
// their absence fails.
func requireServices(t *testing.T) {
	t.Helper()
	if testkit.PostgresReady() && testkit.RedisReady() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("Postgres (%s) and Redis (%s) must be running in CI", testkit.AdminDatabaseURL(), testkit.RedisURL())
	}
	t.Skip("needs Postgres and Redis (WINDI_TEST_DATABASE_URL, WINDI_TEST_REDIS_URL)")
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testkit.AdminDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func keysUnder(t *testing.T, prefix string) int {
	t.Helper()
	opt, err := redis.ParseURL(testkit.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// TestClusterLifecycle starts two replicas behind nginx on a database of
// their own, sends through the proxy, kills and restarts a replica, and
// checks that Close leaves no database, keys or processes behind.
func TestClusterLifecycle(t *testing.T) {
	requireServices(t)
	if testing.Short() {
		t.Skip("builds and starts servers")
	}
	ctx := context.Background()
	c, err := testkit.New(ctx, testkit.Options{Name: "kit-test", Replicas: 2, Nginx: true})
	if err != nil {
		if c != nil {
			_ = c.Close()
		}
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = c.Close()
		}
	}()
	if !databaseExists(t, c.DatabaseName) {
		t.Fatalf("database %s does not exist while the cluster runs", c.DatabaseName)
	}
	names := map[string]bool{}
	for _, r := range c.Replicas {
		if r.Name() == "" || !r.Alive() || r.PID() == 0 {
			t.Fatalf("windi-%d: name %q, alive %v, pid %d", r.Index, r.Name(), r.Alive(), r.PID())
		}
		names[r.Name()] = true
	}
	if len(names) != 2 {
		t.Fatalf("got replica names %v, want two different ones", names)
	}

	// A user on the deployment, through nginx: its data lands in the
	// cluster's database, its presence under the cluster's Redis prefix.
	cl, err := client.New(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	email := "kit-" + testkit.RandomHex(4) + "@example.com"
	if _, err := cl.Register(ctx, "Kit", email, "password-123456"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Login(ctx, email, "password-123456"); err != nil {
		t.Fatal(err)
	}
	conn, err := cl.Dial(ctx, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := testkit.WaitFor(10*time.Second, func() bool { return keysUnder(t, c.Prefix) > 0 }); err != nil {
		t.Fatalf("no Redis key under %s while a user is connected: %v", c.Prefix, err)
	}
	_ = conn.Close()

	// Kill replica 1: /readyz through nginx still answers (nginx tries the
	// other), WaitReady on every replica does not.
	r1 := c.Replicas[0]
	r1.Kill()
	if r1.Alive() {
		t.Fatal("windi-1 alive after Kill")
	}
	if code, _, err := testkit.Get(ctx, c.URL+"/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /readyz through nginx with windi-1 dead: %d %v, want 200", code, err)
	}
	if _, err := c.WaitReady(http.StatusOK, 300*time.Millisecond); err == nil {
		t.Fatal("WaitReady(200) succeeded with windi-1 dead")
	}
	// Handshakes with the token in the query while a replica is dead: nginx
	// tries the dead one first for some, and its error log must not quote
	// them (tokens never reach logs).
	tok, err := cl.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		s, _, err := cl.DialSocket(ctx, "/ws?token="+tok, client.SocketOptions{})
		if err != nil {
			t.Fatalf("dial through nginx with windi-1 dead: %v", err)
		}
		_ = s.CloseNow()
	}
	if !strings.Contains(c.NginxStats(), "requests retried") || strings.Contains(c.NginxStats(), " 0 requests retried") {
		t.Fatalf("NginxStats after requests to a dead replica: %q, want some retried", c.NginxStats())
	}
	if n := c.TokensInLogs(); n != 0 {
		t.Fatalf("got %d tokens in nginx's logs, want 0", n)
	}
	if err := r1.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReady(http.StatusOK, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRouted(r1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.NginxTraffic(), "WebSocket upgrades") {
		t.Fatalf("NginxTraffic: %q", c.NginxTraffic())
	}

	r2 := c.Replicas[1]
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if r1.Alive() || r2.Alive() {
		t.Fatal("a replica is alive after Close")
	}
	if databaseExists(t, c.DatabaseName) {
		t.Fatalf("database %s still exists after Close", c.DatabaseName)
	}
	if n := keysUnder(t, c.Prefix); n != 0 {
		t.Fatalf("got %d Redis keys under %s after Close, want 0", n, c.Prefix)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("the deployment's own directory %s is still there after Close (%v)", c.Dir, err)
	}
}

// TestEmbedded runs the no-setup default: one replica on SQLite with the
// in-process broker, its generated JWT secret in its data directory.
func TestEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a server")
	}
	c := testkit.Start(t, testkit.Options{Name: "kit-embedded", Embedded: true})
	if c.DatabaseURL != "" || c.RedisURL != "" {
		t.Fatalf("embedded deployment has DatabaseURL %q, RedisURL %q; want none", c.DatabaseURL, c.RedisURL)
	}
	if c.URL != c.Replicas[0].URL {
		t.Fatalf("URL %s, want the replica's %s without nginx", c.URL, c.Replicas[0].URL)
	}
	if b, err := os.ReadFile(c.SecretFile()); err != nil || len(b) < 32 {
		t.Fatalf("secret file %s: %d bytes, %v", c.SecretFile(), len(b), err)
	}
	if _, err := testkit.New(context.Background(), testkit.Options{Embedded: true, Replicas: 2}); err == nil {
		t.Fatal("two embedded replicas: no error")
	}
	c.Replicas[0].Stop(20 * time.Second)
	if c.Replicas[0].Alive() {
		t.Fatal("alive after Stop")
	}
	if n := c.LogCount(`"level":"INFO"`); n == 0 {
		t.Fatal("no INFO line in the replica's log")
	}
}
