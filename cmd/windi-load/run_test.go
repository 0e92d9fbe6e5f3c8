package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
)

func testConfig(urls ...string) Config {
	cfg := DefaultConfig()
	cfg.URLs = urls
	cfg.Grace = 5 * time.Second
	cfg.SetupConcurrency = 4
	cfg.DialConcurrency = 8
	return cfg
}

func runOK(t *testing.T, cfg Config) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.Log = t.Logf
	rep, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	line, _ := json.Marshal(rep)
	t.Logf("report: %s", line)
	if !rep.OK {
		t.Fatalf("run failed: %v", rep.Failures)
	}
	return rep
}

// checkCounts asserts that the counts of a send run add up: every send
// acked, every acked message delivered to every other connection exactly
// once, in order.
func checkCounts(t *testing.T, rep Report, followersPerMsg int64) {
	t.Helper()
	v := rep.Verify
	if rep.Sent == 0 || rep.Acked != rep.Sent || rep.Unanswered != 0 {
		t.Errorf("sent %d, acked %d, unanswered %d", rep.Sent, rep.Acked, rep.Unanswered)
	}
	if v.Lost != 0 || v.Repeated != 0 || v.OutOfOrder != 0 || v.UnackedSeen != 0 {
		t.Errorf("verify: %+v", v)
	}
	if v.Expected != rep.Acked*followersPerMsg || v.Received != v.Expected {
		t.Errorf("expected %d (= acked %d × %d connections), received %d", v.Expected, rep.Acked, followersPerMsg, v.Received)
	}
	if rep.ExpectedDeliveries != rep.Acked*(followersPerMsg-1) || rep.Deliveries != rep.ExpectedDeliveries {
		t.Errorf("deliveries %d, expected %d (= acked %d × %d other connections)", rep.Deliveries, rep.ExpectedDeliveries, rep.Acked, followersPerMsg-1)
	}
	if rep.AckLatency.Count != rep.Acked || rep.DeliveryLatency.Count != rep.Deliveries {
		t.Errorf("latency samples: ack %d, delivery %d", rep.AckLatency.Count, rep.DeliveryLatency.Count)
	}
	if rep.PersistedMsgsPerS <= 0 || rep.DeliveriesPerS <= 0 || rep.Errors != 0 {
		t.Errorf("rates %v %v, errors %d", rep.PersistedMsgsPerS, rep.DeliveriesPerS, rep.Errors)
	}
}

func TestRunGroup(t *testing.T) {
	for _, dialect := range apptest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			env := apptest.NewEnv(t, dialect)
			// Two replicas on one database and broker: connections and
			// senders alternate between them.
			a, b := env.Start(t), env.Start(t)
			cfg := testConfig(a.URL, b.URL)
			cfg.Scenario, cfg.Members, cfg.Devices, cfg.Senders = "group", 5, 2, 3
			cfg.Rate, cfg.Window, cfg.Duration = 30, 2, 2*time.Second
			rep := runOK(t, cfg)
			if rep.Users != 5 || rep.Chats != 1 || rep.ConnsOpen != 10 || rep.ConnsAll != 5 {
				t.Errorf("layout: %d users, %d chats, %d conns (%d on /ws)", rep.Users, rep.Chats, rep.ConnsOpen, rep.ConnsAll)
			}
			checkCounts(t, rep, 10)
			// 30/s for 2s: roughly 60 messages.
			if rep.Acked < 40 || rep.Acked > 70 {
				t.Errorf("acked %d, want about 60", rep.Acked)
			}
		})
	}
}

// TestRunOpenLoop: an open-loop run sends exactly its schedule (rate ×
// duration), whatever the acks, and measures latency from each message's
// scheduled time as well as from its actual send; the first is never the
// smaller.
func TestRunOpenLoop(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t, func(c *app.Config) { c.Limits.SendRate = 0 })
	cfg := testConfig(s.URL)
	cfg.Scenario, cfg.Members, cfg.Senders = "group", 4, 1
	cfg.Rate, cfg.Open, cfg.Duration = 100, true, 2*time.Second
	rep := runOK(t, cfg)
	checkCounts(t, rep, 4)
	if rep.Sent != 200 {
		t.Errorf("sent %d, want the schedule's 200 (100/s for 2s)", rep.Sent)
	}
	if !rep.Config.Open || rep.AckLatencySent.Count != rep.Acked || rep.DeliveryLatencySent.Count != rep.Deliveries {
		t.Errorf("open %v; from-send samples: ack %d, delivery %d", rep.Config.Open, rep.AckLatencySent.Count, rep.DeliveryLatencySent.Count)
	}
	if rep.DeliveryLatency.Max < rep.DeliveryLatencySent.Max || rep.AckLatency.P50 < rep.AckLatencySent.P50 {
		t.Errorf("latency from the schedule below latency from the send: %+v vs %+v", rep.DeliveryLatency, rep.DeliveryLatencySent)
	}
}

func TestRunPrivate(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	cfg := testConfig(s.URL)
	cfg.Scenario, cfg.Chats, cfg.Devices, cfg.Senders = "private", 3, 2, 6 // both sides of each chat send
	cfg.Rate, cfg.Duration = 0, time.Second                                // as fast as acks allow
	cfg.AllowErrors = true                                                 // unpaced senders may meet the send limit
	rep := runOK(t, cfg)
	if rep.ErrorFrames["rate_limited"] == 0 {
		// Within the burst: nothing refused, so the counts are exact.
		checkCounts(t, rep, 4)
	}
	if rep.Chats != 3 || rep.ConnsOpen != 12 {
		t.Errorf("layout: %d chats, %d conns", rep.Chats, rep.ConnsOpen)
	}
}

func TestRunIdle(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	cfg := testConfig(s.URL)
	cfg.Scenario, cfg.Conns, cfg.Users, cfg.Duration = "idle", 12, 4, 300*time.Millisecond
	rep := runOK(t, cfg)
	if rep.ConnsOpen != 12 || rep.Connect.Count != 12 || rep.Sent != 0 {
		t.Errorf("idle: %d open, %d connect samples, %d sent", rep.ConnsOpen, rep.Connect.Count, rep.Sent)
	}
}

// TestRunCountsServerDeath: connections dropped by a stopping server are
// errors, and the run fails.
func TestRunCountsServerDeath(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	cfg := testConfig(s.URL)
	cfg.Scenario, cfg.Members, cfg.Rate, cfg.Duration = "group", 3, 10, 2*time.Second
	cfg.Grace = time.Second
	var once sync.Once
	cfg.Log = func(format string, a ...any) {
		t.Logf(format, a...)
		if strings.HasPrefix(format, "send:") {
			once.Do(func() { go func() { time.Sleep(300 * time.Millisecond); s.Stop() }() })
		}
	}
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.UnexpectedCloses != 3 || rep.CloseCodes["1001"] != 3 {
		t.Errorf("ok %v, unexpected closes %d %v, failures %v", rep.OK, rep.UnexpectedCloses, rep.CloseCodes, rep.Failures)
	}
}

func TestCLI(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	var out, errOut strings.Builder
	code := cli([]string{"-url", s.URL, "-scenario", "group", "-members", "3", "-rate", "20", "-duration", "500ms"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rep Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("last line is not the JSON report: %v\n%s", err, out.String())
	}
	if !rep.OK || rep.Config.Members != 3 || rep.Acked == 0 || !strings.Contains(out.String(), "persisted msgs/s") {
		t.Errorf("report %+v\n%s", rep, out.String())
	}
	if code := cli([]string{"-scenario", "bogus"}, &out, &errOut); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}

// TestRunMixed: with -mix, a third of the operations edit or toggle
// reactions on the senders' own messages; every change is answered,
// reaches every connection of the chat in rev order, and the final state
// of every changed message is the same on every connection and on the
// server as the operations imply.
func TestRunMixed(t *testing.T) {
	for _, dialect := range apptest.Dialects {
		t.Run(dialect, func(t *testing.T) {
			env := apptest.NewEnv(t, dialect)
			a, b := env.Start(t), env.Start(t)
			cfg := testConfig(a.URL, b.URL)
			cfg.Scenario, cfg.Members, cfg.Devices, cfg.Senders = "group", 4, 2, 3
			cfg.Rate, cfg.Window, cfg.Duration, cfg.Mix = 60, 2, 2*time.Second, 0.33
			rep := runOK(t, cfg)
			checkCounts(t, rep, 8)
			s := rep.States
			if s == nil || rep.Ops < 10 || rep.OpsAnswered != rep.Ops {
				t.Fatalf("changes: %d sent, %d answered, states %+v", rep.Ops, rep.OpsAnswered, s)
			}
			// Every change reaches all 8 connections of the group.
			if rep.ExpectedUpdates != 8*rep.Ops || rep.Updates != rep.ExpectedUpdates {
				t.Errorf("message.updated: %d received, %d expected (8 × %d changes)", rep.Updates, rep.ExpectedUpdates, rep.Ops)
			}
			if s.Touched == 0 || s.Checked != 8*s.Touched || s.Differ != 0 || s.ServerChecked != s.Touched || s.ServerDiffer != 0 {
				t.Errorf("final states %+v", s)
			}
			if rep.Verify.RevOutOfOrder != 0 || rep.Verify.RevGaps != 0 {
				t.Errorf("revs: %+v", rep.Verify)
			}
		})
	}
}

// TestCheckViewsFindsDifferences: a connection whose last view of a
// changed message is not the expected state, or that never saw a change,
// is counted.
func TestCheckViewsFindsDifferences(t *testing.T) {
	sent := msgState{text: hashText([]byte("1 1 x"))}
	edited := msgState{text: hashText([]byte("2 2 edit x")), react: 1}
	want := map[int64]map[int64]expect{7: {3: {first: sent, want: edited}}}
	conn := func(views map[viewKey]msgState) *lconn {
		return &lconn{ws: &client.Socket{}, follows: []int64{7}, views: views}
	}
	var sc StateCheck
	checkViews([]*lconn{
		conn(map[viewKey]msgState{{7, 3}: edited}), // up to date
		conn(nil), // saw no change: still as sent
		conn(map[viewKey]msgState{{7, 3}: {text: edited.text}}),                      // missed the reaction
		conn(map[viewKey]msgState{{7, 3}: {text: edited.text, react: 1, bad: true}}), // a stranger's reaction
	}, want, &sc)
	if sc.Checked != 4 || sc.Differ != 3 {
		t.Errorf("%+v, want 4 checked, 3 differing", sc)
	}
	// Back where it started: a connection that saw nothing agrees.
	sc = StateCheck{}
	checkViews([]*lconn{conn(nil)}, map[int64]map[int64]expect{7: {3: {first: sent, want: sent}}}, &sc)
	if sc.Differ != 0 {
		t.Errorf("%+v", sc)
	}
	// The server's reactions: another user's, a count of 2 or an unknown
	// emoji are not the sender's own.
	for _, rs := range [][]reactionBody{
		{{Emoji: "👍", Count: 1, UserIDs: []int64{9}}},
		{{Emoji: "👍", Count: 2, UserIDs: []int64{5, 9}}},
		{{Emoji: "🙃", Count: 1, UserIDs: []int64{5}}},
	} {
		if s := stateOf([]byte("t"), false, rs, 5); !s.bad {
			t.Errorf("%+v read as the sender's own", rs)
		}
	}
	if s := stateOf([]byte("t"), false, []reactionBody{{Emoji: "❤️", Count: 1, UserIDs: []int64{5}}}, 5); s.bad || s.react != 2 {
		t.Errorf("the sender's ❤️ read as %+v", s)
	}
}
