package faults

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/testkit"
)

type loadOptions struct {
	observers int           // extra group members that only hold a connection (presence checks)
	interval  time.Duration // between two sends of one device; default 100ms
	window    int           // unanswered sends per device; default 4
}

// ackRec is the answer to a send: its ack, or the code of its error frame.
type ackRec struct {
	chat, seq, id int64
	dup           bool
	code          string // error code; "" for an ack
	at            time.Time
	dev           *device
}

// rawAck is what the server's acks of one client_msg_id said, from the
// raw frames of every device.
type rawAck struct {
	seq, id int64
	fresh   int // acks with duplicate:false
}

// load is a set of users in a group chat (and a private chat of two of
// them), each with two devices through the proxy, all sending while a
// scenario breaks things; it checks and counts what every device receives.
type load struct {
	t       *testing.T
	c       *testkit.Cluster
	hc      *http.Client // the SDK clients', checking REST answers against the spec
	spec    *speccheck.Checker
	run     string
	users   []*user
	group   int64
	private int64
	devices []*device   // tracked: they send and every delivery is checked
	obs     []*observer // observers

	ctx      context.Context
	cancel   context.CancelFunc
	obsWG    sync.WaitGroup // observers' readers
	sendWG   sync.WaitGroup // senders
	waiting  sync.WaitGroup // sends waiting for their outcome
	sending  atomic.Bool
	interval time.Duration
	window   int
	stopOnce sync.Once
	started  time.Time

	mu        sync.Mutex // guards the fields below; taken after a device's mu, never before
	sent      map[string]*sendRec
	acked     map[string]ackRec
	failed    map[string]ackRec
	rawAcks   map[string]rawAck
	errCodes  map[string]int
	dialFails map[string]int
	dupAcks   int
	syncs     int // sync frames the SDK wrote: it saw a gap
	faultAt   time.Time
	problems  []string
	nProblems int
	// known, when set, names a known server bug an error answer shows
	// ("" when it shows none); such answers are counted, not failed.
	known       func(r *sendRec, code string) string
	knownIssues map[string]int
	offline     map[int64][]time.Time // when presence frames with online:false arrived, per user
}

// newLoad registers four users (plus observers), makes the chats, and
// connects every device through the cluster's proxy.
func newLoad(t *testing.T, c *testkit.Cluster, o loadOptions) *load {
	t.Helper()
	if o.interval == 0 {
		o.interval = 100 * time.Millisecond
	}
	if o.window == 0 {
		o.window = 4
	}
	l := &load{
		t: t, c: c, hc: specHTTP(t), spec: spec(t), run: testkit.RandomHex(4), interval: o.interval, window: o.window,
		sent: map[string]*sendRec{}, acked: map[string]ackRec{}, failed: map[string]ackRec{}, rawAcks: map[string]rawAck{},
		errCodes: map[string]int{}, dialFails: map[string]int{},
		knownIssues: map[string]int{}, offline: map[int64][]time.Time{},
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	t.Cleanup(l.close)
	for i := range 4 {
		l.users = append(l.users, l.register(t, fmt.Sprintf("User%d", i)))
	}
	var obsUsers []*user
	for i := range o.observers {
		obsUsers = append(obsUsers, l.register(t, fmt.Sprintf("Observer%d", i)))
	}
	var members []int64
	for _, u := range append(l.users[1:], obsUsers...) {
		members = append(members, u.ID)
	}
	l.group = createGroup(t, l.users[0], "faults "+l.run, members...)
	l.private = privateChat(t, l.users[0], l.users[1])

	// Two devices per user: one on /ws (every chat of the user), one on
	// /ws/{chat_id}.
	g, p := l.group, l.private
	layout := []struct {
		user   int
		chatID int64
		chats  []int64
	}{
		{0, 0, []int64{g, p}}, {0, g, []int64{g}},
		{1, 0, []int64{g, p}}, {1, p, []int64{p}},
		{2, 0, []int64{g}}, {2, g, []int64{g}},
		{3, g, []int64{g}}, {3, g, []int64{g}},
	}
	for i, d := range layout {
		kind := "ws"
		if d.chatID != 0 {
			kind = fmt.Sprintf("c%d", d.chatID)
		}
		l.devices = append(l.devices, newDevice(l, i, fmt.Sprintf("u%d-%s-%d", d.user, kind, i), l.users[d.user], d.chatID, d.chats))
	}
	for i, u := range obsUsers {
		l.obs = append(l.obs, &observer{name: fmt.Sprintf("observer%d", i), u: u})
	}
	ctx, cancel := context.WithTimeout(l.ctx, 20*time.Second)
	defer cancel()
	errs := make([]error, len(l.devices))
	var wg sync.WaitGroup
	for i, d := range l.devices {
		wg.Go(func() { errs[i] = d.dial(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.waitConnected(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	return l
}

// register registers a user through the proxy.
func (l *load) register(t *testing.T, name string) *user {
	t.Helper()
	return register(t, l.hc, l.c.URL, name)
}

// clientAt is a Client of one replica (or any base URL) with u's token.
func (l *load) clientAt(t *testing.T, base string, u *user) *client.Client {
	t.Helper()
	return newClient(t, l.hc, base, u.Token)
}

func (l *load) waitConnected(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var missing []*device
		for _, dev := range l.devices {
			if _, ready := dev.currentReplica(); !ready {
				missing = append(missing, dev)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devices not connected within %s: %s", d, joinNames(missing))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// on lists the tracked devices connected to replica now.
func (l *load) on(replica string) []*device {
	var out []*device
	for _, d := range l.devices {
		if r, ready := d.currentReplica(); ready && r == replica {
			out = append(out, d)
		}
	}
	return out
}

// spread makes sure at least n devices are on every replica, moving
// devices (Conn.Reconnect: a new connection through the proxy) until they
// are. Only before the load starts.
func (l *load) spread(t *testing.T, n int) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		short := ""
		for _, r := range l.c.Replicas {
			if len(l.on(r.Name())) < n {
				short = r.Name()
				break
			}
		}
		if short == "" {
			return
		}
		if attempt >= 60 {
			t.Fatalf("could not get %d devices onto replica %s through the proxy in %d moves", n, short, attempt)
		}
		// Move a device from the most crowded replica.
		var from []*device
		for _, r := range l.c.Replicas {
			if ds := l.on(r.Name()); len(ds) > len(from) {
				from = ds
			}
		}
		if err := from[attempt%len(from)].move(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := l.waitConnected(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// pinObservers connects each observer through the proxy, redialing until
// it lands on r. Observers never reconnect.
func (l *load) pinObservers(t *testing.T, r *testkit.Replica) {
	t.Helper()
	for _, o := range l.obs {
		pinned := false
		for attempt := 0; attempt < 40 && !pinned; attempt++ {
			ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
			sock, resp, err := o.u.c.DialSocket(ctx, fmt.Sprintf("/ws/%d", l.group), client.SocketOptions{Trace: func(out bool, data []byte) {
				if !out {
					if err := l.spec.CheckServerFrame(data); err != nil {
						l.problem("%s: %v", o.name, err)
					}
				}
			}})
			cancel()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if resp.Header.Get("X-Windi-Replica") != r.Name() {
				_ = sock.Close(1000, "wrong replica")
				continue
			}
			o.sock = sock
			l.obsWG.Go(func() {
				for {
					if f, err := sock.Read(context.Background()); err != nil && f.Raw == nil {
						return
					}
				}
			})
			pinned = true
		}
		if !pinned {
			t.Fatalf("%s: no connection through the proxy landed on %s in 40 dials", o.name, r.Name())
		}
	}
}

// start starts every device sending.
func (l *load) start() {
	l.started = time.Now()
	l.sending.Store(true)
	for _, d := range l.devices {
		l.sendWG.Add(1)
		go d.sender()
	}
}

func (l *load) stopSending() {
	l.sending.Store(false)
	l.sendWG.Wait()
}

// markFault starts a recovery measurement: a device has recovered once its
// application sees a message first sent after this moment.
func (l *load) markFault() time.Time {
	now := time.Now()
	l.mu.Lock()
	l.faultAt = now
	l.mu.Unlock()
	for _, d := range l.devices {
		d.mu.Lock()
		d.recoveredAt = time.Time{}
		d.mu.Unlock()
	}
	return now
}

func (l *load) sentAfterFault(cmid string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.sent[cmid]
	return r != nil && !l.faultAt.IsZero() && r.first.After(l.faultAt)
}

// waitRecovered waits until every device has received a message first
// sent after the fault; it returns the time from the fault to the last of
// them.
func (l *load) waitRecovered(d time.Duration) (time.Duration, error) {
	l.mu.Lock()
	fault := l.faultAt
	l.mu.Unlock()
	for {
		var last time.Time
		var waiting []*device
		for _, dev := range l.devices {
			dev.mu.Lock()
			at := dev.recoveredAt
			dev.mu.Unlock()
			if at.IsZero() {
				waiting = append(waiting, dev)
			} else if at.After(last) {
				last = at
			}
		}
		if len(waiting) == 0 {
			return last.Sub(fault), nil
		}
		if time.Since(fault) > d {
			return time.Since(fault), fmt.Errorf("not recovered %s after the fault: %s got no message sent since", d, joinNames(waiting))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *load) recordSent(r *sendRec) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sent[r.cmid]; !ok {
		l.sent[r.cmid] = r
	}
}

// recordAck takes the ack a send of d resolved with: it must carry what
// was first sent under its client_msg_id, and agree with any earlier ack
// of it.
func (l *load) recordAck(d *device, ack rest.MessageAckFrame) ackRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, cmid := ack.Message, ack.ClientMsgID
	a := ackRec{chat: m.ChatID, seq: m.Seq, id: m.ID, dup: ack.Duplicate, at: time.Now(), dev: d}
	r := l.sent[cmid]
	if r == nil {
		l.problemLocked("%s: ack for %q, which no device sent", d.name, cmid)
		return a
	}
	if m.ChatID != r.chat || m.ClientMsgID != cmid || m.Text != r.text {
		l.problemLocked("%s: ack for %q carries chat %d, client_msg_id %q, text %q; sent to chat %d with text %q", d.name, cmid, m.ChatID, m.ClientMsgID, m.Text, r.chat, r.text)
	}
	if prev, ok := l.acked[cmid]; ok {
		if prev.seq != a.seq || prev.id != a.id {
			l.problemLocked("%s: %q acked as seq %d (id %d), earlier as seq %d (id %d)", d.name, cmid, a.seq, a.id, prev.seq, prev.id)
		}
		if !a.dup {
			l.problemLocked("%s: %q acked as new (duplicate:false) a second time", d.name, cmid)
		}
	} else {
		l.acked[cmid] = a
	}
	return a
}

// rawAck takes an ack frame as the server sent it (the Conn answers a
// Pending with one of them): every ack of a client_msg_id names the same
// message, and at most one says duplicate:false.
func (l *load) rawAck(d *device, cmid string, m rest.Message, dup bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if dup {
		l.dupAcks++
	}
	prev, ok := l.rawAcks[cmid]
	if ok && (prev.seq != m.Seq || prev.id != m.ID) {
		l.problemLocked("%s: the server acked %q as seq %d (id %d), earlier as seq %d (id %d)", d.name, cmid, m.Seq, m.ID, prev.seq, prev.id)
	}
	if !ok {
		prev = rawAck{seq: m.Seq, id: m.ID}
	}
	if !dup {
		prev.fresh++
		if prev.fresh == 2 {
			l.problemLocked("%s: the server acked %q as new (duplicate:false) a second time", d.name, cmid)
		}
	}
	l.rawAcks[cmid] = prev
}

func (l *load) recordFailed(r *sendRec, code string) ackRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := ackRec{chat: r.chat, code: code, at: time.Now(), dev: r.dev}
	l.failed[r.cmid] = a
	if code != "unavailable" {
		if issue := l.knownIssue(r, code); issue != "" {
			l.knownIssues[issue]++
		} else {
			l.problemLocked("%s: send %q answered with error %q", r.dev.name, r.cmid, code)
		}
	}
	return a
}

func (l *load) knownIssue(r *sendRec, code string) string {
	if l.known == nil {
		return ""
	}
	return l.known(r, code)
}

func (l *load) recordPresence(userID int64, online bool) {
	if online {
		return
	}
	l.mu.Lock()
	l.offline[userID] = append(l.offline[userID], time.Now())
	l.mu.Unlock()
}

func (l *load) countError(code string) {
	l.mu.Lock()
	l.errCodes[code]++
	l.mu.Unlock()
}

func (l *load) countSync() {
	l.mu.Lock()
	l.syncs++
	l.mu.Unlock()
}

func (l *load) dialFailed(status string) {
	l.mu.Lock()
	l.dialFails[status]++
	l.mu.Unlock()
}

func (l *load) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problemLocked(format, args...)
}

func (l *load) problemLocked(format string, args ...any) {
	l.nProblems++
	if len(l.problems) < 100 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// drain stops sending and waits until every send is answered and every
// device has received everything acknowledged.
func (l *load) drain(d time.Duration) error {
	l.stopSending()
	deadline := time.Now().Add(d)
	for {
		why := l.unsettled()
		if why == "" {
			time.Sleep(500 * time.Millisecond) // anything more would be a repeat
			if why = l.unsettled(); why == "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not settled %s after the load stopped: %s", d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unsettled says what is still outstanding ("" when nothing is).
func (l *load) unsettled() string {
	top := map[int64]int64{}
	l.mu.Lock()
	for _, a := range l.acked {
		top[a.chat] = max(top[a.chat], a.seq)
	}
	l.mu.Unlock()
	var why []string
	for _, d := range l.devices {
		d.mu.Lock()
		switch {
		case !d.connected:
			why = append(why, d.name+" not connected")
		case len(d.outstanding) > 0:
			why = append(why, fmt.Sprintf("%s has %d sends unanswered", d.name, len(d.outstanding)))
		default:
			for c, s := range d.seen {
				if s.last < top[c] {
					why = append(why, fmt.Sprintf("%s is at seq %d of chat %d, acked up to %d", d.name, s.last, c, top[c]))
				}
			}
		}
		d.mu.Unlock()
	}
	return strings.Join(why, "; ")
}

// ending is how a scenario ends, once its fault is over.
type ending struct {
	// recoverWithin, when set, is how long the devices may take to
	// recover from the fault (markFault): each to see a message first sent
	// after it.
	recoverWithin time.Duration
	// sendUntil is when the load stops sending (at once if it has passed).
	sendUntil time.Time
	// beforeClose, when set, runs after the verification while the
	// devices are still connected.
	beforeClose func()
}

// finish ends a scenario the way every one does: it waits for the
// recovery, lets the load run on until e.sendUntil, drains it (every send
// answered, every device caught up), verifies what was sent, acked and
// received against history, and closes the load. Waits that time out
// fail the test; it returns what verify found and the recovery time.
func (l *load) finish(t *testing.T, e ending) (result, time.Duration) {
	t.Helper()
	var recovery time.Duration
	if e.recoverWithin > 0 {
		var err error
		if recovery, err = l.waitRecovered(e.recoverWithin); err != nil {
			t.Error(err)
		}
	}
	sleepUntil(e.sendUntil)
	if err := l.drain(30 * time.Second); err != nil {
		t.Error(err)
	}
	res := l.verify(t)
	if e.beforeClose != nil {
		e.beforeClose()
	}
	l.close()
	return res, recovery
}

// close stops everything the load started.
func (l *load) close() {
	l.stopOnce.Do(func() {
		l.stopSending()
		var wg sync.WaitGroup
		for _, d := range l.devices {
			wg.Go(d.stop)
		}
		for _, o := range l.obs {
			if o.sock != nil {
				wg.Go(func() { _ = o.sock.Close(1000, "test over") })
			}
		}
		wg.Wait()
		l.cancel()
		done := make(chan struct{})
		go func() {
			l.waiting.Wait()
			l.obsWG.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			l.t.Errorf("sends or observers still running 10 s after the load closed")
		}
	})
}

// result is what verify found.
type result struct {
	sent, acked, failed, dupAcks int
	unanswered                   int
	historyLen                   map[int64]int
	delivered, expected          int // messages the applications saw; members × messages
	lost                         int // acked messages missing from history, plus deliveries that never came
	// repeated, outOfOrder and gaps count both views: what the server
	// sent (a repeat the Conn dropped, a seq sent out of order) and what
	// the applications saw.
	repeated, outOfOrder, gaps int
	unacked                    int // stored without an ack
	reconnects                 int
	maxAway                    time.Duration
	replayed                   int // frames the server sent again, by right, after a resume or the SDK's sync
	syncs                      int // sync frames the SDK wrote (it saw a gap)
	problems                   []string
	nProblems                  int
	errCodes                   map[string]int
	dialFails                  map[string]int
	knownIssues                map[string]int
}

// verify compares what was acknowledged and received with history: every
// acked message is in history exactly once at the seq it was acked with,
// seqs have no gaps, nothing is stored that was not acked (or that was
// refused), every device's application saw every message of its chats
// exactly once and in seq order, and the server sent each device none
// twice (bar what a resume asked for again) and none out of order.
func (l *load) verify(t *testing.T) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := result{historyLen: map[int64]int{}}
	add := func(format string, args ...any) {
		res.nProblems++
		if len(res.problems) < 60 {
			res.problems = append(res.problems, fmt.Sprintf(format, args...))
		}
	}
	hist := map[int64][]rest.Message{}
	for _, c := range []int64{l.group, l.private} {
		h, err := history(ctx, l.users[0].c, c)
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		hist[c] = h
		res.historyLen[c] = len(h)
	}

	l.mu.Lock()
	stored := map[string]rest.Message{}
	for c, h := range hist {
		for i, m := range h {
			if m.Seq != int64(i+1) {
				add("history of chat %d: message %d has seq %d (a gap or a repeat)", c, i+1, m.Seq)
			}
			if prev, ok := stored[m.ClientMsgID]; ok {
				add("history: %q stored twice (seq %d and %d)", m.ClientMsgID, prev.Seq, m.Seq)
			}
			stored[m.ClientMsgID] = m
			r := l.sent[m.ClientMsgID]
			a, acked := l.acked[m.ClientMsgID]
			f, failed := l.failed[m.ClientMsgID]
			switch {
			case r == nil:
				add("history of chat %d: seq %d %q was never sent", c, m.Seq, m.ClientMsgID)
			case r.chat != c || r.text != m.Text || r.dev.u.ID != m.SenderID:
				add("history of chat %d: seq %d %q has sender %d text %q, sent by %d to chat %d as %q", c, m.Seq, m.ClientMsgID, m.SenderID, m.Text, r.dev.u.ID, r.chat, r.text)
			case failed:
				add("history of chat %d: seq %d %q is stored, but its send got error %q", c, m.Seq, m.ClientMsgID, f.code)
				res.unacked++
			case !acked:
				add("history of chat %d: seq %d %q is stored but was never acked", c, m.Seq, m.ClientMsgID)
				res.unacked++
			case a.seq != m.Seq || a.id != m.ID:
				add("history of chat %d: %q is seq %d id %d, acked as seq %d id %d", c, m.ClientMsgID, m.Seq, m.ID, a.seq, a.id)
			}
		}
	}
	for cmid, a := range l.acked {
		if _, ok := stored[cmid]; !ok {
			res.lost++
			add("%q acked as seq %d of chat %d but not in history", cmid, a.seq, a.chat)
		}
	}
	res.sent, res.acked, res.failed, res.dupAcks, res.syncs = len(l.sent), len(l.acked), len(l.failed), l.dupAcks, l.syncs
	res.problems = append(res.problems, l.problems...)
	res.nProblems += l.nProblems
	res.errCodes, res.dialFails, res.knownIssues = l.errCodes, l.dialFails, l.knownIssues
	l.mu.Unlock()

	for _, d := range l.devices {
		d.mu.Lock()
		res.unanswered += len(d.outstanding)
		for cmid := range d.outstanding {
			add("%s: send %q never answered", d.name, cmid)
		}
		res.reconnects += d.reconnects
		res.maxAway = max(res.maxAway, d.maxAway)
		chats := make([]int64, 0, len(d.seen))
		for c := range d.seen {
			chats = append(chats, c)
		}
		sort.Slice(chats, func(i, j int) bool { return chats[i] < chats[j] })
		for _, c := range chats {
			s, r, h := d.seen[c], d.raw[c], hist[c]
			res.expected += len(h)
			res.repeated += s.repeats + r.repeats
			res.outOfOrder += s.outOfOrder + r.outOfOrder
			res.gaps += s.gaps + r.gaps
			res.replayed += r.replayed
			missing := 0
			for seq, n := range s.got {
				res.delivered += n
				if seq > int64(len(h)) {
					add("%s: saw seq %d of chat %d, which history does not have", d.name, seq, c)
				}
			}
			for i, m := range h {
				seq := int64(i + 1)
				if s.got[seq] == 0 {
					missing++
					continue
				}
				if s.cmid[seq] != m.ClientMsgID {
					add("%s: seq %d of chat %d seen as %q, history has %q", d.name, seq, c, s.cmid[seq], m.ClientMsgID)
				}
			}
			if missing > 0 {
				res.lost += missing
				add("%s: %d of the %d messages of chat %d never seen (highest seq seen %d)", d.name, missing, len(h), c, s.last)
			}
		}
		d.mu.Unlock()
	}
	return res
}

// check fails the test on any problem verify found.
func (res result) check(t *testing.T) {
	t.Helper()
	if res.nProblems == 0 && res.lost == 0 && res.repeated == 0 && res.unanswered == 0 && res.delivered == res.expected {
		return
	}
	t.Errorf("%d problems (first %d):\n  %s", res.nProblems, len(res.problems), strings.Join(res.problems, "\n  "))
	if res.delivered != res.expected {
		t.Errorf("delivered %d messages, want %d (every device × every message of its chats)", res.delivered, res.expected)
	}
}

// summary is the common part of a scenario's one-line report.
func (res result) summary() string {
	total := 0
	for _, n := range res.historyLen {
		total += n
	}
	s := fmt.Sprintf("acked %d of %d sent (%d duplicate acks, %d refused), history %d, delivered %d/%d, lost %d, repeated %d, out of order %d, stored unacked %d, reconnects %d (longest away %s)",
		res.acked, res.sent, res.dupAcks, res.failed, total, res.delivered, res.expected, res.lost, res.repeated, res.outOfOrder+res.gaps, res.unacked, res.reconnects, res.maxAway.Round(time.Millisecond))
	if len(res.errCodes) > 0 {
		s += ", error frames " + fmtCounts(res.errCodes)
	}
	if len(res.dialFails) > 0 {
		s += ", failed dials " + fmtCounts(res.dialFails)
	}
	if res.syncs > 0 || res.replayed > 0 {
		s += fmt.Sprintf(", SDK syncs %d, frames sent again after a resume or sync %d (dropped by the SDK)", res.syncs, res.replayed)
	}
	for issue, n := range res.knownIssues {
		s += fmt.Sprintf(", KNOWN SERVER BUG seen %d times: %s", n, issue)
	}
	return s
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
