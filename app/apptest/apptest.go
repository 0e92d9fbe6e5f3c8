// Package apptest runs real WinDI Chat servers for tests: app.Main on
// 127.0.0.1:0 over embedded SQLite or a fresh Postgres database, with the
// project's Go SDK (package client and its generated REST part,
// client/rest) and helpers to register and log in users.
//
// Every response such a server sends on a path of the spec, whoever the
// client, and every frame the WS client sends (Send) or receives, is
// checked against api/openapi.yaml (package speccheck); a mismatch fails
// the test that started the server.
package apptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo/repotest"
	"github.com/windi-chat/windi/testkit"
)

// Dialects are the modes every end-to-end test runs on: "sqlite"
// (embedded database, in-process broker) and "postgres" (Postgres and one
// Redis), or the comma-separated list WINDI_TEST_DIALECTS names, which may
// also hold "cluster" (Postgres and the Redis Cluster of
// WINDI_TEST_REDIS_CLUSTER_URL, SPEC §13). .ci/run runs a subset of the
// realtime scenarios with WINDI_TEST_DIALECTS=cluster.
var Dialects = dialectsFromEnv()

func dialectsFromEnv() []string {
	v := os.Getenv("WINDI_TEST_DIALECTS")
	if v == "" {
		return []string{"sqlite", "postgres"}
	}
	var ds []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			ds = append(ds, d)
		}
	}
	return ds
}

// testPoolSize caps each test server's Postgres connections.
const testPoolSize = 6

// Secret is the JWT secret shared by test servers on one database.
const Secret = "apptest-secret-0123456789abcdef-0123456789"

// Server is one running server.
type Server struct {
	*app.Main
	URL string
	// SDK is a client.Client of the server with no token of its own:
	// every request names its user (User.Auth, Bearer, a token= in a
	// WebSocket path). Never log it in, or every request would carry
	// that user's token.
	SDK *client.Client
	// Client is SDK.REST, the REST client generated from
	// api/openapi.yaml.
	Client *rest.ClientWithResponses
	// Logs holds everything the server logged, as JSON lines.
	Logs *SyncBuffer
	// Spec checks the server's responses and frames against
	// api/openapi.yaml; its Stats say how many it checked.
	Spec *speccheck.Checker
	stop func()
	rep  speccheck.Reporter
}

// Stop shuts the server down as SIGTERM does (WebSockets close with 1001)
// and waits for it. Stopping twice is harmless.
func (s *Server) Stop() { s.stop() }

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer = testkit.SyncBuffer

// Env is the shared backing of one or more servers: a database and a
// broker they all use. On "sqlite" the servers share one in-process broker
// (each its own replica view of it); on "postgres" they share Redis under a
// random key prefix; on "cluster" they share the test Redis Cluster under
// a random key prefix.
type Env struct {
	Dialect      string
	DatabaseURL  string
	DataDir      string
	RedisURL     string
	RedisCluster bool // RedisURL names a Redis Cluster
	Prefix       string
	// PresenceTTL, when set before Start, shortens presence expiry.
	PresenceTTL time.Duration
	memory      *broker.Memory
}

// NewEnv prepares a fresh database and broker for dialect ("sqlite",
// "postgres" or "cluster").
func NewEnv(t testing.TB, dialect string) *Env {
	t.Helper()
	e := &Env{Dialect: dialect, DataDir: t.TempDir(), Prefix: "windi-test-" + RandomID() + ":"}
	switch dialect {
	case "sqlite":
	case "postgres":
		e.DatabaseURL = repotest.NewPostgresURL(t)
		e.RedisURL = RedisURL(t, e.Prefix)
	case "cluster":
		e.RedisURL = RedisClusterURL(t, e.Prefix)
		e.RedisCluster = true
		e.DatabaseURL = repotest.NewPostgresURL(t)
	default:
		t.Fatalf("apptest: unknown dialect %q (want sqlite, postgres or cluster)", dialect)
	}
	return e
}

// Shared reports whether servers on e are separate replicas that meet
// through Redis (postgres, cluster), rather than one embedded instance.
func (e *Env) Shared() bool { return e.Dialect != "sqlite" }

// RedisClusterURL returns the test Redis Cluster
// (WINDI_TEST_REDIS_CLUSTER_URL; bench/redis-cluster.sh starts one) after
// checking every master answers, and deletes the keys under prefix on
// every master when the test ends. Without it the test skips, or fails
// when CI=true.
func RedisClusterURL(t testing.TB, prefix string) string {
	t.Helper()
	u := os.Getenv("WINDI_TEST_REDIS_CLUSTER_URL")
	unreachable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format+" (CI=true, so this fails)", args...)
		}
		t.Skipf("skipping: "+format, args...)
	}
	if u == "" {
		unreachable("WINDI_TEST_REDIS_CLUSTER_URL is not set; bench/redis-cluster.sh start prints one")
	}
	opts, err := redis.ParseClusterURL(u)
	if err != nil {
		t.Fatalf("WINDI_TEST_REDIS_CLUSTER_URL: %v", err)
	}
	rdb := redis.NewClusterClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
		_ = rdb.Close()
		unreachable("redis cluster at %s unreachable: %v", u, err)
	}
	_ = rdb.Close()
	t.Cleanup(func() {
		if err := testkit.DeleteKeys(context.Background(), u, prefix, true); err != nil {
			t.Logf("delete the test's Redis Cluster keys: %v", err)
		}
	})
	return u
}

// RedisURL returns the test Redis (WINDI_TEST_REDIS_URL, default
// redis://127.0.0.1:6379/0) after checking it answers, and deletes the keys
// under prefix when the test ends. Unreachable Redis skips the test, or
// fails it when CI=true.
func RedisURL(t testing.TB, prefix string) string {
	t.Helper()
	u := os.Getenv("WINDI_TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("WINDI_TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis at %s unreachable (CI=true, so this fails): %v", u, err)
		}
		t.Skipf("skipping: redis at %s unreachable: %v", u, err)
	}
	_ = rdb.Close()
	t.Cleanup(func() {
		if err := testkit.DeleteKeys(context.Background(), u, prefix, false); err != nil {
			t.Logf("delete the test's Redis keys: %v", err)
		}
	})
	return u
}

// ForEachDialect runs fn as a subtest per dialect, each with a fresh Env.
func ForEachDialect(t *testing.T, fn func(t *testing.T, env *Env)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) { fn(t, NewEnv(t, d)) })
	}
}

// Start runs a server on env until the test ends. mutate, when given,
// adjusts the configuration first.
func (e *Env) Start(t testing.TB, mutate ...func(*app.Config)) *Server {
	t.Helper()
	return e.StartMain(t, func(m *app.Main) {
		for _, f := range mutate {
			f(&m.Config)
		}
	})
}

// StartMain runs a server on env until the test ends; tune adjusts the
// app.Main (configuration, realtime tuning) before it opens.
func (e *Env) StartMain(t testing.TB, tune func(*app.Main)) *Server {
	t.Helper()
	cfg := app.Config{
		Addr: "127.0.0.1:0", DataDir: e.DataDir, DatabaseURL: e.DatabaseURL,
		JWTSecret: Secret, JWTTTL: time.Hour, LogLevel: slog.LevelDebug,
	}
	cfg.RedisURL, cfg.RedisCluster = e.RedisURL, e.RedisCluster
	logs := &SyncBuffer{}
	m := app.New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	m.Argon2 = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}
	m.BrokerOptions = broker.Options{Prefix: e.Prefix, PresenceTTL: e.PresenceTTL}
	m.Realtime.GapHoldback = 50 * time.Millisecond
	spec, err := speccheck.Default()
	if err != nil {
		t.Fatal(err)
	}
	// Made before the server's own cleanup is registered, so that it
	// reports until the server has stopped.
	rep := speccheck.ForTest(t)
	m.WrapHandler = func(h http.Handler) http.Handler { return spec.Middleware(rep, h) }
	tune(m)
	if m.Config.RedisURL == "" {
		if e.memory == nil {
			e.memory = broker.NewMemory(m.BrokerOptions)
			m.Broker = e.memory
		} else {
			m.Broker = e.memory.Replica()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Open(ctx); err != nil {
		cancel()
		_ = m.Close()
		t.Fatalf("open server: %v", err)
	}
	if m.Store.Dialect() == "postgres" {
		// Tests run many servers at once against one Postgres (100
		// connections by default): a test server's pool stays small.
		m.Store.DB().DB.SetMaxOpenConns(testPoolSize)
		m.Store.DB().DB.SetMaxIdleConns(testPoolSize)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("close server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	c, err := client.New(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Main: m, URL: m.URL(), SDK: c, Client: c.REST, Logs: logs, Spec: spec, stop: stop, rep: rep}
}

// User is a registered, logged-in user: Token is the access token of its
// session SessionID, Refresh that session's refresh token.
type User struct {
	rest.User
	Password  string
	Token     string
	Refresh   string
	SessionID int64
}

// Auth returns a request editor that sends u's token.
func (u User) Auth() rest.RequestEditorFn { return Bearer(u.Token) }

// Bearer returns a request editor that sends token.
func Bearer(token string) rest.RequestEditorFn {
	return func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

// RandomID returns a short random hex string.
func RandomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewUser registers a user named name with a random email and logs it in.
func (s *Server) NewUser(t testing.TB, name string) User {
	t.Helper()
	ctx := context.Background()
	email := strings.ToLower(name) + "-" + RandomID() + "@example.com"
	pw := "password-" + RandomID()
	u, err := s.SDK.Register(ctx, name, email, pw)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	tok := s.LoginToken(t, email, pw)
	return User{User: *u, Password: pw, Token: tok.AccessToken, Refresh: tok.RefreshToken, SessionID: tok.SessionID}
}

// Login logs in (a new session) and returns the access token.
func (s *Server) Login(t testing.TB, email, password string) string {
	t.Helper()
	return s.LoginToken(t, email, password).AccessToken
}

// LoginToken logs in (a new session) and returns the whole answer.
func (s *Server) LoginToken(t testing.TB, email, password string) rest.Token {
	t.Helper()
	// A Client of its own: Login keeps the tokens in the Client, and s.SDK
	// must stay without one.
	c, err := client.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Login(context.Background(), email, password)
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return *tok
}

// Session logs u in once more: another session (device) of the same user.
func (s *Server) Session(t testing.TB, u User) User {
	t.Helper()
	tok := s.LoginToken(t, u.Email, u.Password)
	u.Token, u.Refresh, u.SessionID = tok.AccessToken, tok.RefreshToken, tok.SessionID
	return u
}

// Do sends a raw request (through client.Client.Do) with token, unless
// empty, as its bearer token, and returns the status, headers and body.
func (s *Server) Do(t testing.TB, method, path, contentType string, payload io.Reader, token string) (int, http.Header, []byte) {
	t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.SDK.Do(context.Background(), method, path, h, payload)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// Form encodes form values.
func Form(kv ...string) io.Reader {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return strings.NewReader(v.Encode())
}
