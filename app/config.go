package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is the server's configuration, read from the environment (SPEC §9).
type Config struct {
	Addr         string        // WINDI_ADDR
	DataDir      string        // WINDI_DATA_DIR
	DatabaseURL  string        // DATABASE_URL; empty means embedded SQLite
	RedisURL     string        // REDIS_URL; empty means the in-process broker
	RedisCluster bool          // REDIS_URL names a Redis Cluster (WINDI_REDIS_CLUSTER, or addr= in the URL)
	JWTSecret    string        // JWT_SECRET; required in scaled mode
	JWTTTL       time.Duration // JWT_TTL: access tokens
	RefreshTTL   time.Duration // WINDI_REFRESH_TTL: refresh tokens, sliding
	// InsecureDev (WINDI_INSECURE_DEV=1) lets a short JWT_SECRET, or the
	// one shipped in docker-compose.yml's example, start a server.
	InsecureDev    bool
	LogLevel       slog.Level // WINDI_LOG_LEVEL
	AllowedOrigins []string   // WINDI_ALLOWED_ORIGINS, comma-separated
	Limits         Limits     // abuse limits; see limits.go
	RedisPrefix    string     // WINDI_REDIS_PREFIX: keys and channels of this deployment
	PprofAddr      string     // WINDI_PPROF_ADDR: serve net/http/pprof there when set
	SendShards     int        // WINDI_SEND_SHARDS: send transactions in flight per replica
	// TrustedProxies (WINDI_TRUSTED_PROXIES) are the peers whose
	// X-Forwarded-For is believed; nil means DefaultTrustedProxies, empty
	// means none.
	TrustedProxies []*net.IPNet
	// ReplicaName (WINDI_REPLICA_NAME) is what X-Windi-Replica shows;
	// empty means a random id chosen at start-up.
	ReplicaName string
}

// DefaultTrustedProxies is WINDI_TRUSTED_PROXIES's default: loopback only,
// a proxy on the same host (as in CI and the end-to-end tests).
const DefaultTrustedProxies = "127.0.0.0/8,::1/128"

// EnvVar documents one environment variable for --help.
type EnvVar struct {
	Name, Default, Help string
}

// EnvVars lists every variable the server reads, in --help order.
var EnvVars = []EnvVar{
	{"WINDI_ADDR", ":8000", "address to listen on"},
	{"WINDI_DATA_DIR", "./data", "directory for the embedded SQLite database and the generated JWT secret"},
	{"DATABASE_URL", "", "postgres://… URL; unset means embedded SQLite in WINDI_DATA_DIR"},
	{"REDIS_URL", "", "redis://… URL; unset means the in-process broker; redis://host1:port?addr=host2:port&… names a Redis Cluster"},
	{"WINDI_REDIS_CLUSTER", "", "1: REDIS_URL is a seed address of a Redis Cluster (implied when REDIS_URL has addr=)"},
	{"JWT_SECRET", "", "HS256 signing secret; required when DATABASE_URL or REDIS_URL is set, generated and kept in WINDI_DATA_DIR otherwise"},
	{"JWT_TTL", "15m", "lifetime of access tokens (Go duration); clients refresh them with their refresh token"},
	{"WINDI_REFRESH_TTL", "720h", "lifetime of a refresh token, sliding: each refresh starts it again (Go duration)"},
	{"WINDI_INSECURE_DEV", "", "1: accept a JWT_SECRET under 32 bytes or the docker-compose.yml example's, for throwaway development servers only"},
	{"WINDI_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"WINDI_ALLOWED_ORIGINS", "", "comma-separated origins allowed to open WebSockets from a browser; unset allows same-host only"},
	{"WINDI_REDIS_PREFIX", "windi:", "prefix of every Redis key and channel, so deployments can share one Redis"},
	{"WINDI_PPROF_ADDR", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); unset: off"},
	{"WINDI_SEND_SHARDS", "1", "send transactions in flight per replica: chats are spread over this many sequencer workers, each committing everything queued for its chats in one transaction"},
	{"WINDI_TRUSTED_PROXIES", DefaultTrustedProxies, "comma-separated CIDRs (or addresses) of the proxies whose X-Forwarded-For is believed for the client IP; none: believe no one"},
	{"WINDI_REPLICA_NAME", "", "name shown in the X-Windi-Replica response header (letters, digits, . _ -; up to 64); unset: a random id per process"},
}

// LoadConfig reads the configuration through getenv. A variable set to the
// empty string counts as unset. A bad value fails with an error naming the
// variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	get := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v != "" {
			return v
		}
		for _, ev := range EnvVars {
			if ev.Name == name {
				return ev.Default
			}
		}
		return ""
	}
	cfg := Config{
		Addr: get("WINDI_ADDR"), DataDir: get("WINDI_DATA_DIR"),
		DatabaseURL: get("DATABASE_URL"), RedisURL: get("REDIS_URL"), JWTSecret: get("JWT_SECRET"),
	}
	if err := checkAddr(cfg.Addr); err != nil {
		return Config{}, fmt.Errorf("WINDI_ADDR: %q %v", cfg.Addr, err)
	}
	// URLs may hold passwords: errors describe them but never echo them.
	if cfg.DatabaseURL != "" {
		u, err := url.Parse(cfg.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || checkURLPort(u) != nil {
			return Config{}, fmt.Errorf("DATABASE_URL: want a postgres://user:password@host:port/database URL")
		}
	}
	if err := cfg.loadRedis(get("WINDI_REDIS_CLUSTER")); err != nil {
		return Config{}, err
	}
	if (cfg.DatabaseURL != "" || cfg.RedisURL != "") && cfg.JWTSecret == "" {
		return Config{}, fmt.Errorf("JWT_SECRET: required when DATABASE_URL or REDIS_URL is set (replicas must share it)")
	}
	ttl, err := time.ParseDuration(get("JWT_TTL"))
	if err != nil || ttl <= 0 {
		return Config{}, fmt.Errorf("JWT_TTL: %q is not a positive duration such as 15m", get("JWT_TTL"))
	}
	cfg.JWTTTL = ttl
	if cfg.RefreshTTL, err = time.ParseDuration(get("WINDI_REFRESH_TTL")); err != nil || cfg.RefreshTTL <= 0 {
		return Config{}, fmt.Errorf("WINDI_REFRESH_TTL: %q is not a positive duration such as 720h", get("WINDI_REFRESH_TTL"))
	}
	if v := get("WINDI_INSECURE_DEV"); v != "" {
		if cfg.InsecureDev, err = strconv.ParseBool(v); err != nil {
			return Config{}, fmt.Errorf("WINDI_INSECURE_DEV: %q is not 1 or 0", v)
		}
	}
	if cfg.JWTSecret != "" && !cfg.InsecureDev {
		if err := checkSecret(cfg.JWTSecret); err != nil {
			return Config{}, err
		}
	}
	if cfg.Limits, err = loadLimits(get); err != nil {
		return Config{}, err
	}
	cfg.RedisPrefix = get("WINDI_REDIS_PREFIX")
	if cfg.SendShards, err = strconv.Atoi(get("WINDI_SEND_SHARDS")); err != nil || cfg.SendShards < 1 || cfg.SendShards > 256 {
		return Config{}, fmt.Errorf("WINDI_SEND_SHARDS: %q is not a number from 1 to 256", get("WINDI_SEND_SHARDS"))
	}
	if cfg.PprofAddr = get("WINDI_PPROF_ADDR"); cfg.PprofAddr != "" {
		if err := checkAddr(cfg.PprofAddr); err != nil {
			return Config{}, fmt.Errorf("WINDI_PPROF_ADDR: %q %v", cfg.PprofAddr, err)
		}
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(get("WINDI_LOG_LEVEL"))); err != nil {
		return Config{}, fmt.Errorf("WINDI_LOG_LEVEL: %q is not debug, info, warn or error", get("WINDI_LOG_LEVEL"))
	}
	if cfg.DatabaseURL == "" || cfg.JWTSecret == "" {
		// The data directory is used: it holds the SQLite file or the
		// generated secret, and is created when missing.
		if fi, err := os.Stat(cfg.DataDir); err == nil && !fi.IsDir() {
			return Config{}, fmt.Errorf("WINDI_DATA_DIR: %q is not a directory", cfg.DataDir)
		}
	}
	if cfg.TrustedProxies, err = parseTrustedProxies(get("WINDI_TRUSTED_PROXIES")); err != nil {
		return Config{}, fmt.Errorf("WINDI_TRUSTED_PROXIES: %v", err)
	}
	if cfg.ReplicaName = get("WINDI_REPLICA_NAME"); cfg.ReplicaName != "" && !validReplicaName(cfg.ReplicaName) {
		return Config{}, fmt.Errorf("WINDI_REPLICA_NAME: %q is not 1..64 letters, digits, '.', '_' or '-'", cfg.ReplicaName)
	}
	for _, o := range strings.Split(get("WINDI_ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			if err := checkOrigin(o); err != nil {
				return Config{}, fmt.Errorf("WINDI_ALLOWED_ORIGINS: %q %v", o, err)
			}
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, nil
}

// loadRedis checks REDIS_URL and decides whether it names a Redis Cluster:
// WINDI_REDIS_CLUSTER says so, or the URL lists more addresses (addr=),
// which only go-redis's cluster URL form has (SPEC §13).
func (cfg *Config) loadRedis(cluster string) error {
	if cluster != "" {
		on, err := strconv.ParseBool(cluster)
		if err != nil {
			return fmt.Errorf("WINDI_REDIS_CLUSTER: %q is not 1 or 0", cluster)
		}
		if on && cfg.RedisURL == "" {
			return fmt.Errorf("WINDI_REDIS_CLUSTER: set, but REDIS_URL is not")
		}
		cfg.RedisCluster = on
	}
	if cfg.RedisURL == "" {
		return nil
	}
	u, err := url.Parse(cfg.RedisURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || checkURLPort(u) != nil {
		return fmt.Errorf("REDIS_URL: want a redis://[user:password@]host:port/db URL")
	}
	if u.Query().Has("addr") {
		if cluster != "" && !cfg.RedisCluster {
			return fmt.Errorf("REDIS_URL: lists several addresses (addr=), which names a Redis Cluster, but WINDI_REDIS_CLUSTER is 0")
		}
		cfg.RedisCluster = true
	}
	if cfg.RedisCluster {
		if p := strings.TrimPrefix(u.Path, "/"); p != "" && p != "0" {
			return fmt.Errorf("REDIS_URL: a Redis Cluster has only database 0, not %q", p)
		}
		if _, err := redis.ParseClusterURL(cfg.RedisURL); err != nil {
			return fmt.Errorf("REDIS_URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
		}
		return nil
	}
	if _, err := redis.ParseURL(cfg.RedisURL); err != nil {
		return fmt.Errorf("REDIS_URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return nil
}

// checkAddr accepts host:port with a numeric port 0..65535 (0 picks a free
// port); the host may be empty (all interfaces).
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("is not host:port (such as :8000 or 127.0.0.1:8000)")
	}
	if !validPort(port) {
		return fmt.Errorf("has no valid port (0..65535)")
	}
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535 && p == strconv.Itoa(n)
}

// checkURLPort accepts a URL with no port or a port 1..65535.
func checkURLPort(u *url.URL) error {
	if p := u.Port(); p != "" && (!validPort(p) || p == "0") {
		return fmt.Errorf("bad port")
	}
	return nil
}

// checkOrigin accepts "*" or a browser origin: http(s)://host[:port], with
// no path, query or credentials, since it is compared with the Origin
// header as a whole.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || checkURLPort(u) != nil {
		return fmt.Errorf("is not an origin such as https://chat.example.com or http://localhost:3000, or *")
	}
	if u.Path == "/" {
		return fmt.Errorf("has a trailing slash; browsers send origins without one")
	}
	return nil
}

// parseTrustedProxies reads WINDI_TRUSTED_PROXIES: comma-separated CIDRs
// or single addresses, or "none".
func parseTrustedProxies(v string) ([]*net.IPNet, error) {
	out := []*net.IPNet{}
	if strings.EqualFold(strings.TrimSpace(v), "none") {
		return out, nil
	}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			ip := net.ParseIP(item)
			if ip == nil {
				return nil, fmt.Errorf("%q is neither a CIDR such as 10.0.0.0/8 nor an address", item)
			}
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR such as 10.0.0.0/8 nor an address", item)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CIDR given (use none to trust no proxy)")
	}
	return out, nil
}

// validReplicaName accepts what is safe in a header and in logs.
func validReplicaName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}
