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
	if cfg.Addr != ":8000" || cfg.DataDir != "./data" || cfg.JWTTTL != 24*time.Hour || cfg.DatabaseURL != "" || cfg.RedisURL != "" {
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
		"bad database url":      {map[string]string{"DATABASE_URL": "mysql://x", "JWT_SECRET": "s"}, "DATABASE_URL"},
		"bad redis url":         {map[string]string{"REDIS_URL": "http://x", "JWT_SECRET": "s"}, "REDIS_URL"},
		"bad ttl":               {map[string]string{"JWT_TTL": "soon"}, "JWT_TTL"},
		"negative ttl":          {map[string]string{"JWT_TTL": "-1h"}, "JWT_TTL"},
		"bad level":             {map[string]string{"WINDI_LOG_LEVEL": "loud"}, "WINDI_LOG_LEVEL"},
		"bad addr":              {map[string]string{"WINDI_ADDR": "8000"}, "WINDI_ADDR"},
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
		"JWT_TTL": "90m", "WINDI_LOG_LEVEL": "debug", "WINDI_ALLOWED_ORIGINS": "https://a.example, https://b.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.JWTTTL != 90*time.Minute || len(cfg.AllowedOrigins) != 2 || cfg.AllowedOrigins[1] != "https://b.example" {
		t.Errorf("got %+v", cfg)
	}
}
