// Command windi-load drives WinDI Chat servers with WebSocket load and
// checks delivery: it registers users and creates chats over REST, opens
// WebSocket connections spread over one or more replicas, sends at a fixed
// rate, and measures persisted messages/s, deliveries/s, ack and
// send-to-delivery latency and errors. At the end it verifies that every
// acknowledged message reached every other connection of its chat exactly
// once and in seq order.
//
// It prints a human table, then one JSON line (the last line of stdout)
// with every figure and the configuration. The exit status is 1 when
// anything was lost, repeated or reordered or any error occurred, 2 on bad
// flags or a failed setup.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

const usageText = `windi-load: WebSocket load and delivery checker for WinDI Chat servers.

Usage:
  windi-load [flags]

Scenarios:
  -scenario private   -chats N private chats (2N users); by default one
                      sender per chat, alternating sides
  -scenario group     one group of -members users (2..1000); -senders of its
                      members send (default min(10, members))
  -scenario idle      open -conns connections over -users users (one group)
                      and hold them for -duration: connect time and errors

Every user gets -devices connections (idle: -conns in all), a -ws-all share
on /ws and the rest on /ws/{chat_id}; connections and users go round-robin
over the -url servers. Each message's text starts with its send time, so
receivers measure send-to-delivery latency.

Server limits: the server rate-limits sends per connection (default 20/s,
burst 200) and answers error frames "rate_limited" past it; the tool warns
when it sees one. For throughput runs start the server with the send limit
off or raised (WINDI_SEND_RATE=0, or WINDI_SEND_RATE/WINDI_SEND_BURST).
Registration hashes each password with argon2id on the server (tens of ms
each), so -users / -members in the hundreds take a while: -setup-concurrency
bounds it. Registrations and logins are limited per IP
(WINDI_REGISTER_LIMIT_IP, default 20 a minute; WINDI_LOGIN_LIMIT_IP, 120):
429 and 503 answers are retried after Retry-After, but setups of more than
~20 users go much faster with WINDI_REGISTER_LIMIT_IP=0 WINDI_LOGIN_LIMIT_IP=0. WINDI_MAX_CONNS_PER_USER
(default 64 per replica) caps -devices and idle -conns/-users.

Output: a table, then one JSON line (the last line of stdout). Exit status
0 when everything arrived exactly once in order with no errors, 1 otherwise,
2 on bad flags or a failed setup.

Flags:
`

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

func cli(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		return 2
	}
	cfg.Log = func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "windi-load:", err)
		return 2
	}
	printTable(stdout, rep)
	line, _ := json.Marshal(rep)
	fmt.Fprintln(stdout, string(line))
	if !rep.OK {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("windi-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	urls := fs.String("url", strings.Join(cfg.URLs, ","), "comma-separated server base URLs")
	pids := fs.String("cpu-pids", "", "comma-separated pids (local servers, Postgres, Redis) whose CPU time during the send phase is reported")
	fs.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "private, group or idle")
	fs.IntVar(&cfg.Chats, "chats", cfg.Chats, "private: number of private chats (pairs of users)")
	fs.IntVar(&cfg.Members, "members", cfg.Members, "group: members of the group, creator included (2..1000)")
	fs.IntVar(&cfg.Senders, "senders", 0, "sending connections (0: private one per chat, group min(10, members))")
	fs.IntVar(&cfg.Users, "users", 0, "idle: users owning the connections (0: min(conns, 100))")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "idle: connections to open")
	fs.IntVar(&cfg.Devices, "devices", cfg.Devices, "private, group: connections per user")
	fs.Float64Var(&cfg.AllChatsRatio, "ws-all", cfg.AllChatsRatio, "share of connections on /ws (all chats); the rest use /ws/{chat_id}")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "messages/s over all senders; 0 = as fast as acks allow")
	fs.BoolVar(&cfg.Open, "open", false, "open loop: send on -rate's fixed schedule whatever the acks, and measure latency from each message's scheduled time (and from its actual send)")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "unacknowledged sends allowed per sender (closed loop)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "send phase (idle: hold time)")
	fs.Float64Var(&cfg.Mix, "mix", 0, "share of each sender's operations (0..0.5) that edit or toggle a reaction on one of its recent messages instead of sending; the final states are verified on every connection and the server")
	fs.IntVar(&cfg.Size, "size", cfg.Size, fmt.Sprintf("message text bytes (%d..4096)", minSize))
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "longest wait after the send phase for outstanding acks and deliveries")
	fs.IntVar(&cfg.SetupConcurrency, "setup-concurrency", cfg.SetupConcurrency, "concurrent register/login/create-chat requests")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", cfg.DialConcurrency, "concurrent WebSocket dials (and closes)")
	fs.BoolVar(&cfg.AllowErrors, "allow-errors", false, "error frames (e.g. rate_limited) do not fail the run; loss, repeats, reordering and connection errors still do")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "windi-load: unexpected argument %q\n", fs.Arg(0))
		return cfg, fmt.Errorf("unexpected argument")
	}
	for p := range strings.SplitSeq(*pids, ",") {
		if p = strings.TrimSpace(p); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "windi-load: -cpu-pids: %q is not a pid\n", p)
				return cfg, fmt.Errorf("bad pid")
			}
			cfg.CPUPIDs = append(cfg.CPUPIDs, n)
		}
	}
	cfg.URLs = nil
	for u := range strings.SplitSeq(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	check := cfg
	if err := check.normalize(); err != nil {
		fmt.Fprintln(stderr, "windi-load:", err)
		return cfg, err
	}
	return cfg, nil
}

func printTable(w io.Writer, r Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	verdict := "OK"
	if !r.OK {
		verdict = "FAIL: " + strings.Join(r.Failures, ", ")
	}
	row("result", "%s", verdict)
	row("scenario", "%s (run %s) on %s", c.Scenario, r.RunID, strings.Join(c.URLs, ","))
	row("setup", "%d users, %d chats in %.1fs", r.Users, r.Chats, r.SetupS)
	row("connections", "%d/%d open (%d on /ws, the rest on /ws/{chat_id}), %d dial failures", r.ConnsOpen, r.Conns, r.ConnsAll, r.DialFailures)
	lat := func(p Percentiles) string {
		if p.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %.2f  p95 %.2f  p99 %.2f  max %.2f ms  (n=%d)", p.P50, p.P95, p.P99, p.Max, p.Count)
	}
	row("connect time", "%s", lat(r.Connect))
	if c.Scenario != "idle" {
		if c.Open {
			row("load", "%d senders, open loop at %s, %gs, %d-byte texts", c.Senders, rateString(c.Rate), c.DurationS, c.Size)
		} else {
			row("load", "%d senders, rate %s, window %d, %gs, %d-byte texts", c.Senders, rateString(c.Rate), c.Window, c.DurationS, c.Size)
		}
		row("sent / acked", "%d / %d (%d unanswered)", r.Sent, r.Acked, r.Unanswered)
		row("persisted msgs/s", "%.1f over %.2fs", r.PersistedMsgsPerS, r.ElapsedS)
		row("deliveries", "%d of %d expected, %.1f/s", r.Deliveries, r.ExpectedDeliveries, r.DeliveriesPerS)
		if c.Open {
			row("ack latency", "%s  from the schedule", lat(r.AckLatency))
			row("", "%s  from the send", lat(r.AckLatencySent))
			row("delivery latency", "%s  from the schedule", lat(r.DeliveryLatency))
			row("", "%s  from the send", lat(r.DeliveryLatencySent))
		} else {
			row("ack latency", "%s", lat(r.AckLatency))
			row("delivery latency", "%s", lat(r.DeliveryLatency))
		}
		row("verify", "lost %d  repeated %d  out-of-order %d  gaps %d  unacked-seen %d  rev out-of-order %d  rev gaps %d",
			r.Verify.Lost, r.Verify.Repeated, r.Verify.OutOfOrder, r.Verify.Gaps, r.Verify.UnackedSeen, r.Verify.RevOutOfOrder, r.Verify.RevGaps)
		if s := r.States; s != nil {
			row("changes", "%d edits and reactions sent, %d answered; %d message.updated of %d expected", r.Ops, r.OpsAnswered, r.Updates, r.ExpectedUpdates)
			row("final states", "%d messages changed: %d of %d connection views differ, %d of %d differ on the server",
				s.Touched, s.Differ, s.Checked, s.ServerDiffer, s.ServerChecked)
		}
	} else {
		row("held", "%.1fs", r.ElapsedS)
	}
	errs := []string{}
	for _, k := range slices.Sorted(maps.Keys(r.ErrorFrames)) {
		errs = append(errs, fmt.Sprintf("%s=%d", k, r.ErrorFrames[k]))
	}
	if r.CPU != nil {
		row("cpu", "%.2f s over the send phase (%d processes): %.1f µs per stored message, %.2f µs per delivery",
			r.CPU.Seconds, len(c.CPUPIDs), r.CPU.PerMessageUS, r.CPU.PerDeliveryUS)
	}
	row("error frames", "%s", orDash(strings.Join(errs, " ")))
	closes := []string{}
	for _, k := range slices.Sorted(maps.Keys(r.CloseCodes)) {
		closes = append(closes, fmt.Sprintf("%s×%d", k, r.CloseCodes[k]))
	}
	row("unexpected closes", "%d %s", r.UnexpectedCloses, strings.Join(closes, " "))
	row("other errors", "write %d, duplicate acks %d, wrong frames %d, unfollowed %d, bad frames %d",
		r.WriteErrors, r.DuplicateAcks, r.WrongFrames, r.Unfollowed, r.BadFrames)
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
