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
// The command's environment gets:
//
//	WINDI_URL                   where clients go (nginx, else replica 1)
//	WINDI_REPLICA_URLS          every replica's own URL, comma-separated
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
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("windi-testkit run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		o    testkit.Options
		env  listFlag
		logs = fs.String("logs", "", "copy the logs into this directory at the end, named NAME-<log>")
		tail = fs.Int("tail", 30, "when the command fails, print the last N lines of every log")
	)
	fs.StringVar(&o.Name, "name", "testkit", "label of the deployment: database windi_NAME_…, log names")
	fs.IntVar(&o.Replicas, "replicas", 1, "windi processes")
	fs.BoolVar(&o.Nginx, "nginx", false, "nginx in front (deploy/nginx/windi.conf.template)")
	fs.BoolVar(&o.Embedded, "embedded", false, "the embedded default: SQLite and the in-process broker (one replica)")
	fs.StringVar(&o.RedisURL, "redis", "", "REDIS_URL of the replicas (default WINDI_TEST_REDIS_URL or redis://127.0.0.1:6379/0; a Redis Cluster URL works)")
	fs.StringVar(&o.Binary, "bin", "", "the windi binary (default: WINDI_TEST_BIN, or go build ./cmd/windi)")
	fs.Var(&env, "env", "KEY=VALUE for every replica (repeatable)")
	if len(args) == 0 || args[0] != "run" {
		usage(stderr, fs)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintln(stderr, "windi-testkit:", err)
		usage(stderr, fs)
		return 2
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		fmt.Fprintln(stderr, "windi-testkit: no command after --")
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

	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(),
		"WINDI_URL="+c.URL,
		"WINDI_REPLICA_URLS="+replicaURLs(c),
		"WINDI_TESTKIT_DIR="+c.Dir,
	)
	if c.Secret != "" {
		cmd.Env = append(cmd.Env, "WINDI_TEST_JWT_SECRET="+c.Secret)
	}
	if f := c.SecretFile(); f != "" {
		cmd.Env = append(cmd.Env, "WINDI_TEST_JWT_SECRET_FILE="+f)
	}
	// SIGINT and SIGTERM go to the command; the deployment ends after it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	rc := 0
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "windi-testkit %s: %v\n", name, err)
		rc = 1
	} else {
		go func() {
			for s := range sigs {
				_ = cmd.Process.Signal(s)
			}
		}()
		if err := cmd.Wait(); err != nil {
			rc = 1
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				rc = ee.ExitCode()
			}
		}
	}
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
