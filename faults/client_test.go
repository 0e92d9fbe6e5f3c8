package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// frame is one server frame, decoded loosely. Message is the Message of
// message.new and message.ack (and the text of an error).
type frame struct {
	Type        string          `json:"type"`
	ChatID      int64           `json:"chat_id"`
	Code        string          `json:"code"`
	ClientMsgID string          `json:"client_msg_id"`
	Duplicate   bool            `json:"duplicate"`
	Message     json.RawMessage `json:"message"`
	UserID      int64           `json:"user_id"`
	Online      bool            `json:"online"`
}

// stream is what one device received of one chat, across all of its
// connections: the frames of the seq stream (message.new, and message.ack
// for its own first sends) counted per seq.
type stream struct {
	last       int64            // highest seq received
	got        map[int64]int    // how often each seq arrived
	cmid       map[int64]string // the client_msg_id that arrived with it
	repeats    int              // a seq that had arrived before
	outOfOrder int              // a seq below the highest, first time
	gaps       int              // a jump over seqs not received yet
}

// sendRec is one message a device sends (and resends until answered).
type sendRec struct {
	cmid  string
	chat  int64
	text  string
	dev   *device
	n     int       // the device's send counter, for resend order
	first time.Time // first attempt
}

// closeRec is how one connection of a device ended.
type closeRec struct {
	replica string
	code    int // WebSocket close code; -1 when no close frame came (connection lost)
	at      time.Time
}

type bufFrame struct {
	chat, seq int64
	cmid      string
}

// markerBase numbers the chats (that do not exist) whose sync frames mark
// where a /ws connection's resync ends: the server answers them with an
// error frame after it has queued the replay of the real sync frames sent
// before (one connection's frames are handled in order).
const markerBase = 4_000_000_000_000_000

// device is one client connection slot of a user, kept open across
// failures: when its connection drops it reconnects through the proxy and
// resumes where it was (since_seq on /ws/{chat_id}, a sync frame per chat
// on /ws), then resends what was not answered, with the same
// client_msg_id.
type device struct {
	l      *load
	idx    int
	name   string
	u      *user
	chatID int64   // /ws/{chat_id}; 0 for /ws (all chats)
	chats  []int64 // chats it follows, and sends to in turn
	track  bool    // counts and checks deliveries; observers only read
	redial bool    // reconnects after a drop

	mu          sync.Mutex // guards the fields below
	conn        *websocket.Conn
	gen         int  // connections so far
	connected   bool // a connection is open
	ready       bool // ... and resynced: sends may go out
	closing     bool // the test is ending: no more reconnects
	replica     string
	streams     map[int64]*stream
	pending     map[string]*sendRec // sent, not answered yet
	sends       int
	closes      []closeRec
	reconnects  int
	droppedAt   time.Time
	maxAway     time.Duration // longest time between a drop and the next connection
	buffering   bool          // a /ws resync is in progress
	marker      int64
	syncFailed  bool
	buf         []bufFrame
	preSync     int // frames a /ws connection sent before its resync took effect
	recoveredAt time.Time
}

func (d *device) String() string { return d.name }

func newDevice(l *load, idx int, name string, u *user, chatID int64, chats []int64, track bool) *device {
	d := &device{
		l: l, idx: idx, name: name, u: u, chatID: chatID, chats: chats, track: track, redial: track,
		streams: map[int64]*stream{}, pending: map[string]*sendRec{},
	}
	for _, c := range chats {
		d.streams[c] = &stream{got: map[int64]int{}, cmid: map[int64]string{}}
	}
	return d
}

// path is the WebSocket path of the next connection.
func (d *device) path() string {
	if d.chatID == 0 {
		return "/ws"
	}
	if !d.track {
		return fmt.Sprintf("/ws/%d", d.chatID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf("/ws/%d?since_seq=%d", d.chatID, d.streams[d.chatID].last)
}

// dial opens a connection through base; it returns the replica that took
// it.
func (d *device) dial(base string) (*websocket.Conn, string, error) {
	ctx, cancel := context.WithTimeout(d.l.ctx, 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+d.u.Token)
	c, resp, err := websocket.Dial(ctx, wsURL(base, d.path()), &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := "no response"
		if resp != nil {
			status = fmt.Sprint(resp.StatusCode)
		}
		d.l.dialFailed(status)
		return nil, "", err
	}
	c.SetReadLimit(1 << 20)
	return c, resp.Header.Get("X-Windi-Replica"), nil
}

// run keeps the device connected until the load ends.
func (d *device) run() {
	defer d.l.wg.Done()
	backoff := 50 * time.Millisecond
	for d.l.ctx.Err() == nil {
		conn, replica, err := d.dial(d.l.c.base)
		if err != nil {
			time.Sleep(backoff + time.Duration(time.Now().UnixNano()%int64(backoff)))
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		d.serve(conn, replica)
		d.mu.Lock()
		stop := d.closing || !d.redial
		d.mu.Unlock()
		if stop {
			return
		}
	}
}

// serve runs one connection: resync, resend, then read until it ends.
func (d *device) serve(conn *websocket.Conn, replica string) {
	var out []any
	d.mu.Lock()
	d.gen++
	gen := d.gen
	d.conn, d.replica, d.connected = conn, replica, true
	if gen > 1 {
		d.reconnects++
		d.maxAway = max(d.maxAway, time.Since(d.droppedAt))
	}
	if d.chatID == 0 && d.track {
		// On /ws the connection starts at each chat's head: ask for what
		// was missed with a sync frame per chat, then a marker.
		d.buffering, d.syncFailed, d.buf = true, false, nil
		d.marker = markerBase + int64(d.idx)*100_000 + int64(gen)
		for _, c := range d.chats {
			out = append(out, map[string]any{"type": "sync", "chat_id": c, "since_seq": d.streams[c].last})
		}
		out = append(out, map[string]any{"type": "sync", "chat_id": d.marker, "since_seq": 0})
	} else {
		d.ready = true
		out = d.resendLocked()
	}
	d.mu.Unlock()
	for _, f := range out {
		d.write(conn, f)
	}
	var err error
	for {
		var data []byte
		if _, data, err = conn.Read(d.l.ctx); err != nil {
			break
		}
		d.handle(conn, data)
	}
	d.mu.Lock()
	d.conn, d.connected, d.ready, d.buffering, d.buf = nil, false, false, false, nil
	d.closes = append(d.closes, closeRec{replica: replica, code: int(websocket.CloseStatus(err)), at: time.Now()})
	d.droppedAt = time.Now()
	d.mu.Unlock()
	_ = conn.CloseNow()
}

// resendLocked lists the send frames of every unanswered send, oldest
// first.
func (d *device) resendLocked() []any {
	recs := make([]*sendRec, 0, len(d.pending))
	for _, r := range d.pending {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].n < recs[j].n })
	out := make([]any, len(recs))
	for i, r := range recs {
		out[i] = sendFrame(r)
	}
	return out
}

func sendFrame(r *sendRec) map[string]any {
	return map[string]any{"type": "message.send", "chat_id": r.chat, "client_msg_id": r.cmid, "text": r.text}
}

// write sends one frame; a failure shows up as the connection ending.
// The frame must be a ClientFrame of api/openapi.yaml.
func (d *device) write(conn *websocket.Conn, v any) {
	b, _ := json.Marshal(v)
	if err := d.l.spec.CheckClientFrame(b); err != nil {
		d.l.problem("%s: sending %v", d.name, err)
	}
	ctx, cancel := context.WithTimeout(d.l.ctx, 5*time.Second)
	defer cancel()
	_ = conn.Write(ctx, websocket.MessageText, b)
}

// handle takes one frame off the connection. Every frame must be a
// ServerFrame of api/openapi.yaml, faults or not.
func (d *device) handle(conn *websocket.Conn, data []byte) {
	if err := d.l.spec.CheckServerFrame(data); err != nil {
		d.l.problem("%s: %v", d.name, err)
	}
	if !d.track {
		return
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		d.l.problem("%s: undecodable frame %s", d.name, data)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch f.Type {
	case "message.new", "message.ack":
		var m message
		if err := json.Unmarshal(f.Message, &m); err != nil || m.Seq < 1 {
			d.l.problem("%s: bad message in %s", d.name, data)
			return
		}
		if f.Type == "message.ack" {
			_, mine := d.pending[f.ClientMsgID]
			delete(d.pending, f.ClientMsgID)
			d.l.recordAck(d, f.ClientMsgID, m, f.Duplicate, mine)
			if f.Duplicate {
				return // a repeat's answer, outside the seq stream
			}
		}
		if d.buffering {
			d.buf = append(d.buf, bufFrame{chat: m.ChatID, seq: m.Seq, cmid: m.ClientMsgID})
			return
		}
		d.deliverLocked(m.ChatID, m.Seq, m.ClientMsgID)
	case "presence":
		d.l.recordPresence(f.UserID, f.Online)
	case "error":
		switch {
		case d.buffering && f.ChatID == d.marker:
			d.resyncedLocked(conn)
		case f.ClientMsgID != "":
			r := d.pending[f.ClientMsgID]
			d.l.countError(f.Code)
			if r == nil {
				d.l.problem("%s: error for a send not in flight: %s", d.name, data)
				return
			}
			if f.Code == "rate_limited" {
				go func() { // try again on the same connection, if it lasts
					time.Sleep(500 * time.Millisecond)
					d.mu.Lock()
					again := d.conn == conn && d.ready && d.pending[r.cmid] == r
					d.mu.Unlock()
					if again {
						d.write(conn, sendFrame(r))
					}
				}()
				return
			}
			delete(d.pending, f.ClientMsgID)
			d.l.recordFailed(r, f.Code)
		case d.buffering && slices.Contains(d.chats, f.ChatID):
			d.syncFailed = true // e.g. unavailable: resync on a new connection
		default:
			d.l.problem("%s: unexpected error frame %s", d.name, data)
		}
	}
}

// resyncedLocked ends a /ws resync: of the frames that arrived before the
// marker, the replay of each chat starts at the last one carrying the
// chat's next seq; frames before it were sent before the sync frame took
// effect, and the replay repeats them.
func (d *device) resyncedLocked(conn *websocket.Conn) {
	d.buffering = false
	buf := d.buf
	d.buf = nil
	if d.syncFailed {
		go func() { _ = conn.Close(4000, "resync failed; reconnecting") }()
		return
	}
	for _, c := range d.chats {
		next := d.streams[c].last + 1
		var fr []bufFrame
		start := -1
		for _, b := range buf {
			if b.chat == c {
				if b.seq == next {
					start = len(fr)
				}
				fr = append(fr, b)
			}
		}
		if start < 0 && len(fr) > 0 {
			d.l.problem("%s: resync of chat %d from seq %d replayed nothing, but got %d frames from seq %d", d.name, c, next-1, len(fr), fr[0].seq)
			start = 0
		}
		d.preSync += max(start, 0)
		for _, b := range fr[max(start, 0):] {
			d.deliverLocked(b.chat, b.seq, b.cmid)
		}
	}
	d.ready = true
	out := d.resendLocked()
	go func() {
		for _, f := range out {
			d.write(conn, f)
		}
	}()
}

// deliverLocked counts one frame of a chat's seq stream.
func (d *device) deliverLocked(chat, seq int64, cmid string) {
	s := d.streams[chat]
	if s == nil {
		d.l.problem("%s: got seq %d of chat %d, which it does not follow", d.name, seq, chat)
		return
	}
	switch {
	case s.got[seq] > 0:
		s.repeats++
		d.l.problem("%s: chat %d seq %d arrived again (highest so far %d)", d.name, chat, seq, s.last)
	case seq <= s.last:
		s.outOfOrder++
		d.l.problem("%s: chat %d seq %d arrived after seq %d", d.name, chat, seq, s.last)
	case seq > s.last+1:
		s.gaps++
		d.l.problem("%s: chat %d jumped from seq %d to %d", d.name, chat, s.last, seq)
	}
	s.got[seq]++
	if s.cmid[seq] == "" {
		s.cmid[seq] = cmid
	} else if s.cmid[seq] != cmid {
		d.l.problem("%s: chat %d seq %d arrived as %q and as %q", d.name, chat, seq, s.cmid[seq], cmid)
	}
	s.last = max(s.last, seq)
	if d.recoveredAt.IsZero() && d.l.sentAfterFault(cmid) {
		d.recoveredAt = time.Now()
	}
}

// sender sends a new message every interval while the load runs, keeping
// at most window unanswered.
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
		if !d.ready || len(d.pending) >= l.window || !l.sending.Load() {
			d.mu.Unlock()
			continue
		}
		conn := d.conn
		r := d.newSendLocked(fmt.Sprintf("%s-%s-%d", l.run, d.name, d.sends+1), d.chats[d.sends%len(d.chats)])
		d.mu.Unlock()
		d.write(conn, sendFrame(r))
	}
}

func (d *device) newSendLocked(cmid string, chat int64) *sendRec {
	d.sends++
	r := &sendRec{cmid: cmid, chat: chat, dev: d, n: d.sends, first: time.Now(),
		text: fmt.Sprintf("message %d of %s (%s)", d.sends, d.name, cmid)}
	d.pending[cmid] = r
	d.l.recordSent(r)
	return r
}

// sendAndWait sends cmid to chat now and waits for its answer (ack or
// error), at most 15 s.
func (d *device) sendAndWait(cmid string, chat int64) (ackRec, error) {
	l := d.l
	ch := make(chan ackRec, 1)
	l.mu.Lock()
	l.waiters[cmid] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiters, cmid)
		l.mu.Unlock()
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d.mu.Lock()
		if d.ready {
			conn := d.conn
			r := d.newSendLocked(cmid, chat)
			d.mu.Unlock()
			d.write(conn, sendFrame(r))
			break
		}
		d.mu.Unlock()
		if time.Now().After(deadline) {
			return ackRec{}, fmt.Errorf("%s: not connected", d.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case a := <-ch:
		return a, nil
	case <-time.After(time.Until(deadline)):
		return ackRec{}, fmt.Errorf("%s: no answer to %s within 15 s", d.name, cmid)
	}
}

// forceReconnect closes the connection from the client side; run dials
// again (through the proxy, so perhaps to another replica).
func (d *device) forceReconnect() {
	d.mu.Lock()
	conn := d.conn
	d.mu.Unlock()
	if conn != nil {
		_ = conn.Close(websocket.StatusNormalClosure, "moving")
	}
}

func (d *device) currentReplica() (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replica, d.ready
}

// stop closes the connection for good.
func (d *device) stop() {
	d.mu.Lock()
	d.closing = true
	conn := d.conn
	d.mu.Unlock()
	if conn != nil {
		_ = conn.Close(websocket.StatusNormalClosure, "test over")
	}
}

// closesOn lists how the device's connections to replica ended.
func (d *device) closesOn(replica string) []closeRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []closeRec
	for _, c := range d.closes {
		if c.replica == replica {
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
