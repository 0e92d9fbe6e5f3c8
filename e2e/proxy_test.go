package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// TestThroughProxy drives a deployment of several replicas only through
// its proxy (WINDI_E2E_URL), the way clients see it: four users in one
// group, two WebSockets each spread over the replicas, 80 concurrent sends,
// then a reconnect that resumes with since_seq (a client.Conn, as SDK
// users resume). Every connection must see
// every message exactly once, in seq order (SPEC §4, §6.2).
// WINDI_E2E_REPLICAS (comma-separated base URLs of the replicas themselves)
// is optional; with it the test also checks the replica names it sees.
func TestThroughProxy(t *testing.T) {
	base := strings.TrimRight(os.Getenv("WINDI_E2E_URL"), "/")
	if base == "" {
		t.Skip("set WINDI_E2E_URL (.ci/run sets it)")
	}
	const (
		nUsers       = 4
		connsPerUser = 2
		perUser      = 20 // messages each user sends, split over its connections
		late         = 5  // messages sent while one connection is away
	)
	start := time.Now()
	k := newKit(t, base)
	known := replicaNames(t, k, os.Getenv("WINDI_E2E_REPLICAS"))
	checkProxyHeaders(t, k)

	// Four users and a group of all four, created by the first.
	users := make([]user, nUsers)
	for i := range users {
		users[i] = k.register(fmt.Sprintf("User%d", i))
	}
	var others []int64
	for _, u := range users[1:] {
		others = append(others, u.ID)
	}
	run := randomHex(4)
	chat := createGroup(t, users[0], "e2e "+run, others)
	chatPath := fmt.Sprintf("/ws/%d", chat.ID)

	// No token: refused before the upgrade, through the proxy too.
	if s, resp, err := k.dialSocket(k.client(base, nil), "anonymous", "/ws", ""); err == nil {
		s.close()
		t.Fatal("dial /ws without a token: got a connection, want 401")
	} else if resp == nil || resp.StatusCode != http.StatusUnauthorized || client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("dial /ws without a token: got %v (%s), want status 401", statusOf(resp), err)
	}

	// Two connections per user, one on /ws and one on /ws/{chat_id}.
	var conns []*sock
	owner := map[*sock]int{} // connection -> index in users
	t.Cleanup(func() {
		for _, c := range conns {
			c.close()
		}
	})
	checkReplica := func(c *sock) {
		t.Helper()
		if c.Replica == "" {
			t.Fatalf("dial %s: the 101 response has no %s header", c.Name, replicaHeader)
		}
		if known != nil && !known[c.Replica] {
			t.Fatalf("dial %s: landed on replica %q, not one of WINDI_E2E_REPLICAS (%v)", c.Name, c.Replica, keysOf(known))
		}
	}
	dial := func(i int, path string) *sock {
		t.Helper()
		name := fmt.Sprintf("u%d%s", i, path)
		c, resp, err := k.dialSocket(users[i].C, name, path, users[i].Token)
		if err != nil {
			t.Fatalf("dial %s: %v (status %v)", name, err, statusOf(resp))
		}
		checkReplica(c)
		owner[c] = i
		return c
	}
	for i := range users {
		for k := range connsPerUser {
			path := "/ws"
			if (i+k)%2 == 1 {
				path = chatPath
			}
			conns = append(conns, dial(i, path))
		}
	}
	// nginx balances round robin, so the connections should already be
	// spread; if not, redial the last one until it lands elsewhere.
	for attempt := 0; len(replicasOf(conns)) < 2 && attempt < 10; attempt++ {
		last := conns[len(conns)-1]
		last.close()
		conns[len(conns)-1] = dial(owner[last], last.Path)
	}
	seen := replicasOf(conns)
	if len(seen) < 2 {
		t.Fatalf("all %d connections landed on replica %v; want at least 2 replicas behind the proxy", len(conns), seen)
	}
	time.Sleep(300 * time.Millisecond) // let presence settle; not needed for delivery

	// Every connection sends its user's share, all at once.
	type sendInfo struct {
		conn   *sock
		sender int64
		text   string
	}
	sent := map[string]sendInfo{} // client_msg_id -> who sent it
	var mine = map[*sock]map[string]bool{}
	var batches = map[*sock][]string{}
	for j, c := range conns {
		mine[c] = map[string]bool{}
		for m := range perUser / connsPerUser {
			id := fmt.Sprintf("e2e-%s-c%d-%02d", run, j, m)
			sent[id] = sendInfo{conn: c, sender: users[owner[c]].ID, text: fmt.Sprintf("hello %d from %s", m, c.Name)}
			mine[c][id] = true
			batches[c] = append(batches[c], id)
		}
	}
	total := len(sent)
	sendAll := func(c *sock, ids []string) error {
		for _, id := range ids {
			if err := c.send(chat.ID, id, sent[id].text); err != nil {
				return fmt.Errorf("%s: send %s: %w", c.Name, id, err)
			}
		}
		return nil
	}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			<-gate
			if err := sendAll(c, batches[c]); err != nil {
				t.Error(err)
			}
		})
	}
	sendStart := time.Now()
	close(gate)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// verify reads n message frames from c and checks they are seqs
	// from+1..from+n, each once, acks for c's own sends and message.new
	// for everything else.
	verify := func(c *sock, from int64, n int, acks bool) (last int64, err error) {
		frames, err := c.messages(n, time.Now().Add(60*time.Second))
		if err != nil {
			return 0, err
		}
		for idx, f := range frames {
			m, duplicate, ok := messageOf(f)
			if !ok {
				return 0, fmt.Errorf("%s: bad message in %s", c.Name, f.Raw)
			}
			want := from + int64(idx) + 1
			info, ok := sent[m.ClientMsgID]
			switch {
			case m.Seq != want:
				return 0, fmt.Errorf("%s: frame %d has seq %d, want %d (%s)", c.Name, idx+1, m.Seq, want, f.Raw)
			case m.ChatID != chat.ID:
				return 0, fmt.Errorf("%s: message of chat %d, want %d", c.Name, m.ChatID, chat.ID)
			case !ok:
				return 0, fmt.Errorf("%s: unknown client_msg_id in %s", c.Name, f.Raw)
			case m.SenderID != info.sender || m.Text != info.text:
				return 0, fmt.Errorf("%s: got sender %d text %q, want %d %q", c.Name, m.SenderID, m.Text, info.sender, info.text)
			case acks && info.conn == c && f.Type != "message.ack":
				return 0, fmt.Errorf("%s: got %s for its own send, want message.ack", c.Name, f.Raw)
			case (!acks || info.conn != c) && f.Type != "message.new":
				return 0, fmt.Errorf("%s: got %s for a message it did not send, want message.new", c.Name, f.Raw)
			case duplicate:
				return 0, fmt.Errorf("%s: got duplicate:true for a first send: %s", c.Name, f.Raw)
			}
		}
		if extra := c.quiet(300 * time.Millisecond); len(extra) > 0 {
			return 0, fmt.Errorf("%s: %d frames after seq %d, e.g. %s", c.Name, len(extra), from+int64(n), extra[0].Raw)
		}
		return from + int64(n), nil
	}
	verifyAll := func(cs []*sock, from int64, n int) int {
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				if _, err := verify(c, from, n, true); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return len(cs) * n
	}
	deliveries := verifyAll(conns, 0, total)
	deliveredIn := time.Since(sendStart)

	// History holds exactly the same messages, in seq order.
	checkHistory := func(want int) {
		t.Helper()
		hist := history(t, users[nUsers-1], chat.ID, 100)
		if len(hist) != want {
			t.Fatalf("history: got %d messages, want %d", len(hist), want)
		}
		ids := map[string]bool{}
		for i, m := range hist {
			if m.Seq != int64(i+1) {
				t.Fatalf("history: message %d has seq %d, want %d", i+1, m.Seq, i+1)
			}
			if _, ok := sent[m.ClientMsgID]; !ok || ids[m.ClientMsgID] {
				t.Fatalf("history: unexpected or repeated client_msg_id %q at seq %d", m.ClientMsgID, m.Seq)
			}
			ids[m.ClientMsgID] = true
		}
	}
	checkHistory(total)

	// One per-chat connection goes away; messages sent meanwhile come back
	// when it reconnects with since_seq, exactly those and nothing else.
	away := slices.IndexFunc(conns, func(c *sock) bool { return c.Path == chatPath && owner[c] != 0 })
	gone := conns[away]
	gone.close()
	conns = slices.Delete(conns, away, away+1)
	sender := conns[0]
	var lateIDs []string
	for m := range late {
		id := fmt.Sprintf("e2e-%s-late-%02d", run, m)
		sent[id] = sendInfo{conn: sender, sender: users[owner[sender]].ID, text: fmt.Sprintf("while you were away %d", m)}
		lateIDs = append(lateIDs, id)
	}
	if err := sendAll(sender, lateIDs); err != nil {
		t.Fatal(err)
	}
	deliveries += verifyAll(conns, int64(total), late)
	// It comes back as a client.Conn that resumes by seq: its handshake is
	// the since_seq one, its frames (Trace) must be exactly the missed
	// messages, and OnMessage must hand them over in order.
	back, got := k.resumeConn(users[owner[gone]], gone.Name+"(again)", chat.ID, int64(total))
	owner[back] = owner[gone]
	conns = append(conns, back)
	checkReplica(back)
	if _, err := verify(back, int64(total), late, false); err != nil {
		t.Fatal(err)
	}
	checkDelivered(t, back.Name, got.wait(late, 10*time.Second), int64(total), late)
	deliveries += late
	checkHistory(total + late)
	seen = replicasOf(conns)
	seen[gone.Replica] = true

	names := keysOf(seen)
	fmt.Printf("e2e summary: %d connections on %d replicas (%s), %d messages, %d deliveries (the first %d delivered everywhere in %s), reconnect with since_seq replayed %d missed, total %s\n",
		len(conns), len(names), strings.Join(names, ", "), total+late, deliveries, total,
		deliveredIn.Round(time.Millisecond), late, time.Since(start).Round(time.Millisecond))
	st := spec(t).Stats()
	fmt.Printf("e2e spec check: %d responses and %d frames checked against api/openapi.yaml, skipped %v\n", st.Checked, st.Frames, st.Skipped)
}

// replicaNames asks each replica in list (comma-separated base URLs) for
// its name; nil when list is empty.
func replicaNames(t *testing.T, k *kit, list string) map[string]bool {
	t.Helper()
	if strings.TrimSpace(list) == "" {
		return nil
	}
	names := map[string]bool{}
	for _, u := range strings.Split(list, ",") {
		resp := do(t, k.client(strings.TrimSpace(u), nil), http.MethodGet, "/readyz", nil, http.StatusOK)
		name := resp.Header.Get(replicaHeader)
		if name == "" || names[name] {
			t.Fatalf("replica %s: %s is %q (want a name unique per process)", u, replicaHeader, name)
		}
		names[name] = true
	}
	return names
}

var nginxRequestID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// checkProxyHeaders checks what the proxy adds: the replica's name comes
// back, a client's X-Request-Id reaches the server, and a request without
// one gets nginx's.
func checkProxyHeaders(t *testing.T, k *kit) {
	t.Helper()
	anon := k.client(k.base, nil)
	resp := do(t, anon, http.MethodGet, "/readyz", nil, http.StatusOK)
	if resp.Header.Get(replicaHeader) == "" {
		t.Fatalf("GET /readyz through the proxy: no %s header", replicaHeader)
	}
	if id := resp.Header.Get("X-Request-Id"); !nginxRequestID.MatchString(id) {
		t.Errorf("GET /readyz without X-Request-Id: got X-Request-Id %q, want nginx's $request_id (32 hex digits)", id)
	}
	want := "e2e-" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := anon.Do(ctx, http.MethodGet, "/healthz", http.Header{"X-Request-Id": {want}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != want {
		t.Errorf("GET /healthz with X-Request-Id %q: the server answered with %q", want, got)
	}
}

// checkDelivered fails unless msgs (what a Conn handed to OnMessage) are
// the seqs from+1..from+n, once each, in order.
func checkDelivered(t *testing.T, who string, msgs []rest.Message, from int64, n int) {
	t.Helper()
	seqs := make([]int64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.Seq
	}
	if len(msgs) != n {
		t.Fatalf("%s: OnMessage got %d messages (seqs %v), want %d (seqs %d..%d)", who, len(msgs), seqs, n, from+1, from+int64(n))
	}
	for i, s := range seqs {
		if s != from+int64(i)+1 {
			t.Fatalf("%s: OnMessage got seqs %v, want %d..%d once each, in order", who, seqs, from+1, from+int64(n))
		}
	}
}

func replicasOf(conns []*sock) map[string]bool {
	m := map[string]bool{}
	for _, c := range conns {
		m[c.Replica] = true
	}
	return m
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return "no response"
	}
	return resp.StatusCode
}
