// Command windi is the WinDI Chat server. With no argument (or `serve`) it
// serves; `migrate` runs the database migrations and exits.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/repo"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, cfg app.Config, log *slog.Logger) error
}

var commands = []command{
	{"serve", "run the server (the default)", serve},
	{"migrate", "run the database migrations and exit", migrate},
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 {
		name = args[0]
	}
	if name == "-h" || name == "--help" || name == "help" {
		usage(stdout, "")
		return 0
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == name {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "windi: unknown command %q\n\n", name)
		usage(stderr, "")
		return 2
	}
	if len(args) > 1 {
		if args[1] == "-h" || args[1] == "--help" {
			usage(stdout, cmd.name)
			return 0
		}
		fmt.Fprintf(stderr, "windi %s: unexpected argument %q\n", cmd.name, args[1])
		return 2
	}
	cfg, err := app.LoadConfig(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "windi: configuration: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, cfg, log); err != nil {
		log.Error("exiting", "event", "server.fatal", "err", err)
		return 1
	}
	return 0
}

func usage(w io.Writer, only string) {
	if only == "" {
		fmt.Fprintln(w, "Usage: windi [command]\n\nWinDI Chat, a group messenger server.\n\nCommands:")
		for _, c := range commands {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	} else {
		for _, c := range commands {
			if c.name == only {
				fmt.Fprintf(w, "Usage: windi %s\n\n%s.\n", c.name, c.summary)
			}
		}
	}
	fmt.Fprintln(w, "\nEnvironment (an empty value counts as unset):")
	for _, v := range app.EnvVars {
		def := v.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(w, "  %-22s %s (default: %s)\n", v.Name, v.Help, def)
	}
}

func serve(ctx context.Context, cfg app.Config, log *slog.Logger) error {
	m := app.New(cfg, log)
	defer m.Close()
	if err := m.Open(ctx); err != nil {
		return err
	}
	return m.Serve(ctx)
}

func migrate(ctx context.Context, cfg app.Config, log *slog.Logger) error {
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
