package app

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Config is the server's configuration, read from the environment (SPEC §9).
type Config struct {
	Addr           string        // WINDI_ADDR
	DataDir        string        // WINDI_DATA_DIR
	DatabaseURL    string        // DATABASE_URL; empty means embedded SQLite
	RedisURL       string        // REDIS_URL; empty means the in-process broker
	JWTSecret      string        // JWT_SECRET; required in scaled mode
	JWTTTL         time.Duration // JWT_TTL
	LogLevel       slog.Level    // WINDI_LOG_LEVEL
	AllowedOrigins []string      // WINDI_ALLOWED_ORIGINS, comma-separated
}

// EnvVar documents one environment variable for --help.
type EnvVar struct {
	Name, Default, Help string
}

// EnvVars lists every variable the server reads, in --help order.
var EnvVars = []EnvVar{
	{"WINDI_ADDR", ":8000", "address to listen on"},
	{"WINDI_DATA_DIR", "./data", "directory for the embedded SQLite database and the generated JWT secret"},
	{"DATABASE_URL", "", "postgres://… URL; unset means embedded SQLite in WINDI_DATA_DIR"},
	{"REDIS_URL", "", "redis://… URL; unset means the in-process broker"},
	{"JWT_SECRET", "", "HS256 signing secret; required when DATABASE_URL or REDIS_URL is set, generated and kept in WINDI_DATA_DIR otherwise"},
	{"JWT_TTL", "24h", "lifetime of issued tokens (Go duration)"},
	{"WINDI_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"WINDI_ALLOWED_ORIGINS", "", "comma-separated origins allowed to open WebSockets from a browser; unset allows same-host only"},
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
	if !strings.Contains(cfg.Addr, ":") {
		return Config{}, fmt.Errorf("WINDI_ADDR: %q is not host:port", cfg.Addr)
	}
	if cfg.DatabaseURL != "" {
		u, err := url.Parse(cfg.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return Config{}, fmt.Errorf("DATABASE_URL: want a postgres:// URL")
		}
	}
	if cfg.RedisURL != "" {
		u, err := url.Parse(cfg.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return Config{}, fmt.Errorf("REDIS_URL: want a redis:// URL")
		}
	}
	if (cfg.DatabaseURL != "" || cfg.RedisURL != "") && cfg.JWTSecret == "" {
		return Config{}, fmt.Errorf("JWT_SECRET: required when DATABASE_URL or REDIS_URL is set (replicas must share it)")
	}
	ttl, err := time.ParseDuration(get("JWT_TTL"))
	if err != nil || ttl <= 0 {
		return Config{}, fmt.Errorf("JWT_TTL: %q is not a positive duration such as 24h", get("JWT_TTL"))
	}
	cfg.JWTTTL = ttl
	if err := cfg.LogLevel.UnmarshalText([]byte(get("WINDI_LOG_LEVEL"))); err != nil {
		return Config{}, fmt.Errorf("WINDI_LOG_LEVEL: %q is not debug, info, warn or error", get("WINDI_LOG_LEVEL"))
	}
	for _, o := range strings.Split(get("WINDI_ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, nil
}
