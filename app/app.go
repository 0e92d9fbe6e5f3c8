// Package app wires WinDI Chat together: configuration, logger, database,
// chat service and HTTP server. cmd/windi runs it; end-to-end tests run it
// on 127.0.0.1:0 the same way.
package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/docs"
	"github.com/windi-chat/windi/handlers"
	"github.com/windi-chat/windi/metrics"
	"github.com/windi-chat/windi/realtime"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/web"
)

// NonSpecPaths are the paths served outside api/openapi.yaml (WebSocket,
// docs, metrics, the spec files, the web client): a path equal to one of
// them or below it. "/" stands for the root path alone. The request
// validator skips them, and so does the tests' response check.
var NonSpecPaths = []string{"/ws", "/docs", "/metrics", "/openapi.yaml", "/openapi.json", web.Root, web.AssetPrefix}

// Main is one running server. Build it with New, start it with Open, stop
// it with Close.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Argon2 is the password hashing cost; tests lower it.
	Argon2 auth.Argon2Params

	// Broker, when set before Open, is used instead of the one the
	// configuration names (tests share an in-process broker between
	// servers this way). BrokerOptions configure the one Open builds.
	Broker        broker.Broker
	BrokerOptions broker.Options
	// Realtime tunes WebSocket delivery; Open fills in the logger, the
	// allowed origins and the replica id.
	Realtime realtime.Config
	// WrapHandler, when set before Open, wraps the HTTP handler the server
	// serves: tests check every response against api/openapi.yaml this way.
	WrapHandler func(http.Handler) http.Handler
	// HTTP bounds how long a client may hold a connection; zero fields
	// take the defaults of DefaultHTTPTimeouts (tests shorten them).
	HTTP HTTPTimeouts
	// HashSlots and HashWait bound concurrent password hashing (see
	// chat.Config); zero means GOMAXPROCS and auth.DefaultHashWait.
	HashSlots int
	HashWait  time.Duration
	// Now, when set before Open, is the clock of sessions and tokens
	// (tests move it to expire them).
	Now func() time.Time

	Metrics *metrics.Metrics
	Store   *repo.Store
	Service *chat.Service
	Hub     *realtime.Hub
	Echo    *echo.Echo

	ln   net.Listener
	http *http.Server
}

// HTTPTimeouts are the public server's connection timeouts.
type HTTPTimeouts struct {
	// ReadHeader bounds the request line and headers; Read bounds the
	// whole request, body included, so a body trickled a byte at a time
	// cannot hold a connection (and a goroutine) for ever. WebSockets are
	// hijacked before it runs out, and the WebSocket code sets its own
	// deadlines. Idle is how long a keep-alive connection may wait for its
	// next request: longer than nginx's upstream keepalive_timeout (60 s),
	// so that nginx, not this server, closes idle upstream connections and
	// never sends a request on one being closed.
	ReadHeader, Read, Idle time.Duration
}

// DefaultHTTPTimeouts are the production timeouts.
var DefaultHTTPTimeouts = HTTPTimeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Idle: 75 * time.Second}

// MaxHeaderBytes bounds a request's line and headers (net/http allows 1
// MiB by default): a bearer token is a few hundred bytes, and nginx itself
// refuses header lines over 8 KiB by default. Larger requests get 431.
const MaxHeaderBytes = 16 << 10

// New returns a Main for cfg that logs to logger.
func New(cfg Config, logger *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: logger, Argon2: auth.DefaultArgon2}
}

// Open connects to the database, runs migrations, builds the service and
// the HTTP server, and starts listening (not yet serving).
func (m *Main) Open(ctx context.Context) error {
	store, err := repo.Open(ctx, m.Config.DatabaseURL, m.Config.DataDir)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	m.Store = store
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	secret, err := m.jwtSecret()
	if err != nil {
		return err
	}
	if m.BrokerOptions.Prefix == "" {
		m.BrokerOptions.Prefix = m.Config.RedisPrefix
	}
	if m.Broker == nil {
		if m.Broker, err = NewBroker(ctx, m.Config, m.BrokerOptions); err != nil {
			return err
		}
	}
	lim := m.Config.Limits
	m.Metrics = metrics.New()
	svc, err := chat.New(chat.Config{
		Store: store, Broker: m.Broker, Metrics: m.Metrics, Logger: m.Logger,
		Tokens: auth.NewTokens(secret, m.Config.JWTTTL), Argon2: m.Argon2,
		HashSlots: m.HashSlots, HashWait: m.HashWait,
		Limits: chat.Limits{LoginPerEmail: lim.LoginPerEmail, LoginPerIP: lim.LoginPerIP, RegisterPerIP: lim.RegisterPerIP,
			UserSendRate: lim.UserSendRate},
		Sequencer:  chat.SequencerConfig{Shards: m.Config.SendShards},
		RefreshTTL: m.Config.RefreshTTL, Now: m.Now,
	})
	if err != nil {
		return err
	}
	m.Service = svc

	rc := m.Realtime
	if rc.SendRate == 0 {
		rc.SendRate, rc.SendBurst = lim.SendRate, lim.SendBurst
		if lim.SendRate == 0 {
			rc.SendRate = -1 // off
		}
	}
	if rc.MaxConnsPerUser == 0 {
		rc.MaxConnsPerUser = lim.MaxConnsPerUser
	}
	if rc.MaxConns == 0 {
		rc.MaxConns = lim.MaxConns
	}
	rc.Logger = m.Logger
	rc.Metrics = m.Metrics
	if rc.PresenceTTL == 0 {
		rc.PresenceTTL = m.BrokerOptions.PresenceTTL
	}
	if rc.AllowedOrigins == nil {
		rc.AllowedOrigins = m.Config.AllowedOrigins
	}
	name := m.Config.ReplicaName
	if name == "" {
		name = randomHex(4)
	}
	if rc.Replica == "" {
		// Presence entries are keyed by this id, so it must differ between
		// processes even when operators give two replicas one name.
		rc.Replica = name + "-" + randomHex(3)
	}
	m.Hub = realtime.New(rc, svc, store, m.Broker)
	if err := m.Hub.Start(ctx); err != nil {
		return err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// The replica's name, not its host name and pid (which tell an attacker
	// about the machine), unless debugging.
	replica := name
	if m.Config.LogLevel <= slog.LevelDebug {
		host, _ := os.Hostname()
		replica = fmt.Sprintf("%s; id=%s; host=%s; pid=%d", name, m.Hub.Replica(), host, os.Getpid())
	}
	e.Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// Tells clients (and the end-to-end test) which replica answered.
			c.Response().Header().Set("X-Windi-Replica", replica)
			return next(c)
		}
	})
	srv := handlers.NewServer(svc, dbCheck{store}, brokerCheck{m.Broker})
	trusted := m.Config.TrustedProxies
	if trusted == nil {
		trusted, _ = parseTrustedProxies(DefaultTrustedProxies)
	}
	if err := handlers.Mount(e, srv, svc, handlers.Options{
		Logger:         m.Logger,
		Metrics:        m.Metrics,
		Unvalidated:    NonSpecPaths,
		TrustedProxies: trusted,
	}); err != nil {
		return err
	}
	m.Hub.Mount(e)
	e.GET("/metrics", echo.WrapHandler(m.Metrics.Handler()))
	docs.Mount(e)
	web.Mount(e)
	m.Echo = e

	ln, err := net.Listen("tcp", m.Config.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", m.Config.Addr, err)
	}
	m.ln = ln
	var handler http.Handler = e
	if m.WrapHandler != nil {
		handler = m.WrapHandler(e)
	}
	to := m.HTTP
	def := DefaultHTTPTimeouts
	m.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cmp.Or(to.ReadHeader, def.ReadHeader),
		ReadTimeout:       cmp.Or(to.Read, def.Read),
		IdleTimeout:       cmp.Or(to.Idle, def.Idle),
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	if m.Config.PprofAddr != "" {
		m.startPprof()
	}
	mode := "embedded"
	if m.Config.DatabaseURL != "" {
		mode = "scaled"
	}
	m.Logger.Info("server listening", "event", "server.start", "addr", ln.Addr().String(), "mode", mode, "dialect", store.Dialect())
	return nil
}

// Addr is the address the server listens on.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// URL is the server's base URL.
func (m *Main) URL() string { return "http://" + m.Addr() }

// Serve serves until ctx is done, then shuts down gracefully.
func (m *Main) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- m.http.Serve(m.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	m.Logger.Info("shutting down", "event", "server.stop")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// WebSockets first: they close with 1001 and their clients move to
	// another replica while this one drains its HTTP requests.
	m.Hub.Shutdown(sctx)
	return m.http.Shutdown(sctx)
}

// Close releases everything Open acquired.
func (m *Main) Close() error {
	var errs []error
	if m.http != nil {
		errs = append(errs, m.http.Close())
	}
	if m.Hub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.Hub.Shutdown(ctx)
		cancel()
	}
	if m.Service != nil {
		m.Service.Close() // sends already queued are committed and published
	}
	if m.Broker != nil {
		errs = append(errs, m.Broker.Close())
	}
	if m.Store != nil {
		errs = append(errs, m.Store.Close())
	}
	return errors.Join(errs...)
}

// jwtSecret returns JWT_SECRET, or in embedded mode a random secret
// generated once and kept in the data directory.
func (m *Main) jwtSecret() ([]byte, error) {
	if m.Config.JWTSecret != "" {
		if err := checkSecret(m.Config.JWTSecret); err != nil {
			if !m.Config.InsecureDev {
				return nil, err
			}
			m.Logger.Warn("insecure JWT_SECRET accepted (WINDI_INSECURE_DEV=1): anyone who knows it can sign in as anyone", "event", "config.weak_secret", "reason", err.Error())
		}
		return []byte(m.Config.JWTSecret), nil
	}
	path := filepath.Join(m.Config.DataDir, "jwt_secret")
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 32 {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("%s holds no usable secret; delete it to generate a new one", path)
	}
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	secret := randomHex(32)
	// Write a private temporary file, then link it into place: the link fails
	// when another process got there first, and nobody reads a half-written
	// secret.
	tmp, err := os.CreateTemp(m.Config.DataDir, ".jwt_secret-*")
	if err != nil {
		return nil, fmt.Errorf("write JWT secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write JWT secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write JWT secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return m.jwtSecret()
	} else if err != nil {
		return nil, fmt.Errorf("write JWT secret: %w", err)
	}
	m.Logger.Info("generated a JWT secret", "event", "config.secret_generated", "path", path)
	return []byte(secret), nil
}

// MinSecretBytes is the shortest JWT_SECRET a server starts with: HS256
// needs a key as long as its hash (RFC 7518 §3.2).
const MinSecretBytes = 32

// ComposeExampleSecret is the JWT_SECRET that docker-compose.yml's example
// once shipped as its default: public, so never a secret.
const ComposeExampleSecret = "change-me-this-is-not-a-secret-0123456789abcdef"

// checkSecret says why secret must not sign tokens, or returns nil.
func checkSecret(secret string) error {
	const fix = "use a random one, such as JWT_SECRET=$(openssl rand -hex 32), or set WINDI_INSECURE_DEV=1 for a throwaway development server"
	switch {
	case len(secret) < MinSecretBytes:
		return fmt.Errorf("JWT_SECRET: %d bytes, under the %d required: %s", len(secret), MinSecretBytes, fix)
	case secret == ComposeExampleSecret:
		return fmt.Errorf("JWT_SECRET: the public example value docker-compose.yml once shipped: %s", fix)
	}
	return nil
}

// NewBroker returns the broker cfg names: Redis at REDIS_URL, or the
// in-process broker when it is unset.
func NewBroker(ctx context.Context, cfg Config, opts broker.Options) (broker.Broker, error) {
	if opts.Prefix == "" {
		opts.Prefix = cfg.RedisPrefix
	}
	if cfg.RedisURL == "" {
		return broker.NewMemory(opts), nil
	}
	if cfg.RedisCluster {
		b, err := broker.NewRedisCluster(ctx, cfg.RedisURL, opts)
		if err != nil {
			return nil, fmt.Errorf("connect to redis cluster: %w", err)
		}
		return b, nil
	}
	b, err := broker.NewRedis(ctx, cfg.RedisURL, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	return b, nil
}

// randomHex returns n random bytes in hex. crypto/rand.Read never fails
// (it panics if the system's source breaks).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type brokerCheck struct{ b broker.Broker }

func (brokerCheck) Name() string                      { return "broker" }
func (c brokerCheck) Check(ctx context.Context) error { return c.b.Ping(ctx) }

type dbCheck struct{ s *repo.Store }

func (dbCheck) Name() string                      { return "database" }
func (d dbCheck) Check(ctx context.Context) error { return d.s.Ping(ctx) }

// startPprof serves net/http/pprof on its own listener, off the public
// port; load runs enable it to find bottlenecks.
func (m *Main) startPprof() {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Benchmarks measure resident memory: this returns freed memory to the
	// OS first, so garbage does not count as growth.
	mux.HandleFunc("/debug/freeosmemory", func(w http.ResponseWriter, _ *http.Request) {
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Addr: m.Config.PprofAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		m.Logger.Info("pprof listening", "event", "pprof.start", "addr", m.Config.PprofAddr)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Warn("pprof stopped", "event", "pprof.error", "err", err)
		}
	}()
}
