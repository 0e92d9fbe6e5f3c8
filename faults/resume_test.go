package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/testkit"
)

// TestClientsResumeAcrossReplicaKill runs the two SDKs as applications
// would, through nginx in front of two replicas: Go client.Conn
// connections and TypeScript WindiConnection clients (in node, from
// sdk/ts/test/faults-client.ts) each send to one group chat at a steady
// rate and receive. The replica holding most of the connections is killed
// with SIGKILL mid-stream and started again. The SDKs themselves
// reconnect, resume by revision and re-send what was not acked with the
// same client_msg_id; the test only records what each application asked
// to send, what was acked and what it saw. Afterwards every message the
// applications asked to send is acked and in history exactly once, and
// every client saw every message of the chat exactly once, in seq order,
// from every sender (its own from their acks).
func TestClientsResumeAcrossReplicaKill(t *testing.T) {
	requireFaults(t)
	start := time.Now()
	tsSDK(t) // build first: a missing node fails before any server starts
	c := startCluster(t, testkit.Options{Replicas: 2, Nginx: true})
	r := newResumeRun(t, c)
	victim, survivor := c.Replicas[0], c.Replicas[1]

	// Five Go connections and two TypeScript ones, on /ws and on
	// /ws/{chat_id}; user g0 has one of each. Four are placed on the
	// replica that will be killed, three on the other.
	users := map[string]*user{}
	for _, n := range []string{"g0", "g1", "g2", "g3", "t0", "t1"} {
		users[n] = register(t, r.hc, c.URL, strings.ToUpper(n[:1])+n[1:])
	}
	var members []int64
	for _, n := range []string{"g1", "g2", "g3", "t0", "t1"} {
		members = append(members, users[n].ID)
	}
	r.group = createGroup(t, users["g0"], "resume "+r.run, members...)
	layout := []struct {
		name, kind, user string
		perChat          bool
		on               *testkit.Replica
	}{
		{"g0-ws", "Go", "g0", false, victim},
		{"g0-chat", "Go", "g0", true, survivor},
		{"g1-ws", "Go", "g1", false, victim},
		{"g2-chat", "Go", "g2", true, survivor},
		{"g3-ws", "Go", "g3", false, victim},
		{"t0-ws", "TS", "t0", false, victim},
		{"t1-chat", "TS", "t1", true, survivor},
	}
	var tsSpecs []tsClientSpec
	for _, l := range layout {
		sc := &sdkClient{name: l.name, kind: l.kind, u: users[l.user], target: l.on.Name()}
		if l.perChat {
			sc.chatID = r.group
		}
		r.clients = append(r.clients, sc)
		if l.kind == "TS" {
			tsSpecs = append(tsSpecs, tsClientSpec{Name: sc.name, Token: sc.u.Token, ChatID: sc.chatID, Target: sc.target})
		}
	}

	// The TypeScript clients first: node reports each once placed.
	placed := make(chan struct{})
	var placedOnce sync.Once
	ts := startTSClients(t, c.URL, r.group, r.run, r.interval, tsSpecs, filepath.Join(c.Dir, "ts-clients.log"), func(ev tsEvent) {
		if ev.Ev == "placed" {
			placedOnce.Do(func() { close(placed) })
		}
		r.tsEvent(ev)
	})
	select {
	case <-placed:
	case <-ts.done:
		r.mu.Lock()
		problems := strings.Join(r.problems, "; ")
		r.mu.Unlock()
		t.Fatalf("node faults-client.js exited before its clients were placed: %v\n%s\nproblems: %s", ts.err, ts.stderrText(), problems)
	case <-time.After(60 * time.Second):
		t.Fatalf("the TypeScript clients were not placed within 60 s; stderr:\n%s", ts.stderrText())
	}
	conns := map[*sdkClient]*client.Conn{}
	for _, sc := range r.clients {
		if sc.kind == "Go" {
			conns[sc] = r.dialGo(t, sc)
		}
	}
	t.Cleanup(func() {
		for _, conn := range conns {
			_ = conn.Close()
		}
	})

	// The replicas' own count of open WebSockets names the victim: the
	// one that holds the most.
	var counts []int
	if err := testkit.WaitFor(10*time.Second, func() bool {
		counts = counts[:0]
		total := 0
		for _, rep := range c.Replicas {
			n := wsConnections(rep)
			counts = append(counts, n)
			total += n
		}
		return total == len(r.clients)
	}); err != nil {
		t.Fatalf("open WebSockets per replica %v, want %d in all", counts, len(r.clients))
	}
	if counts[0] <= counts[1] {
		t.Fatalf("open WebSockets per replica %v: the first should hold the most", counts)
	}
	moving := r.on(victim.Name())
	var movingGo, movingTS int
	for _, sc := range moving {
		if sc.kind == "Go" {
			movingGo++
		} else {
			movingTS++
		}
	}
	if movingGo == 0 || movingTS == 0 || len(moving) != counts[0] {
		t.Fatalf("the victim %s holds %d connections by its count, the clients say %d (%d Go, %d TS: %s)", victim.Name(), counts[0], len(moving), movingGo, movingTS, sortedNames(moving))
	}

	// Everyone sends; the victim dies mid-stream and comes back.
	stop := make(chan struct{})
	var senders sync.WaitGroup
	i := 0
	for sc, conn := range conns {
		idx := i
		senders.Go(func() { r.goSender(sc, conn, idx, stop) })
		i++
	}
	if err := ts.command("start"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	// Right before the kill every client's application sends a burst (a
	// pasted batch) of more than the SDKs write ahead of their acks, and
	// the victim dies once it has stored a tenth of its share: with sends
	// at every stage, on the wire, waiting in its sequencer, committed
	// with their acks on the way. The SDKs must send every unacked one
	// again on the next connection, and each is stored once (a repeat of
	// a committed one is acked duplicate:true).
	storedBefore := replicaMetric(victim, "windi_messages_stored_total")
	if err := ts.command(fmt.Sprintf("burst %d", burstSize)); err != nil {
		t.Fatal(err)
	}
	for sc, conn := range conns {
		r.burst(sc, conn, burstSize)
	}
	share := len(moving) * burstSize
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if replicaMetric(victim, "windi_messages_stored_total") >= storedBefore+share/10 {
			break
		}
	}
	storedAtKill := replicaMetric(victim, "windi_messages_stored_total") - storedBefore
	victimName := victim.Name()
	killedAt := r.markKill(victimName)
	victim.Signal(syscall.SIGKILL)
	if !victim.Wait(5 * time.Second) {
		t.Fatal("the killed replica did not exit")
	}
	reconnect, err := r.waitMoved(moving, victimName, 20*time.Second)
	if err != nil {
		t.Error(err)
	}
	sleepUntil(killedAt.Add(4 * time.Second))
	restartAt := time.Now()
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(restartAt)
	sleepUntil(killedAt.Add(7 * time.Second))
	close(stop)
	senders.Wait()
	if err := ts.command("stop"); err != nil {
		t.Error(err)
	}
	if err := r.drain(30 * time.Second); err != nil {
		t.Error(err)
	}
	if err := ts.command("close"); err != nil {
		t.Error(err)
	}
	if err := ts.wait(20 * time.Second); err != nil {
		t.Error(err)
	}
	for _, conn := range conns {
		_ = conn.Close()
	}

	recovery := r.recovery()
	res, kinds := r.verify(t)
	report(t, "clients-resume-kill", start, res,
		fmt.Sprintf("%d Go client.Conn and %d TS WindiConnection clients; killed 1 of 2 replicas holding %d of %d connections (%d Go, %d TS)",
			len(conns), len(tsSpecs), len(moving), len(r.clients), movingGo, movingTS),
		kinds["Go"], kinds["TS"],
		fmt.Sprintf("killed once it had stored %d messages since the burst began (its clients' share of the burst: %d)", storedAtKill, share),
		"reconnect after the kill "+reconnect,
		"recovery "+secs(recovery),
		"killed replica restarted in "+secs(restarted),
		c.NginxStats())
	res.check(t)
}

// wsConnections is a replica's windi_ws_connections gauge (-1 when it
// cannot be read).
func wsConnections(rep *testkit.Replica) int { return replicaMetric(rep, "windi_ws_connections") }

// replicaMetric reads one unlabelled sample of a replica's /metrics (-1
// when it cannot be read).
func replicaMetric(rep *testkit.Replica, name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	text, err := scrape(ctx, rep.URL+"/metrics")
	if err != nil {
		return -1
	}
	v, ok := metricValue(text, name)
	if !ok {
		return -1
	}
	return int(v)
}

// sdkClient is one connection of an SDK, Go (client.Conn) or TypeScript
// (a WindiConnection in node): what its application asked to send, what
// was acked, what it saw, and how its connection came and went. Guarded
// by the resumeRun's mu.
type sdkClient struct {
	name   string
	kind   string // "Go" or "TS"
	u      *user
	chatID int64  // /ws/{chat_id}; 0 for /ws
	target string // the replica to place it on

	placed     bool
	replica    string
	connected  bool
	downAt     time.Time
	backAt     time.Time // the last time it connected
	reconnects int
	maxAway    time.Duration
	seen       []seenMsg
	sends      int
	recovered  time.Time // first message sent after the kill seen
	onVictim   bool      // connected to the replica when it was killed
	frames     []string  // the last frames read and written (Go), for a failure's report
}

// traceFrame keeps the last 30 frames of a Go client.
func (r *resumeRun) traceFrame(sc *sdkClient, out bool, data []byte) {
	dir := "<"
	if out {
		dir = ">"
	}
	line := fmt.Sprintf("%s %s %.300s", time.Now().Format("15:04:05.000"), dir, data)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(sc.frames) >= 30 {
		sc.frames = append(sc.frames[:0], sc.frames[1:]...)
	}
	sc.frames = append(sc.frames, line)
}

type seenMsg struct {
	seq, sender int64
	cmid, text  string
}

type sendInfo struct {
	c         *sdkClient
	text      string
	at        time.Time
	whileDown bool // the application sent it while its client was disconnected
}

type ackInfo struct {
	seq, id int64
	dup     bool
	at      time.Time
}

// resumeRun records what every client of the test did.
type resumeRun struct {
	t        *testing.T
	c        *testkit.Cluster
	hc       *http.Client // the SDK clients', checking REST answers against the spec
	spec     *speccheck.Checker
	run      string
	group    int64
	interval time.Duration
	clients  []*sdkClient
	ctx      context.Context
	ackWG    sync.WaitGroup // Go sends waiting for their outcome

	mu        sync.Mutex // guards the fields below and every sdkClient
	sent      map[string]*sendInfo
	acked     map[string]ackInfo
	failed    map[string]string
	dupAcks   int
	killedAt  time.Time
	problems  []string
	nProblems int
}

func newResumeRun(t *testing.T, c *testkit.Cluster) *resumeRun {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &resumeRun{
		t: t, c: c, hc: specHTTP(t), spec: spec(t), run: testkit.RandomHex(4), interval: 100 * time.Millisecond, ctx: ctx,
		sent: map[string]*sendInfo{}, acked: map[string]ackInfo{}, failed: map[string]string{},
	}
}

func (r *resumeRun) client(name string) *sdkClient {
	for _, sc := range r.clients {
		if sc.name == name {
			return sc
		}
	}
	return nil
}

func (r *resumeRun) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problemLocked(format, args...)
}

func (r *resumeRun) problemLocked(format string, args ...any) {
	r.nProblems++
	if len(r.problems) < 100 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

func (r *resumeRun) recordSent(sc *sdkClient, cmid, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sent[cmid]; ok {
		r.problemLocked("%s: %q sent twice by the application", sc.name, cmid)
		return
	}
	sc.sends++
	r.sent[cmid] = &sendInfo{c: sc, text: text, at: time.Now(), whileDown: sc.placed && !sc.connected}
}

func (r *resumeRun) recordAck(sc *sdkClient, cmid string, chat, seq, id int64, dup bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sent[cmid]
	switch {
	case s == nil:
		r.problemLocked("%s: ack for %q, which its application never sent", sc.name, cmid)
		return
	case s.c != sc:
		r.problemLocked("%s: ack for %q, which %s sent", sc.name, cmid, s.c.name)
	case chat != r.group:
		r.problemLocked("%s: %q acked in chat %d, sent to %d", sc.name, cmid, chat, r.group)
	}
	if _, ok := r.acked[cmid]; ok {
		r.problemLocked("%s: %q acked twice to the application", sc.name, cmid)
		return
	}
	r.acked[cmid] = ackInfo{seq: seq, id: id, dup: dup, at: time.Now()}
	if dup {
		r.dupAcks++
	}
}

func (r *resumeRun) recordFailed(sc *sdkClient, cmid, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[cmid] = why
	r.problemLocked("%s: send %q failed: %s", sc.name, cmid, why)
}

func (r *resumeRun) recordSeen(sc *sdkClient, chat, seq, sender int64, cmid, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if chat != r.group {
		r.problemLocked("%s: message of chat %d, which no one sends to", sc.name, chat)
		return
	}
	sc.seen = append(sc.seen, seenMsg{seq: seq, sender: sender, cmid: cmid, text: text})
	if sc.recovered.IsZero() && !r.killedAt.IsZero() {
		if s := r.sent[cmid]; s != nil && s.at.After(r.killedAt) {
			sc.recovered = time.Now()
		}
	}
}

// recordState follows a placed client's connection: down from the first
// sign of a lost socket until it is connected again.
func (r *resumeRun) recordState(sc *sdkClient, connected bool, replica string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !sc.placed {
		return
	}
	now := time.Now()
	switch {
	case connected && !sc.connected:
		sc.connected, sc.backAt, sc.replica = true, now, replica
		sc.reconnects++
		sc.maxAway = max(sc.maxAway, now.Sub(sc.downAt))
	case connected:
		sc.replica = replica
	case sc.connected:
		sc.connected, sc.downAt = false, now
	}
}

func (r *resumeRun) place(sc *sdkClient, replica string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sc.placed, sc.connected, sc.replica, sc.backAt = true, true, replica, time.Now()
}

// tsEvent takes one line of the TypeScript clients.
func (r *resumeRun) tsEvent(ev tsEvent) {
	sc := r.client(ev.Client)
	switch ev.Ev {
	case "placed", "done", "upgrade":
		return
	case "garbage", "fatal":
		r.problem("TS clients: %s %s", ev.Ev, ev.Error)
		return
	}
	if sc == nil {
		r.problem("TS clients: %s event of an unknown client %q", ev.Ev, ev.Client)
		return
	}
	switch ev.Ev {
	case "ready":
		r.place(sc, ev.Replica)
	case "state":
		r.recordState(sc, ev.State == "connected", ev.Replica)
	case "sent":
		r.recordSent(sc, ev.Cmid, ev.Text)
	case "acked":
		r.recordAck(sc, ev.Cmid, ev.Chat, ev.Seq, ev.ID, ev.Duplicate)
	case "failed":
		r.recordFailed(sc, ev.Cmid, ev.Error)
	case "message":
		r.recordSeen(sc, ev.Chat, ev.Seq, ev.Sender, ev.Cmid, ev.Text)
	case "closed":
		if !strings.HasPrefix(ev.Error, "ClosedError") {
			r.problem("%s: ended with %s", sc.name, ev.Error)
		}
	default:
		r.problem("%s: unknown event %q", sc.name, ev.Ev)
	}
}

// dialGo dials a client.Conn through the proxy until it lands on the
// client's target replica (before the load: nothing is missed).
func (r *resumeRun) dialGo(t *testing.T, sc *sdkClient) *client.Conn {
	t.Helper()
	for attempt := 1; attempt <= 40; attempt++ {
		var replica atomic.Value // string: the X-Windi-Replica of its connection
		last := func() string {
			s, _ := replica.Load().(string)
			return s
		}
		var discarded atomic.Bool
		ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
		conn, err := sc.u.c.Dial(ctx, client.Config{
			ChatID:    sc.chatID,
			OnConnect: func(resp *http.Response) { replica.Store(resp.Header.Get("X-Windi-Replica")) },
			OnMessage: func(m rest.Message) {
				if !discarded.Load() {
					r.recordSeen(sc, m.ChatID, m.Seq, m.SenderID, m.ClientMsgID, m.Text)
				}
			},
			OnState: func(s client.State, err error) {
				if !discarded.Load() && s != client.Closed {
					r.recordState(sc, s == client.Connected, last())
				}
			},
			OnError: func(e *client.FrameError) { r.problem("%s: error frame %v", sc.name, e) },
			OnClose: func(err error) {
				if !discarded.Load() && !errors.Is(err, client.ErrClosed) {
					r.problem("%s: ended with %v", sc.name, err)
				}
			},
			Trace: func(out bool, data []byte) {
				r.traceFrame(sc, out, data)
				check := r.spec.CheckServerFrame
				if out {
					check = r.spec.CheckClientFrame
				}
				if err := check(data); err != nil {
					r.problem("%s: %v", sc.name, err)
				}
			},
		})
		cancel()
		if err != nil {
			t.Fatalf("%s: dial: %v", sc.name, err)
		}
		if rep := last(); rep == sc.target {
			r.place(sc, rep)
			return conn
		}
		discarded.Store(true)
		_ = conn.Close()
		// The round robin's next pick is the other replica: a plain
		// request moves it on, so the next handshake does not meet the
		// same one.
		_, _, _ = testkit.Get(context.Background(), r.c.URL+"/readyz")
	}
	t.Fatalf("%s: no connection through the proxy landed on %s in 40 dials", sc.name, sc.target)
	return nil
}

// burstSize is how many messages each client sends at once right before
// the kill: more than the 64 each SDK writes ahead of their acks.
const burstSize = 100

// burst sends n messages at once.
func (r *resumeRun) burst(sc *sdkClient, conn *client.Conn, n int) {
	for i := 1; i <= n; i++ {
		r.sendGo(sc, conn, fmt.Sprintf("%s-%s-burst-%d", r.run, sc.name, i))
	}
}

// sendGo sends one message and records its outcome when it comes.
func (r *resumeRun) sendGo(sc *sdkClient, conn *client.Conn, cmid string) {
	text := fmt.Sprintf("message %s of %s", cmid, sc.name)
	r.recordSent(sc, cmid, text)
	p, err := conn.SendWithID(r.group, cmid, text)
	if err != nil {
		r.recordFailed(sc, cmid, err.Error())
		return
	}
	r.ackWG.Go(func() {
		ack, err := p.Wait(r.ctx)
		if err != nil {
			r.recordFailed(sc, cmid, err.Error())
			return
		}
		r.recordAck(sc, cmid, ack.Message.ChatID, ack.Message.Seq, ack.Message.ID, ack.Duplicate)
	})
}

// goSender sends one message every interval until stop, whatever the
// state of the connection: the Conn queues what it cannot write yet.
func (r *resumeRun) goSender(sc *sdkClient, conn *client.Conn, idx int, stop <-chan struct{}) {
	select { // spread the senders over the interval
	case <-time.After(time.Duration(idx) * r.interval / time.Duration(len(r.clients))):
	case <-stop:
		return
	}
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-tick.C:
		case <-stop:
			return
		}
		r.sendGo(sc, conn, fmt.Sprintf("%s-%s-%d", r.run, sc.name, n))
	}
}

// markKill notes the time of the kill and the clients connected to the
// victim then.
func (r *resumeRun) markKill(victim string) time.Time {
	now := time.Now()
	r.mu.Lock()
	r.killedAt = now
	for _, sc := range r.clients {
		sc.onVictim = sc.connected && sc.replica == victim
	}
	r.mu.Unlock()
	return now
}

// on lists the clients connected to replica now.
func (r *resumeRun) on(replica string) []*sdkClient {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*sdkClient
	for _, sc := range r.clients {
		if sc.connected && sc.replica == replica {
			out = append(out, sc)
		}
	}
	return out
}

// waitMoved waits until every client of the killed replica is connected
// to another one; it describes the time from the kill until the last Go
// and the last TS client were back.
func (r *resumeRun) waitMoved(moving []*sdkClient, killed string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		var waiting []string
		worst := map[string]time.Duration{}
		r.mu.Lock()
		for _, sc := range moving {
			if !sc.connected || sc.replica == killed || !sc.backAt.After(r.killedAt) {
				waiting = append(waiting, sc.name)
				continue
			}
			worst[sc.kind] = max(worst[sc.kind], sc.backAt.Sub(r.killedAt))
		}
		r.mu.Unlock()
		if len(waiting) == 0 {
			return fmt.Sprintf("Go %s, TS %s (the last of each to connect to the survivor)", secs(worst["Go"]), secs(worst["TS"])), nil
		}
		if time.Now().After(deadline) {
			return "not all", fmt.Errorf("not reconnected to a survivor %s after the kill: %s", d, strings.Join(waiting, ", "))
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// recovery is the time from the kill until every client had seen a
// message first sent after it.
func (r *resumeRun) recovery() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var worst time.Duration
	for _, sc := range r.clients {
		if sc.recovered.IsZero() {
			r.problemLocked("%s: saw no message sent after the kill", sc.name)
			continue
		}
		worst = max(worst, sc.recovered.Sub(r.killedAt))
	}
	return worst
}

// unsettled says what is still outstanding ("" when nothing is): sends
// without an outcome, clients not connected or behind the highest acked
// seq.
func (r *resumeRun) unsettled() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var why []string
	if n := len(r.sent) - len(r.acked) - len(r.failed); n > 0 {
		why = append(why, fmt.Sprintf("%d sends without an ack", n))
	}
	var top int64
	for _, a := range r.acked {
		top = max(top, a.seq)
	}
	for _, sc := range r.clients {
		var last int64
		if len(sc.seen) > 0 {
			last = sc.seen[len(sc.seen)-1].seq
		}
		switch {
		case !sc.connected:
			why = append(why, sc.name+" not connected")
		case last < top:
			why = append(why, fmt.Sprintf("%s is at seq %d, acked up to %d", sc.name, last, top))
		}
	}
	return strings.Join(why, "; ")
}

// drain waits until every send has its outcome and every client has
// seen everything acked.
func (r *resumeRun) drain(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		why := r.unsettled()
		if why == "" {
			time.Sleep(500 * time.Millisecond) // anything more would be a repeat
			if why = r.unsettled(); why == "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			for _, sc := range r.clients {
				if len(sc.frames) > 0 {
					r.t.Logf("%s: last frames:\n  %s", sc.name, strings.Join(sc.frames, "\n  "))
				}
			}
			r.mu.Unlock()
			return fmt.Errorf("not settled %s after the sending stopped: %s", d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verify checks what the applications sent, had acked and saw against
// the chat's history: every send acked; history holds each client_msg_id
// once, at its acked seq, with no gap and nothing unacked; every client
// saw seq 1…N exactly once, in order, each the message history has. It
// returns the totals and a summary per SDK.
func (r *resumeRun) verify(t *testing.T) (result, map[string]string) {
	t.Helper()
	r.ackWG.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hist, err := history(ctx, r.clients[0].u.c, r.group)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := result{historyLen: map[int64]int{r.group: len(hist)}}
	stored := map[string]rest.Message{}
	for i, m := range hist {
		if m.Seq != int64(i+1) {
			r.problemLocked("history: message %d has seq %d (a gap or a repeat)", i+1, m.Seq)
		}
		if prev, ok := stored[m.ClientMsgID]; ok {
			r.problemLocked("history: %q stored twice (seq %d and %d)", m.ClientMsgID, prev.Seq, m.Seq)
		}
		stored[m.ClientMsgID] = m
		s := r.sent[m.ClientMsgID]
		a, acked := r.acked[m.ClientMsgID]
		switch {
		case s == nil:
			r.problemLocked("history: seq %d %q was never sent", m.Seq, m.ClientMsgID)
		case s.c.u.ID != m.SenderID || s.text != m.Text:
			r.problemLocked("history: seq %d %q has sender %d text %q, sent by %d as %q", m.Seq, m.ClientMsgID, m.SenderID, m.Text, s.c.u.ID, s.text)
		case !acked:
			r.problemLocked("history: seq %d %q is stored but was never acked", m.Seq, m.ClientMsgID)
			res.unacked++
		case a.seq != m.Seq || a.id != m.ID:
			r.problemLocked("history: %q is seq %d id %d, acked as seq %d id %d", m.ClientMsgID, m.Seq, m.ID, a.seq, a.id)
		}
	}
	type kindTotals struct {
		clients, sent, acked, dup, delivered, expected, lost, repeated, disorder, reconnects int
		whileDown, whileDownAcked, inFlight                                                  int
	}
	kinds := map[string]*kindTotals{"Go": {}, "TS": {}}
	for cmid, s := range r.sent {
		k := kinds[s.c.kind]
		k.sent++
		if s.whileDown {
			k.whileDown++
		}
		a, acked := r.acked[cmid]
		if !acked {
			if _, failed := r.failed[cmid]; !failed {
				res.unanswered++
				r.problemLocked("%s: send %q never answered", s.c.name, cmid)
			}
			continue
		}
		k.acked++
		if a.dup {
			k.dup++
		}
		if s.whileDown {
			k.whileDownAcked++
		}
		if s.c.onVictim && s.at.Before(r.killedAt) && a.at.After(r.killedAt) {
			k.inFlight++ // written to the victim, answered on the next connection
		}
		if _, ok := stored[cmid]; !ok {
			res.lost++
			r.problemLocked("%s: %q acked as seq %d but not in history", s.c.name, cmid, a.seq)
		}
	}
	for _, sc := range r.clients {
		k := kinds[sc.kind]
		k.clients++
		k.reconnects += sc.reconnects
		res.reconnects += sc.reconnects
		res.maxAway = max(res.maxAway, sc.maxAway)
		got := map[int64]int{}
		var last int64
		for _, m := range sc.seen {
			got[m.seq]++
			switch {
			case got[m.seq] > 1:
				res.repeated++
				k.repeated++
				r.problemLocked("%s: seq %d seen again (highest so far %d)", sc.name, m.seq, last)
			case m.seq < last:
				res.outOfOrder++
				k.disorder++
				r.problemLocked("%s: seq %d seen after seq %d", sc.name, m.seq, last)
			case m.seq > last+1:
				res.gaps++
				k.disorder++
				r.problemLocked("%s: jumped from seq %d to %d", sc.name, last, m.seq)
			}
			last = max(last, m.seq)
			if m.seq < 1 || m.seq > int64(len(hist)) {
				r.problemLocked("%s: saw seq %d, which history does not have", sc.name, m.seq)
				continue
			}
			if h := hist[m.seq-1]; h.ClientMsgID != m.cmid || h.SenderID != m.sender || h.Text != m.text {
				r.problemLocked("%s: seq %d seen as %q from %d, history has %q from %d", sc.name, m.seq, m.cmid, m.sender, h.ClientMsgID, h.SenderID)
			}
		}
		missing := 0
		for seq := int64(1); seq <= int64(len(hist)); seq++ {
			if got[seq] == 0 {
				missing++
			}
		}
		if missing > 0 {
			r.problemLocked("%s: %d of the %d messages never seen (highest seq seen %d)", sc.name, missing, len(hist), last)
		}
		res.lost += missing
		k.lost += missing
		res.delivered += len(sc.seen)
		res.expected += len(hist)
		k.delivered += len(sc.seen)
		k.expected += len(hist)
	}
	res.sent, res.acked, res.failed, res.dupAcks = len(r.sent), len(r.acked), len(r.failed), r.dupAcks
	res.problems, res.nProblems = r.problems, r.nProblems
	out := map[string]string{}
	for name, k := range kinds {
		out[name] = fmt.Sprintf("%s: %d clients, acked %d of %d sent (%d duplicate acks; %d sent while disconnected, %d of them acked; %d in flight at the kill, acked after it), delivered %d/%d, lost %d, repeated %d, out of order %d, reconnects %d",
			name, k.clients, k.acked, k.sent, k.dup, k.whileDown, k.whileDownAcked, k.inFlight, k.delivered, k.expected, k.lost, k.repeated, k.disorder, k.reconnects)
		// Each SDK had a client on the victim: its application went on
		// sending while that client was away, and the queue must have
		// carried those sends.
		if k.whileDown == 0 {
			r.problemLocked("%s: no send was made while a client was disconnected: the queue was not exercised", name)
		}
	}
	return res, out
}

// sortedNames lists clients by name (for messages).
func sortedNames(cs []*sdkClient) string {
	names := make([]string, len(cs))
	for i, sc := range cs {
		names[i] = sc.name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
