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
	for _, args := range [][]string{{"--help"}, {"-h"}, {"serve", "--help"}, {"migrate", "--help"}} {
		var out, errb bytes.Buffer
		if code := run(args, func(string) string { return "" }, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d, stderr %s", args, code, errb.String())
		}
		for _, v := range app.EnvVars {
			if !strings.Contains(out.String(), v.Name) {
				t.Errorf("%v: help lacks %s", args, v.Name)
			}
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
