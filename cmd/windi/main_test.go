package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/windi-chat/windi/app"
)

func TestHelpListsCommandsAndVariables(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"serve", "--help"}, {"migrate", "--help"}, {"seed", "--help"}, {"help", "seed"}, {"seed", "-h"}} {
		var out, errb bytes.Buffer
		if code := run(args, func(string) string { return "" }, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d, stderr %s", args, code, errb.String())
		}
		for _, v := range app.EnvVars {
			if !strings.Contains(out.String(), v.Name) {
				t.Errorf("%v: help lacks %s", args, v.Name)
			}
			if v.Default != "" && !strings.Contains(out.String(), "(default: "+v.Default+")") {
				t.Errorf("%v: help lacks the default of %s", args, v.Name)
			}
		}
		if len(args) == 1 {
			for _, c := range commands {
				if !strings.Contains(out.String(), "  "+c.name+" ") {
					t.Errorf("%v: help lacks the command %s", args, c.name)
				}
			}
		} else if !strings.Contains(out.String(), "Usage: windi seed") && strings.Contains(strings.Join(args, " "), "seed") {
			t.Errorf("%v: not the seed help: %s", args, out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"seed", "--bogus"}, func(string) string { return "" }, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--bogus") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errb.String())
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errb bytes.Buffer
		// version reads no configuration, so a bad one does not stop it.
		code := run(args, func(k string) string { return map[string]string{"JWT_TTL": "soon"}[k] }, &out, &errb)
		if code != 0 || !strings.HasPrefix(out.String(), "windi ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}

// TestEveryVariableIsValidated: each bad value stops start-up (of any
// command that reads the configuration) with one line naming the variable,
// and never echoes a URL's password.
func TestEveryVariableIsValidated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, value string }{
		{"WINDI_ADDR", "8000"},
		{"WINDI_ADDR", ":80000"},
		{"WINDI_ADDR", ":http"},
		{"WINDI_ADDR", "localhost:-1"},
		{"WINDI_DATA_DIR", file},
		{"DATABASE_URL", "mysql://u:hunter2@h/db"},
		{"DATABASE_URL", "postgres://u:hunter2@h:99999/db"},
		{"DATABASE_URL", "postgres://u:hunter2@h:port/db"},
		{"REDIS_URL", "http://u:hunter2@h"},
		{"REDIS_URL", "redis://u:hunter2@h:6379/zero"},
		{"JWT_TTL", "soon"},
		{"JWT_TTL", "0s"},
		{"JWT_TTL", "-5m"},
		{"WINDI_LOG_LEVEL", "loud"},
		{"WINDI_ALLOWED_ORIGINS", "chat.example.com"},
		{"WINDI_ALLOWED_ORIGINS", "https://ok.example,ftp://x.example"},
		{"WINDI_ALLOWED_ORIGINS", "https://chat.example.com/"},
		{"WINDI_ALLOWED_ORIGINS", "https://chat.example.com/app"},
	} {
		for _, cmd := range []string{"serve", "migrate", "seed"} {
			env := map[string]string{tc.name: tc.value, "JWT_SECRET": "s3cret-s3cret-s3cret-s3cret-s3cret"}
			var out, errb bytes.Buffer
			code := run([]string{cmd}, func(k string) string { return env[k] }, &out, &errb)
			msg := errb.String()
			if code != 2 || strings.Count(strings.TrimSpace(msg), "\n") != 0 || !strings.Contains(msg, " "+tc.name+": ") {
				t.Errorf("%s with %s=%q: exit %d, stderr %q; want exit 2 and one line naming %s", cmd, tc.name, tc.value, code, msg, tc.name)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("%s with %s: the error leaks a password: %q", cmd, tc.name, msg)
			}
		}
	}
}

// TestSecretRequirement: serving in scaled mode needs JWT_SECRET (replicas
// must share it); migrating and seeding issue no tokens and do not.
func TestSecretRequirement(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://127.0.0.1:1/nothing-listens-here", "WINDI_DATA_DIR": t.TempDir()}[k]
	}
	var out, errb bytes.Buffer
	if code := run(nil, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "JWT_SECRET") {
		t.Errorf("serve without JWT_SECRET: exit %d, stderr %q", code, errb.String())
	}
	for _, cmd := range []string{"migrate", "seed"} {
		errb.Reset()
		// Past configuration, they fail to connect (exit 1), not on JWT_SECRET.
		if code := run([]string{cmd}, env, &out, &errb); code != 1 || strings.Contains(errb.String(), "JWT_SECRET") {
			t.Errorf("%s without JWT_SECRET: exit %d, stderr %q", cmd, code, errb.String())
		}
	}
}

func TestBadConfigStopsWithOneLine(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(nil, func(k string) string { return map[string]string{"JWT_TTL": "soon"}[k] }, &out, &errb)
	if code == 0 || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 || !strings.Contains(errb.String(), "JWT_TTL") {
		t.Errorf("got exit %d and %q, want a failure in one line naming JWT_TTL", code, errb.String())
	}
	if code := run([]string{"bogus"}, func(string) string { return "" }, &out, &errb); code != 2 {
		t.Errorf("unknown command: got exit %d, want 2", code)
	}
}

func TestMigrateEmbedded(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return map[string]string{"WINDI_DATA_DIR": dir}[k] }
	for range 2 { // idempotent
		if code := run([]string{"migrate"}, getenv, &out, &errb); code != 0 {
			t.Fatalf("migrate: exit %d: %s", code, errb.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "windi.db")); err != nil {
		t.Errorf("no database file after migrate: %v", err)
	}
	if !strings.Contains(errb.String(), `"migrate.done"`) {
		t.Errorf("migrate logged no completion: %s", errb.String())
	}
}
