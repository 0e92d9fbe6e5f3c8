// Command windi-testkit runs a command against a WinDI Chat deployment it
// starts and ends around it, with package testkit: the one harness the Go
// tests use, here for .ci/run's steps and for anyone trying the server by
// hand.
//
//	windi-testkit run [flags] -- command [arg...]
//
// It starts the deployment (replicas of the windi binary on a fresh
// database and a Redis key prefix of their own, or one on the embedded
// default; nginx in front if asked), prints where everything is, runs the
// command with the deployment in its environment, then stops everything,
// drops the database and deletes the keys. It exits with the command's
// status (1 when the deployment failed to start).
//
// windi-testkit port prints a free port (for a process the script starts
// itself, such as a proxy); windi-testkit services starts the Postgres and
// Redis the deployments use if they are down (after the fault tests).
//
// windi-testkit up starts the same deployment and keeps it until SIGTERM
// or SIGINT, writing the variables below to -env-file once it is ready:
// .ci/run starts it in the background and sources that file.
//
// The command's environment gets:
//
//	WINDI_URL                   where clients go (nginx, else replica 1)
//	WINDI_REPLICA_URLS          every replica's own URL, comma-separated
//	WINDI_REPLICA_PIDS          their process ids, in the same order
//	WINDI_PPROF_URLS            their pprof listeners (-pprof)
//	WINDI_TEST_JWT_SECRET       the replicas' JWT_SECRET (not embedded)
//	WINDI_TEST_JWT_SECRET_FILE  the secret the embedded server generated
//	WINDI_TESTKIT_DIR           the deployment's logs and data
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/windi-chat/windi/testkit"
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: windi-testkit run [flags] -- command [arg...]")
	fmt.Fprintln(w, "       windi-testkit up -env-file FILE [flags]   (until SIGTERM or SIGINT)")
	fmt.Fprintln(w, "       windi-testkit port       (print a free port on 127.0.0.1, below the ephemeral range)")
	fmt.Fprintln(w, "       windi-testkit services   (start the Postgres and Redis of WINDI_TEST_DATABASE_URL and WINDI_TEST_REDIS_URL if they are down)")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 {
		switch args[0] {
		case "port":
			p, err := testkit.FreePort()
			if err != nil {
				fmt.Fprintln(stderr, "windi-testkit:", err)
				return 1
			}
			fmt.Fprintln(stdout, p)
			return 0
		case "services":
			logf := func(format string, a ...any) { fmt.Fprintf(stdout, "    "+format+"\n", a...) }
			if err := testkit.EnsureServices(logf); err != nil {
				fmt.Fprintln(stderr, "windi-testkit:", err)
				return 1
			}
			return 0
		}
	}
	fs := flag.NewFlagSet("windi-testkit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		o       testkit.Options
		env     listFlag
		logs    = fs.String("logs", "", "copy the logs into this directory at the end, named NAME-<log>")
		tail    = fs.Int("tail", 30, "when the command fails (run), print the last N lines of every log")
		envFile = fs.String("env-file", "", "up: write the deployment's variables to FILE (KEY=VALUE lines a shell can source) once it is ready")
	)
	fs.StringVar(&o.Name, "name", "testkit", "label of the deployment: database windi_NAME_…, log names")
	fs.IntVar(&o.Replicas, "replicas", 1, "windi processes")
	fs.BoolVar(&o.Nginx, "nginx", false, "nginx in front (deploy/nginx/windi.conf.template)")
	fs.BoolVar(&o.Embedded, "embedded", false, "the embedded default: SQLite and the in-process broker (one replica)")
	fs.BoolVar(&o.Seed, "seed", false, "run `windi seed` (demo users and chats) before the replicas start")
	fs.IntVar(&o.Port, "port", 0, "replica 1's port (default: a free one)")
	fs.BoolVar(&o.Pprof, "pprof", false, "a pprof listener on every replica (WINDI_PPROF_URLS)")
	fs.StringVar(&o.RedisURL, "redis", "", "REDIS_URL of the replicas (default WINDI_TEST_REDIS_URL or redis://127.0.0.1:6379/0; a Redis Cluster URL works)")
	fs.StringVar(&o.Binary, "bin", "", "the windi binary (default: WINDI_TEST_BIN, or go build ./cmd/windi)")
	fs.Var(&env, "env", "KEY=VALUE for every replica (repeatable)")
	if len(args) == 0 || args[0] != "run" && args[0] != "up" {
		usage(stderr, fs)
		return 2
	}
	mode := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintln(stderr, "windi-testkit:", err)
		usage(stderr, fs)
		return 2
	}
	cmdArgs := fs.Args()
	switch {
	case mode == "run" && len(cmdArgs) == 0:
		fmt.Fprintln(stderr, "windi-testkit run: no command after --")
		return 2
	case mode == "up" && (len(cmdArgs) > 0 || *envFile == ""):
		fmt.Fprintln(stderr, "windi-testkit up: takes -env-file FILE and no command")
		return 2
	}
	for _, kv := range env {
		if !strings.Contains(kv, "=") {
			fmt.Fprintf(stderr, "windi-testkit: -env %q: want KEY=VALUE\n", kv)
			return 2
		}
	}
	o.Env = env
	name := o.Name

	// SIGINT and SIGTERM end up: for run they go to the command, and the
	// deployment ends after it. Caught before the deployment starts, so a
	// signal during its start-up still ends it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	c, err := testkit.New(context.Background(), o)
	if c != nil {
		defer func() {
			if err := c.Close(); err != nil {
				fmt.Fprintln(stderr, "windi-testkit:", err)
			}
		}()
	}
	if err != nil {
		fmt.Fprintf(stderr, "windi-testkit %s: %v\n", name, err)
		if c != nil {
			fmt.Fprint(stderr, testkit.Tails(c.Logs(), *tail))
			keepLogs(c, *logs, name, stderr)
		}
		return 1
	}
	describe(c, name, stdout)

	rc := 0
	if mode == "up" {
		if err := os.WriteFile(*envFile, []byte(shellVars(c)), 0o600); err != nil {
			fmt.Fprintf(stderr, "windi-testkit %s: %v\n", name, err)
			return 1
		}
		<-sigs
	} else {
		rc = runCommand(c, cmdArgs, sigs, stdout, stderr)
	}
	// The logs are read and kept once the replicas have stopped, so they
	// hold their shutdown too.
	c.StopProcesses()
	if c.NginxAccessLog != "" {
		fmt.Fprintf(stdout, "    %s: %s\n", name, c.NginxTraffic())
	}
	fmt.Fprintf(stdout, "    %s: server logs: %d ERROR lines\n", name, c.LogCount(`"level":"ERROR"`))
	if rc != 0 {
		fmt.Fprint(stderr, testkit.Tails(c.Logs(), *tail))
	}
	keepLogs(c, *logs, name, stderr)
	return rc
}

// vars are the deployment's variables for a command or a shell.
func vars(c *testkit.Cluster) []string {
	var pids, pprof []string
	for _, r := range c.Replicas {
		pids = append(pids, strconv.Itoa(r.PID()))
		if r.PprofURL != "" {
			pprof = append(pprof, r.PprofURL)
		}
	}
	v := []string{
		"WINDI_URL=" + c.URL,
		"WINDI_REPLICA_URLS=" + replicaURLs(c),
		"WINDI_REPLICA_PIDS=" + strings.Join(pids, ","),
		"WINDI_TESTKIT_DIR=" + c.Dir,
	}
	if len(pprof) > 0 {
		v = append(v, "WINDI_PPROF_URLS="+strings.Join(pprof, ","))
	}
	if c.Secret != "" {
		v = append(v, "WINDI_TEST_JWT_SECRET="+c.Secret)
	}
	if f := c.SecretFile(); f != "" {
		v = append(v, "WINDI_TEST_JWT_SECRET_FILE="+f)
	}
	return v
}

// shellVars renders vars as lines a shell sources (every value is a URL,
// a path or hex: nothing to quote but spaces, which paths may hold).
func shellVars(c *testkit.Cluster) string {
	var b strings.Builder
	for _, kv := range vars(c) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "%s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	return b.String()
}

// runCommand runs the command with the deployment's variables and returns
// its exit status; sigs are passed on to it.
func runCommand(c *testkit.Cluster, args []string, sigs <-chan os.Signal, stdout, stderr io.Writer) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(), vars(c)...)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "windi-testkit: %v\n", err)
		return 1
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		return 1
	}
	return 0
}

func replicaURLs(c *testkit.Cluster) string {
	var urls []string
	for _, r := range c.Replicas {
		urls = append(urls, r.URL)
	}
	return strings.Join(urls, ",")
}

// describe prints where the deployment's parts are, one line each.
func describe(c *testkit.Cluster, name string, w io.Writer) {
	if c.Embedded() {
		fmt.Fprintf(w, "    %s: embedded (SQLite, in-process broker)\n", name)
	} else {
		fmt.Fprintf(w, "    %s: database %s, Redis %s prefix %s\n", name, c.DatabaseName, c.RedisURL, c.Prefix)
	}
	for _, r := range c.Replicas {
		fmt.Fprintf(w, "    %s windi-%d: pid %d, %s, replica %s, log %s\n", name, r.Index, r.PID(), r.URL, r.Name(), filepath.Base(r.LogPath()))
	}
	if c.NginxAccessLog != "" {
		fmt.Fprintf(w, "    %s nginx: pid %d, %s -> %s\n", name, c.NginxPID(), c.URL, replicaURLs(c))
	}
}

func keepLogs(c *testkit.Cluster, dir, name string, stderr io.Writer) {
	if dir == "" {
		return
	}
	if err := c.CopyLogs(dir, name+"-"); err != nil {
		fmt.Fprintln(stderr, "windi-testkit: keep logs:", err)
	}
}
