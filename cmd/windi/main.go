// Command windi is the WinDI Chat server. With no argument (or `serve`) it
// serves; `migrate` runs the database migrations and exits; `seed` loads
// demo data; `version` prints the build.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/repo"
)

type command struct {
	name, summary string
	// details, when set, is printed under the summary by `windi <cmd> --help`.
	details string
	// noConfig commands read no environment (version).
	noConfig bool
	// noSecret commands issue no tokens, so JWT_SECRET is not required for
	// them even in scaled mode.
	noSecret bool
	run      func(ctx context.Context, cfg app.Config, log *slog.Logger, stdout io.Writer) error
}

var commands = []command{
	{name: "serve", summary: "run the server (the default)", run: serve,
		details: "Runs the database migrations, then serves REST and WebSocket on WINDI_ADDR\nuntil SIGINT or SIGTERM."},
	{name: "migrate", summary: "run the database migrations and exit", noSecret: true, run: migrate},
	{name: "seed", summary: "load demo users, chats and messages (idempotent)", noSecret: true, run: seed,
		details: "Runs the migrations, then creates demo users with fixed DEMO-ONLY passwords,\n" +
			"a private chat, a group and some history, and prints the credentials to\n" +
			"stdout. Running it again creates nothing new. It may run while the server\n" +
			"runs; clients see the seeded messages when they (re)load history.\n" +
			"JWT_SECRET is not needed: seeding issues no tokens."},
	{name: "version", summary: "print the version and exit", noConfig: true, run: version},
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 {
		name = args[0]
	}
	switch {
	case isHelp(name) && len(args) > 1 && findCommand(args[1]) != nil: // windi help seed
		usage(stdout, findCommand(args[1]))
		return 0
	case isHelp(name):
		usage(stdout, nil)
		return 0
	case name == "--version" || name == "-version":
		name = "version"
	}
	cmd := findCommand(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "windi: unknown command %q\n\n", name)
		usage(stderr, nil)
		return 2
	}
	if len(args) > 1 {
		if isHelp(args[1]) {
			usage(stdout, cmd)
			return 0
		}
		fmt.Fprintf(stderr, "windi %s: unexpected argument %q (see windi %s --help)\n", cmd.name, args[1], cmd.name)
		return 2
	}
	if cmd.noConfig {
		if err := cmd.run(context.Background(), app.Config{}, nil, stdout); err != nil {
			fmt.Fprintf(stderr, "windi %s: %v\n", cmd.name, err)
			return 1
		}
		return 0
	}
	env := getenv
	if cmd.noSecret {
		env = func(k string) string {
			if k == "JWT_SECRET" {
				return secretPlaceholder
			}
			return getenv(k)
		}
	}
	cfg, err := app.LoadConfig(env)
	if err != nil {
		fmt.Fprintf(stderr, "windi: configuration: %v\n", err)
		return 2
	}
	if cmd.noSecret {
		cfg.JWTSecret = ""
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, cfg, log, stdout); err != nil {
		log.Error("exiting", "event", "server.fatal", "command", cmd.name, "err", err)
		return 1
	}
	return 0
}

// secretPlaceholder stands in for JWT_SECRET while the configuration of a
// command that issues no tokens is validated; it is never used to sign.
const secretPlaceholder = "unused: this command issues no tokens"

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func usage(w io.Writer, only *command) {
	if only == nil {
		fmt.Fprintln(w, "Usage: windi [command] [--help]\n\nWinDI Chat, a group messenger server.\n\nCommands:")
		for _, c := range commands {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(w, "\nFlags:\n  -h, --help   show help (also: windi <command> --help)\n  --version    same as windi version")
	} else {
		fmt.Fprintf(w, "Usage: windi %s\n\n%s.\n", only.name, capitalize(only.summary))
		if only.details != "" {
			fmt.Fprintf(w, "\n%s\n", only.details)
		}
		if only.noConfig {
			return
		}
	}
	fmt.Fprintln(w, "\nEnvironment (an empty value counts as unset):")
	width := 0
	for _, v := range app.EnvVars {
		width = max(width, len(v.Name))
	}
	for _, v := range app.EnvVars {
		def := v.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(w, "  %-*s  %s (default: %s)\n", width, v.Name, v.Help, def)
	}
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func serve(ctx context.Context, cfg app.Config, log *slog.Logger, _ io.Writer) error {
	m := app.New(cfg, log)
	defer m.Close()
	if err := m.Open(ctx); err != nil {
		return err
	}
	return m.Serve(ctx)
}

func migrate(ctx context.Context, cfg app.Config, log *slog.Logger, _ io.Writer) error {
	store, err := repo.Open(ctx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	log.Info("migrations applied", "event", "migrate.done", "dialect", store.Dialect())
	return nil
}

// version prints the module version and VCS revision the binary was built
// from, as far as the build recorded them.
func version(_ context.Context, _ app.Config, _ *slog.Logger, stdout io.Writer) error {
	v, rev, modified := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	line := "windi " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		line += " " + rev
		if modified {
			line += "+dirty"
		}
	}
	_, err := fmt.Fprintln(stdout, line)
	return err
}
