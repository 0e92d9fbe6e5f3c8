package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := app.LoadConfig(env(map[string]string{"WINDI_ADDR": "", "DATABASE_URL": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":8000" || cfg.DataDir != "./data" || cfg.JWTTTL != 15*time.Minute || cfg.RefreshTTL != 720*time.Hour || cfg.InsecureDev || cfg.DatabaseURL != "" || cfg.RedisURL != "" {
		t.Errorf("got %+v, want the SPEC §9 defaults", cfg)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"scaled without secret": {map[string]string{"DATABASE_URL": "postgres://x/y"}, "JWT_SECRET"},
		"redis without secret":  {map[string]string{"REDIS_URL": "redis://127.0.0.1:6379"}, "JWT_SECRET"},
		"bad database url":      {map[string]string{"DATABASE_URL": "mysql://x", "JWT_SECRET": testSecret}, "DATABASE_URL"},
		"bad redis url":         {map[string]string{"REDIS_URL": "http://x", "JWT_SECRET": testSecret}, "REDIS_URL"},
		"bad ttl":               {map[string]string{"JWT_TTL": "soon"}, "JWT_TTL"},
		"negative ttl":          {map[string]string{"JWT_TTL": "-1h"}, "JWT_TTL"},
		"bad refresh ttl":       {map[string]string{"WINDI_REFRESH_TTL": "a month"}, "WINDI_REFRESH_TTL"},
		"zero refresh ttl":      {map[string]string{"WINDI_REFRESH_TTL": "0s"}, "WINDI_REFRESH_TTL"},
		"bad insecure flag":     {map[string]string{"WINDI_INSECURE_DEV": "maybe"}, "WINDI_INSECURE_DEV"},
		"short secret":          {map[string]string{"JWT_SECRET": "s3cret"}, "JWT_SECRET"},
		"compose example":       {map[string]string{"JWT_SECRET": app.ComposeExampleSecret, "DATABASE_URL": "postgres://h/db"}, "JWT_SECRET"},
		"bad level":             {map[string]string{"WINDI_LOG_LEVEL": "loud"}, "WINDI_LOG_LEVEL"},
		"bad addr":              {map[string]string{"WINDI_ADDR": "8000"}, "WINDI_ADDR"},
		"cluster flag alone":    {map[string]string{"WINDI_REDIS_CLUSTER": "1"}, "WINDI_REDIS_CLUSTER"},
		"bad cluster flag":      {map[string]string{"WINDI_REDIS_CLUSTER": "yes please", "REDIS_URL": "redis://h:1", "JWT_SECRET": testSecret}, "WINDI_REDIS_CLUSTER"},
		"cluster with a db":     {map[string]string{"REDIS_URL": "redis://h:1/3?addr=h:2", "JWT_SECRET": testSecret}, "REDIS_URL"},
		"cluster bad option":    {map[string]string{"REDIS_URL": "redis://h:1?addr=h:2&db=1", "JWT_SECRET": testSecret}, "REDIS_URL"},
		"cluster bad addr":      {map[string]string{"REDIS_URL": "redis://h:1?addr=nope", "JWT_SECRET": testSecret}, "REDIS_URL"},
		"addr= but flag 0":      {map[string]string{"REDIS_URL": "redis://h:1?addr=h:2", "WINDI_REDIS_CLUSTER": "0", "JWT_SECRET": testSecret}, "REDIS_URL"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := app.LoadConfig(env(tc.env))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
				t.Errorf("got %v, want an error starting with %s:", err, tc.want)
			}
		})
	}
	cfg, err := app.LoadConfig(env(map[string]string{
		"DATABASE_URL": "postgres://h/db", "REDIS_URL": "redis://h:6379/0", "JWT_SECRET": "s3cret",
		"JWT_TTL": "90m", "WINDI_REFRESH_TTL": "48h", "WINDI_INSECURE_DEV": "1", "WINDI_LOG_LEVEL": "debug", "WINDI_ALLOWED_ORIGINS": "https://a.example, https://b.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.JWTTTL != 90*time.Minute || cfg.RefreshTTL != 48*time.Hour || !cfg.InsecureDev || len(cfg.AllowedOrigins) != 2 || cfg.AllowedOrigins[1] != "https://b.example" {
		t.Errorf("got %+v", cfg)
	}
}

// TestLoadConfigRedisCluster checks how REDIS_URL names a Redis Cluster
// (SPEC §13): go-redis's cluster URL form, or WINDI_REDIS_CLUSTER=1 with
// one seed address.
func TestLoadConfigRedisCluster(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{"REDIS_URL": "redis://h:6379/0"}, false},
		{map[string]string{"REDIS_URL": "redis://h:6379/0", "WINDI_REDIS_CLUSTER": "0"}, false},
		{map[string]string{"REDIS_URL": "redis://h:7000?addr=h2:7001&addr=h3:7002"}, true},
		{map[string]string{"REDIS_URL": "rediss://u:p@h:7000/0?addr=h2:7001"}, true},
		{map[string]string{"REDIS_URL": "redis://h:7000", "WINDI_REDIS_CLUSTER": "1"}, true},
		{map[string]string{"REDIS_URL": "redis://h:7000?dial_timeout=2s", "WINDI_REDIS_CLUSTER": "true"}, true},
	} {
		tc.env["JWT_SECRET"] = testSecret
		cfg, err := app.LoadConfig(env(tc.env))
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		if cfg.RedisCluster != tc.want {
			t.Errorf("%v: RedisCluster %v, want %v", tc.env, cfg.RedisCluster, tc.want)
		}
	}
}

func TestLoadConfigSecurity(t *testing.T) {
	cfg, err := app.LoadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var nets []string
	for _, n := range cfg.TrustedProxies {
		nets = append(nets, n.String())
	}
	if strings.Join(nets, ",") != "127.0.0.0/8,::1/128" || cfg.ReplicaName != "" {
		t.Errorf("got trusted proxies %v, replica name %q; want loopback only and no name", nets, cfg.ReplicaName)
	}
	l := cfg.Limits
	if l.RegisterPerIP != 20 || l.MaxConns != 10000 || l.LoginPerEmail != 10 || l.LoginPerIP != 120 {
		t.Errorf("got limits %+v, want register 20/min per IP and 10000 connections by default", l)
	}
	cfg, err = app.LoadConfig(env(map[string]string{
		"WINDI_TRUSTED_PROXIES": " 172.30.80.10 , 10.0.0.0/8,fd00::/8", "WINDI_REPLICA_NAME": "windi-1",
		"WINDI_REGISTER_LIMIT_IP": "0", "WINDI_MAX_CONNS": "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	nets = nets[:0]
	for _, n := range cfg.TrustedProxies {
		nets = append(nets, n.String())
	}
	if strings.Join(nets, ",") != "172.30.80.10/32,10.0.0.0/8,fd00::/8" || cfg.ReplicaName != "windi-1" ||
		cfg.Limits.RegisterPerIP != 0 || cfg.Limits.MaxConns != 0 {
		t.Errorf("got %v, %q, %+v", nets, cfg.ReplicaName, cfg.Limits)
	}
	cfg, err = app.LoadConfig(env(map[string]string{"WINDI_TRUSTED_PROXIES": "none"}))
	if err != nil || cfg.TrustedProxies == nil || len(cfg.TrustedProxies) != 0 {
		t.Errorf("none: got %v, %v; want an empty, non-nil list", cfg.TrustedProxies, err)
	}
	for name, kv := range map[string]map[string]string{
		"WINDI_TRUSTED_PROXIES":   {"WINDI_TRUSTED_PROXIES": "10.0.0.0/33"},
		"WINDI_REPLICA_NAME":      {"WINDI_REPLICA_NAME": "has space"},
		"WINDI_REGISTER_LIMIT_IP": {"WINDI_REGISTER_LIMIT_IP": "-1"},
		"WINDI_MAX_CONNS":         {"WINDI_MAX_CONNS": "many"},
	} {
		if _, err := app.LoadConfig(env(kv)); err == nil || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("%v: got %v, want an error starting with %s:", kv, err, name)
		}
	}
	if _, err := app.LoadConfig(env(map[string]string{"WINDI_REPLICA_NAME": strings.Repeat("n", 65)})); err == nil {
		t.Error("a 65-character replica name was accepted")
	}
	help := map[string]bool{}
	for _, v := range app.EnvVars {
		help[v.Name] = true
	}
	for _, name := range []string{"WINDI_TRUSTED_PROXIES", "WINDI_REPLICA_NAME", "WINDI_REGISTER_LIMIT_IP", "WINDI_MAX_CONNS"} {
		if !help[name] {
			t.Errorf("%s is not in EnvVars (windi --help)", name)
		}
	}
}

// testSecret is a JWT_SECRET long enough to be accepted.
const testSecret = "config-test-secret-0123456789abcdef"
