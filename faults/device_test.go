package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// frame is one frame, decoded loosely: the fields the tests count by.
// Message is the Message of message.new and message.ack (and the text of
// an error).
type frame struct {
	Type        string          `json:"type"`
	ChatID      int64           `json:"chat_id"`
	Code        string          `json:"code"`
	ClientMsgID string          `json:"client_msg_id"`
	Duplicate   bool            `json:"duplicate"`
	Message     json.RawMessage `json:"message"`
}

// stream is what the application of one device saw of one chat across all
// of its connections (OnMessage), counted per seq.
type stream struct {
	last       int64            // highest seq seen
	got        map[int64]int    // how often each seq was seen
	cmid       map[int64]string // the client_msg_id it came with
	repeats    int              // a seq seen before
	outOfOrder int              // a seq below the highest, first time
	gaps       int              // a jump over seqs not seen yet
}

// rawStream is what the server sent one device of one chat: the frames of
// the seq stream (message.new, and message.ack for its own first sends),
// as Config.Trace saw them before the Conn dropped repeats.
type rawStream struct {
	last       int64 // highest seq received since the connection (or the SDK's sync) began
	got        map[int64]int
	repeats    int // a seq the application had already: the server sent it twice
	replayed   int // a seq the Conn had held back above a gap, sent again after a resume or sync
	outOfOrder int
	gaps       int
}

// sendRec is one message a device sends.
type sendRec struct {
	cmid  string
	chat  int64
	text  string
	dev   *device
	first time.Time // when the application sent it
}

// closeRec is how one connection of a device ended.
type closeRec struct {
	replica string
	code    int // WebSocket close code; -1 when no close frame came (connection lost)
	at      time.Time
}

// device is one connection slot of a user: a client.Conn through the
// proxy, on /ws (every chat of the user) or /ws/{chat_id}, which
// reconnects, resumes (since_rev) and sends again what was not acked with
// the same client_msg_id, by itself. The test keeps two views of it. What
// the application sees: OnMessage, and the outcome of each send. And what
// the server sent, from the raw frames (Config.Trace): the Conn drops
// repeats, so a server that delivered a message twice would go unseen in
// the first.
type device struct {
	l      *load
	idx    int
	name   string
	u      *user
	chatID int64   // /ws/{chat_id}; 0 for /ws
	chats  []int64 // chats it follows, and sends to in turn
	conn   *client.Conn

	mu          sync.Mutex // guards the fields below
	replica     string     // X-Windi-Replica of the current (or last) connection
	opened      int        // connections opened
	connected   bool
	seen        map[int64]*stream
	raw         map[int64]*rawStream
	outstanding map[string]*sendRec // sent, not answered yet
	mine        map[string]bool     // every client_msg_id it sent
	sends       int
	closes      []closeRec
	reconnects  int
	droppedAt   time.Time
	maxAway     time.Duration // longest time between a drop and the next connection
	recoveredAt time.Time
}

func (d *device) String() string { return d.name }

func newDevice(l *load, idx int, name string, u *user, chatID int64, chats []int64) *device {
	d := &device{
		l: l, idx: idx, name: name, u: u, chatID: chatID, chats: chats,
		seen: map[int64]*stream{}, raw: map[int64]*rawStream{},
		outstanding: map[string]*sendRec{}, mine: map[string]bool{},
	}
	for _, c := range chats {
		d.seen[c] = &stream{got: map[int64]int{}, cmid: map[int64]string{}}
		d.raw[c] = &rawStream{got: map[int64]int{}}
	}
	return d
}

// dial starts the device's Conn through the proxy and waits for its first
// connection.
func (d *device) dial(ctx context.Context) error {
	conn, err := d.u.c.Dial(ctx, client.Config{
		ChatID:    d.chatID,
		OnMessage: d.onMessage,
		OnUpdate: func(m rest.Message) {
			d.l.problem("%s: chat %d seq %d updated, but nothing changes messages here", d.name, m.ChatID, m.Seq)
		},
		OnError:   func(e *client.FrameError) { d.l.problem("%s: unexpected error frame: %v", d.name, e) },
		OnFrame:   d.onFrame,
		OnState:   d.onState,
		OnConnect: d.onConnect,
		OnClose: func(err error) {
			if !errors.Is(err, client.ErrClosed) {
				d.l.problem("%s: the Conn ended: %v", d.name, err)
			}
		},
		Trace: d.trace,
		// Back as fast as a device of the old harness (50 ms doubling to
		// 1 s, jittered), so recovery times stay comparable.
		Backoff: client.ExponentialBackoff(100*time.Millisecond, 2*time.Second),
		// A refused send is the test's to see: unavailable must not be
		// stored, and must not be retried into an ack (rate_limited is
		// sent again by settle).
		SendRetries: -1,
	})
	if err != nil {
		return fmt.Errorf("%s: dial: %w", d.name, err)
	}
	d.conn = conn
	return nil
}

// onConnect notes the replica of a new connection. It resumes every chat
// from what the application has: what the server sends from here on is
// new to it.
func (d *device) onConnect(resp *http.Response) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replica = resp.Header.Get("X-Windi-Replica")
	d.opened++
	for c := range d.raw {
		d.resumedLocked(c)
	}
}

func (d *device) resumedLocked(chat int64) {
	if r, s := d.raw[chat], d.seen[chat]; r != nil && s != nil {
		r.last = s.last
	}
}

// onState follows the connection: a reconnect and the time away, how a
// connection ended and on which replica, handshakes that failed.
func (d *device) onState(s client.State, err error) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case client.Connected:
		d.connected = true
		if d.opened > 1 {
			d.reconnects++
			d.maxAway = max(d.maxAway, now.Sub(d.droppedAt))
		}
	case client.Disconnected:
		if !d.connected {
			status := "no response"
			if code := client.StatusOf(err); code != 0 {
				status = fmt.Sprint(code)
			}
			d.l.dialFailed(status)
			return
		}
		d.connected, d.droppedAt = false, now
		d.closes = append(d.closes, closeRec{replica: d.replica, code: client.CloseStatus(err), at: now})
	}
}

// onMessage counts what the application sees: every message of its
// chats, once, in seq order.
func (d *device) onMessage(m rest.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.seen[m.ChatID]
	if s == nil {
		d.l.problem("%s: the application got seq %d of chat %d, which it does not follow", d.name, m.Seq, m.ChatID)
		return
	}
	switch seq := m.Seq; {
	case s.got[seq] > 0:
		s.repeats++
		d.l.problem("%s: the application saw chat %d seq %d again (highest so far %d)", d.name, m.ChatID, seq, s.last)
	case seq <= s.last:
		s.outOfOrder++
		d.l.problem("%s: the application saw chat %d seq %d after seq %d", d.name, m.ChatID, seq, s.last)
	case seq > s.last+1:
		s.gaps++
		d.l.problem("%s: the application jumped in chat %d from seq %d to %d", d.name, m.ChatID, s.last, seq)
	}
	s.got[m.Seq]++
	if s.cmid[m.Seq] == "" {
		s.cmid[m.Seq] = m.ClientMsgID
	} else if s.cmid[m.Seq] != m.ClientMsgID {
		d.l.problem("%s: chat %d seq %d seen as %q and as %q", d.name, m.ChatID, m.Seq, s.cmid[m.Seq], m.ClientMsgID)
	}
	s.last = max(s.last, m.Seq)
	if d.recoveredAt.IsZero() && d.l.sentAfterFault(m.ClientMsgID) {
		d.recoveredAt = time.Now()
	}
}

func (d *device) onFrame(f client.Frame) {
	if p, ok := f.Value.(rest.PresenceFrame); ok {
		d.l.recordPresence(p.UserID, p.Online)
	}
}

// trace sees every frame the Conn reads and writes, on its goroutine,
// before what the frame causes. Every frame must be a ServerFrame or
// ClientFrame of api/openapi.yaml, faults or not. The seq stream the
// server sent is counted here, repeats included.
func (d *device) trace(out bool, data []byte) {
	check := d.l.spec.CheckServerFrame
	if out {
		check = d.l.spec.CheckClientFrame
	}
	if err := check(data); err != nil {
		d.l.problem("%s: %v", d.name, err)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		d.l.problem("%s: undecodable frame %.300s", d.name, data)
		return
	}
	if out {
		if f.Type == "sync" {
			// The Conn saw a gap and asks for a replay from where the
			// application is.
			d.l.countSync()
			d.mu.Lock()
			d.resumedLocked(f.ChatID)
			d.mu.Unlock()
		}
		return
	}
	switch f.Type {
	case "message.new", "message.ack":
		var m rest.Message
		if err := json.Unmarshal(f.Message, &m); err != nil || m.Seq < 1 {
			d.l.problem("%s: bad message in %.300s", d.name, data)
			return
		}
		if f.Type == "message.ack" {
			d.mu.Lock()
			mine := d.mine[f.ClientMsgID]
			d.mu.Unlock()
			if !mine {
				d.l.problem("%s: ack for %q, which it never sent", d.name, f.ClientMsgID)
			}
			d.l.rawAck(d, f.ClientMsgID, m, f.Duplicate)
			if f.Duplicate {
				return // a repeat's answer, outside the seq stream
			}
		}
		d.rawDeliver(m.ChatID, m.Seq)
	case "error":
		if f.ClientMsgID != "" {
			d.l.countError(f.Code)
		}
	}
}

// rawDeliver counts one frame of a chat's seq stream as the server sent
// it. The Conn resumes every chat from what the application has (and
// holds back messages above a gap): a seq the application has already
// is a repeat of the server's, one it holds back comes again by right.
func (d *device) rawDeliver(chat, seq int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, s := d.raw[chat], d.seen[chat]
	if r == nil {
		d.l.problem("%s: the server sent seq %d of chat %d, which it does not follow", d.name, seq, chat)
		return
	}
	switch {
	case seq <= s.last:
		r.repeats++
		d.l.problem("%s: the server sent chat %d seq %d again (the application has up to %d)", d.name, chat, seq, s.last)
	case r.got[seq] > 0:
		r.replayed++
	case seq < r.last:
		r.outOfOrder++
		d.l.problem("%s: the server sent chat %d seq %d after seq %d", d.name, chat, seq, r.last)
	case seq > r.last+1:
		r.gaps++
		d.l.problem("%s: the server jumped in chat %d from seq %d to %d", d.name, chat, r.last, seq)
	}
	r.got[seq]++
	r.last = max(r.last, seq)
}

func (d *device) newSendLocked(cmid string, chat int64) *sendRec {
	d.sends++
	r := &sendRec{cmid: cmid, chat: chat, dev: d, first: time.Now(),
		text: fmt.Sprintf("message %d of %s (%s)", d.sends, d.name, cmid)}
	d.outstanding[cmid] = r
	d.mine[cmid] = true
	d.l.recordSent(r)
	return r
}

// settle sends r and waits for its outcome, which it records: the ack, or
// the error frame the server answered (rate_limited: sent again after a
// pause, on whatever connection the Conn has then). It reports false when
// no answer came (the Conn ended, or ctx did): r stays outstanding.
func (d *device) settle(ctx context.Context, r *sendRec) (ackRec, bool) {
	for {
		p, err := d.conn.SendWithID(r.chat, r.cmid, r.text)
		if err != nil {
			if !errors.Is(err, client.ErrClosed) {
				d.l.problem("%s: send %q: %v", d.name, r.cmid, err)
			}
			return ackRec{}, false
		}
		ack, err := p.Wait(ctx)
		var fe *client.FrameError
		var a ackRec
		switch {
		case err == nil:
			a = d.l.recordAck(d, ack)
		case errors.As(err, &fe) && fe.Code == rest.ErrorFrameCodeRateLimited:
			select {
			case <-time.After(500 * time.Millisecond):
				continue
			case <-ctx.Done():
				return ackRec{}, false
			}
		case errors.As(err, &fe):
			a = d.l.recordFailed(r, string(fe.Code))
		default:
			return ackRec{}, false
		}
		d.mu.Lock()
		delete(d.outstanding, r.cmid)
		d.mu.Unlock()
		return a, true
	}
}

// sender sends a new message every interval while the load runs and the
// device is connected, keeping at most window unanswered.
func (d *device) sender() {
	defer d.l.sendWG.Done()
	l := d.l
	time.Sleep(time.Duration(d.idx) * l.interval / time.Duration(max(1, len(l.devices))))
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for l.sending.Load() {
		select {
		case <-tick.C:
		case <-l.ctx.Done():
			return
		}
		d.mu.Lock()
		if !d.connected || len(d.outstanding) >= l.window || !l.sending.Load() {
			d.mu.Unlock()
			continue
		}
		r := d.newSendLocked(fmt.Sprintf("%s-%s-%d", l.run, d.name, d.sends+1), d.chats[d.sends%len(d.chats)])
		d.mu.Unlock()
		l.waiting.Go(func() { d.settle(l.ctx, r) })
	}
}

// sendAndWait sends cmid to chat once connected and waits for its answer
// (ack or error), at most 15 s; a later answer is still recorded.
func (d *device) sendAndWait(cmid string, chat int64) (ackRec, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, ready := d.currentReplica(); ready {
			break
		}
		if time.Now().After(deadline) {
			return ackRec{}, fmt.Errorf("%s: not connected", d.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.mu.Lock()
	r := d.newSendLocked(cmid, chat)
	d.mu.Unlock()
	answer := make(chan ackRec, 1)
	d.l.waiting.Go(func() {
		if a, ok := d.settle(d.l.ctx, r); ok {
			answer <- a
		}
	})
	select {
	case a := <-answer:
		return a, nil
	case <-time.After(time.Until(deadline)):
		return ackRec{}, fmt.Errorf("%s: no answer to %s within 15 s", d.name, cmid)
	}
}

// move makes the Conn reconnect (through the proxy, so perhaps to another
// replica) and waits until the new connection is up.
func (d *device) move(within time.Duration) error {
	d.mu.Lock()
	before := d.opened
	d.mu.Unlock()
	d.conn.Reconnect()
	deadline := time.Now().Add(within)
	for {
		d.mu.Lock()
		moved := d.opened > before && d.connected
		d.mu.Unlock()
		if moved {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not connected again within %s of Reconnect", d.name, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// currentReplica is the replica of the device's connection, and whether
// it is connected.
func (d *device) currentReplica() (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replica, d.connected
}

// stop closes the Conn for good.
func (d *device) stop() {
	if d.conn != nil {
		_ = d.conn.Close()
	}
}

// closesOn lists how the device's connections to replica ended, since.
func (d *device) closesOn(replica string, since time.Time) []closeRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []closeRec
	for _, c := range d.closes {
		if c.replica == replica && !c.at.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

func joinNames(ds []*device) string {
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.name
	}
	return strings.Join(names, ", ")
}

// observer is a raw WebSocket (client.Socket, no reconnect) of a group
// member that only holds a connection: for presence checks. Every frame
// it reads must be in the spec.
type observer struct {
	name string
	u    *user
	sock *client.Socket
}
