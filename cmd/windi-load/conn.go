package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/windi-chat/windi/client"
)

// ftype is a server frame's type, decoded without allocating.
type ftype uint8

const (
	ftOther ftype = iota
	ftNew
	ftAck
	ftUpdated
	ftError
)

func (t *ftype) UnmarshalJSON(b []byte) error {
	switch string(b) { // no allocation: the compiler compares in place
	case `"message.new"`:
		*t = ftNew
	case `"message.ack"`:
		*t = ftAck
	case `"message.updated"`:
		*t = ftUpdated
	case `"error"`:
		*t = ftError
	default:
		*t = ftOther
	}
	return nil
}

// stamp is the pair of times embedded at the start of a message's text,
// "<scheduled> <sent> …", in nanoseconds since the run's base time,
// decoded without allocating. In closed-loop runs the two are equal; in
// open-loop runs the scheduled time is when the message was due, so a
// sender held up by a slow server cannot hide the wait (coordinated
// omission).
type stamp struct{ sched, sent int64 }

func (s *stamp) UnmarshalJSON(b []byte) error {
	*s = stamp{}
	if len(b) < 2 || b[0] != '"' {
		return nil
	}
	*s = parseStamp(b[1:])
	return nil
}

// text is a message's text as the tool reads it: the stamp at its start,
// and its raw bytes (valid until the frame's buffer is reused), which the
// mixed load hashes. The tool's own texts have no escapes, so the raw
// bytes are the text.
type text struct {
	stamp
	raw []byte
}

func (t *text) UnmarshalJSON(b []byte) error {
	*t = text{}
	if len(b) < 2 || b[0] != '"' {
		return nil
	}
	t.stamp = parseStamp(b[1:])
	t.raw = b[1 : len(b)-1]
	return nil
}

// parseStamp reads "<scheduled> <sent>" (or one number) from the start of
// a text's raw bytes.
func parseStamp(b []byte) stamp {
	var v [2]int64
	k := 0
	for _, ch := range b {
		if ch == ' ' && k == 0 {
			k = 1
			continue
		}
		if ch < '0' || ch > '9' {
			break
		}
		v[k] = v[k]*10 + int64(ch-'0')
	}
	s := stamp{v[0], v[1]}
	if k == 0 || s.sent == 0 {
		s.sent = s.sched
	}
	return s
}

// cmidRef is the sending connection's index from a client_msg_id of the
// form "<conn>-<n>" (-1 for any other form), decoded without allocating.
type cmidRef int64

func (c *cmidRef) UnmarshalJSON(b []byte) error {
	*c = -1
	if len(b) < 4 || b[0] != '"' {
		return nil
	}
	*c = parseCMID(b[1:])
	return nil
}

// parseCMID reads "<conn>-" from the start of a client_msg_id's raw bytes.
func parseCMID(b []byte) cmidRef {
	var v int64
	for i, ch := range b {
		if ch == '-' && i > 0 {
			return cmidRef(v)
		}
		if ch < '0' || ch > '9' {
			return -1
		}
		v = v*10 + int64(ch-'0')
	}
	return -1
}

// frame holds the fields of a server frame the tool needs.
type frame struct {
	Type        ftype   `json:"type"`
	Code        string  `json:"code"`
	Seq         int64   `json:"seq"` // of errors about an edit or a reaction
	ClientMsgID cmidRef `json:"client_msg_id"`
	Duplicate   bool    `json:"duplicate"`
	Message     msgBody `json:"message"` // an object in acks and message.new, a string in errors
}

// msgBody is the Message of message.new, message.ack and message.updated.
type msgBody struct {
	ChatID      int64          `json:"chat_id"`
	Seq         int64          `json:"seq"`
	Rev         int64          `json:"rev"`
	SenderID    int64          `json:"sender_id"`
	Text        text           `json:"text"`
	ClientMsgID cmidRef        `json:"client_msg_id"`
	Deleted     bool           `json:"deleted"`
	Reactions   []reactionBody `json:"reactions"`
}

func (m *msgBody) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return nil // the error frame's message text
	}
	type plain msgBody
	return json.Unmarshal(b, (*plain)(m))
}

// lconn is one load connection.
type lconn struct {
	idx      int
	url      string // server base URL
	userIdx  int
	userID   int64
	token    string
	chatID   int64    // /ws/{chat_id}; 0 for /ws
	follows  []int64  // chats whose messages it must receive
	sendChat int64    // the chat it sends to; 0 when it does not send
	own      *ownMsgs // mixed load: the sender's messages and the changes it made

	ws         *client.Socket
	dialErr    error
	dialStatus int
	connectDur time.Duration

	// Sender side.
	window   chan struct{} // a token per send in flight
	sent     atomic.Int64  // message.send frames
	opsSent  atomic.Int64  // mixed load: edits and reaction changes
	answered atomic.Int64  // acks, own changes' message.updated and errors received
	writeErr error         // owned by the sender goroutine
	sendDone chan struct{}

	// Owned by the reader goroutine; read by others once readerDone is
	// closed.
	readerDone   chan struct{}
	tr           *tracker
	acked        bitset // seqs of sendChat acked to this connection
	acks         int64
	dupAcks      int64
	sendErrors   int64
	deliveries   int64                // message.new frames
	updates      int64                // message.updated frames
	opsAnswered  int64                // of them, answers to its own changes
	views        map[viewKey]msgState // mixed load: the last message.updated of each message
	unfollowed   int64                // message.new of a chat it should not get
	wrongFrames  int64                // its own send as message.new instead of an ack
	badFrames    int64
	errCodes     map[string]int64
	ackLat       hist // from the scheduled send time
	delLat       hist
	ackLatSent   hist // from the actual send time
	delLatSent   hist
	lastAck      time.Duration // since the run's base
	lastDelivery time.Duration
	unexpected   bool // closed by the server or the network, not by us
	closeStatus  int  // the close code (client.CloseStatus)
	closeErr     error
}

func (c *lconn) path() string {
	if c.chatID != 0 {
		return "/ws/" + strconv.FormatInt(c.chatID, 10)
	}
	return "/ws"
}

// dial opens the connection through the SDK, on the connection's server
// as its user; the token goes in the Authorization header so it stays out
// of request logs.
func (c *lconn) dial(ctx context.Context, srv *servers) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	t0 := time.Now()
	defer func() { c.connectDur = time.Since(t0) }()
	api, err := srv.client(c.url, c.token)
	if err != nil {
		c.dialErr = err
		return
	}
	ws, resp, err := api.DialSocket(ctx, c.path(), client.SocketOptions{ReadLimit: 1 << 20})
	if err != nil {
		c.dialErr = err
		if resp != nil {
			c.dialStatus = resp.StatusCode
		}
		return
	}
	c.ws = ws
}

// viewKey names a message.
type viewKey struct{ chat, seq int64 }

// shared is the run state every connection's goroutines touch.
type shared struct {
	base    time.Time
	closing atomic.Bool
	// followers maps a chat to its live connections, set before any send.
	followers   atomic.Pointer[map[int64]int64]
	deliveries  atomic.Int64 // message.new frames, all connections
	owed        atomic.Int64 // message.new frames owed for the acks so far
	updates     atomic.Int64 // message.updated frames, all connections
	updatesOwed atomic.Int64 // message.updated frames owed for the changes answered so far
	rateLimited atomic.Int64
	anomalies   atomic.Int64
	warn        func(format string, args ...any)
}

func (s *shared) now() time.Duration { return time.Since(s.base) }

// maxAnomalyLogs bounds the anomalies logged one by one.
const maxAnomalyLogs = 20

// anomaly logs one of the first delivery anomalies as it happens.
func (s *shared) anomaly(c *lconn, kind string, chatID, seq, prev int64, what string) {
	if n := s.anomalies.Add(1); n <= maxAnomalyLogs {
		s.warn("anomaly: conn %d (user %d, %s%s) got %s chat %d seq %d after seq %d: %s",
			c.idx, c.userID, c.url, c.path(), kind, chatID, seq, prev, what)
	}
}

// read is the connection's only reader: it decodes each frame, tracks
// order and latency, and answers the sender's window.
func (c *lconn) read(st *shared) {
	defer close(c.readerDone)
	// Frames are read undecoded into one reused buffer and parsed by
	// scanFrame: decoding each into the SDK's generated types (Socket.Read)
	// would make the tool's own CPU, not the server, the limit of a run.
	buf := make([]byte, 0, 4096)
	var f frame
	for {
		var err error
		buf, err = c.ws.ReadRaw(context.Background(), buf)
		if errors.Is(err, client.ErrBinaryFrame) {
			c.badFrames++
			continue
		}
		if err != nil {
			c.closeErr = err
			c.closeStatus = client.CloseStatus(err)
			if !st.closing.Load() {
				c.unexpected = true
				st.warn("connection %d (%s%s) closed unexpectedly: %v", c.idx, c.url, c.path(), err)
			}
			return
		}
		now := st.now()
		f = frame{ClientMsgID: -1}
		if !scanFrame(buf, &f) {
			f = frame{ClientMsgID: -1}
			if err := json.Unmarshal(buf, &f); err != nil {
				c.badFrames++
				continue
			}
		}
		m := &f.Message
		switch f.Type {
		case ftNew:
			c.deliveries++
			st.deliveries.Add(1)
			prev := c.tr.last(m.ChatID)
			a := c.tr.observe(m.ChatID, m.Seq)
			if a == unfollowed {
				c.unfollowed++
			}
			c.observeRev(st, "message.new", m)
			if a != inOrder {
				st.anomaly(c, "message.new", m.ChatID, m.Seq, prev, a.String())
			}
			if m.SenderID == c.userID && int(m.ClientMsgID) == c.idx {
				c.wrongFrames++
				st.anomaly(c, "message.new", m.ChatID, m.Seq, prev, "own send delivered as message.new")
			}
			if m.Text.sched > 0 {
				c.delLat.record(now - time.Duration(m.Text.sched))
				c.delLatSent.record(now - time.Duration(m.Text.sent))
			}
			c.lastDelivery = now
		case ftAck:
			c.acks++
			if f.Duplicate {
				c.dupAcks++
			} else {
				prev := c.tr.last(m.ChatID)
				if a := c.tr.observe(m.ChatID, m.Seq); a != inOrder {
					st.anomaly(c, "message.ack", m.ChatID, m.Seq, prev, a.String())
				}
				c.observeRev(st, "message.ack", m)
				if m.ChatID == c.sendChat {
					c.acked.set(m.Seq)
					if c.own != nil {
						c.own.acked(m.Seq, hashText(m.Text.raw))
					}
				}
				if fl := st.followers.Load(); fl != nil {
					st.owed.Add(max((*fl)[m.ChatID]-1, 0))
				}
			}
			if m.Text.sched > 0 {
				c.ackLat.record(now - time.Duration(m.Text.sched))
				c.ackLatSent.record(now - time.Duration(m.Text.sent))
			}
			c.lastAck = now
			c.release()
		case ftUpdated:
			c.updates++
			st.updates.Add(1)
			c.observeRev(st, "message.updated", m)
			if c.tr.chats[m.ChatID] == nil {
				c.unfollowed++
			}
			if c.views != nil {
				c.views[viewKey{m.ChatID, m.Seq}] = stateOf(m.Text.raw, m.Deleted, m.Reactions, m.SenderID)
			}
			if c.own != nil && m.SenderID == c.userID && int(m.ClientMsgID) == c.idx {
				c.opsAnswered++
				if fl := st.followers.Load(); fl != nil {
					st.updatesOwed.Add((*fl)[m.ChatID])
				}
				c.release()
			}
		case ftError:
			if c.errCodes == nil {
				c.errCodes = map[string]int64{}
			}
			c.errCodes[f.Code]++
			if f.Code == "rate_limited" && st.rateLimited.Add(1) == 1 {
				st.warn("WARNING: the server answers rate_limited: it limits sends per connection (default 20/s, burst 200); " +
					"start it with a higher send limit for throughput runs")
			}
			// A send's error names its client_msg_id; an edit's or a
			// reaction's names the message's seq instead.
			if c.sendChat != 0 && (int(f.ClientMsgID) == c.idx || (c.own != nil && f.ClientMsgID == -1 && f.Seq > 0)) {
				c.sendErrors++
				c.release()
			}
		}
	}
}

// observeRev checks that the frames carrying a chat's changes arrive in
// increasing rev order (SPEC §11.1). Revs may be skipped: a fill collapses
// a message's intermediate changes into its latest.
func (c *lconn) observeRev(st *shared, kind string, m *msgBody) {
	t := c.tr.chats[m.ChatID]
	if t == nil {
		return
	}
	if m.Rev <= t.rev {
		t.revBack++
		st.anomaly(c, kind, m.ChatID, m.Seq, t.max, fmt.Sprintf("rev %d after rev %d", m.Rev, t.rev))
		return
	}
	if m.Rev > t.rev+1 {
		t.revGaps++
	}
	t.rev = m.Rev
}

// release frees a window slot on an answer to one of this connection's
// sends.
func (c *lconn) release() {
	if c.window == nil {
		return
	}
	c.answered.Add(1)
	select {
	case <-c.window:
	default:
	}
}

// send writes message.send frames to sendChat until end: one per interval
// (0: as fast as the window allows), with at most cap(window) unanswered.
// With open set, sends follow the schedule whatever the answers: message n
// is due at start+n*interval and goes out then, or at once when the
// sender is behind (no send is skipped, none waits for a window).
// Each text starts with the scheduled and the actual send time, so
// receivers measure latency from both; the client_msg_id "<conn>-<n>"
// names the sending connection.
//
// With mix > 0, that share of the operations edits or toggles a reaction
// on one of the sender's recent messages instead (see mixOp).
func (c *lconn) send(ctx context.Context, st *shared, start, end time.Time, interval time.Duration, size int, open bool, mix float64) {
	defer close(c.sendDone)
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(c.idx)))
	prefix := `{"type":"message.send","chat_id":` + strconv.FormatInt(c.sendChat, 10) +
		`,"client_msg_id":"` + strconv.Itoa(c.idx) + `-`
	pad := strings.Repeat("x", size)
	buf := make([]byte, 0, len(prefix)+size+64)

	endT := time.NewTimer(time.Until(end))
	defer endT.Stop()
	tick := time.NewTimer(time.Hour)
	defer tick.Stop()
	next := start
	for n := 0; ; n++ {
		due := next
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				tick.Reset(d)
				select {
				case <-tick.C:
				case <-endT.C:
					return
				case <-c.readerDone:
					return
				case <-ctx.Done():
					return
				}
			}
			next = next.Add(interval)
			if now := time.Now(); !open && now.Sub(next) > interval {
				next = now // closed loop fell behind (slow acks): no catch-up burst
			}
		}
		if !due.Before(end) || ctx.Err() != nil {
			return
		}
		if !open {
			select {
			case c.window <- struct{}{}:
			case <-endT.C:
				return
			case <-c.readerDone:
				return
			case <-ctx.Done():
				return
			}
		}
		sent := st.now()
		sched := sent
		if open {
			sched = due.Sub(st.base)
		}
		counter := &c.sent
		op := false
		if mix > 0 && rng.Float64() < mix {
			buf, op = c.mixOp(buf, rng, int64(sched), int64(sent), pad, size)
		}
		if op {
			counter = &c.opsSent
		} else {
			buf = append(buf[:0], prefix...)
			buf = strconv.AppendInt(buf, int64(n), 10)
			buf = append(buf, `","text":"`...)
			mark := len(buf)
			buf = strconv.AppendInt(buf, int64(sched), 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, int64(sent), 10)
			buf = append(buf, ' ')
			buf = append(buf, pad[:max(size-(len(buf)-mark), 0)]...)
			buf = append(buf, `"}`...)
		}
		if err := c.ws.WriteRaw(context.Background(), buf); err != nil {
			if !st.closing.Load() {
				c.writeErr = err
				st.warn("connection %d: write: %v", c.idx, err)
			}
			return
		}
		counter.Add(1)
	}
}

// close ends the connection from our side and waits for the reader.
func (c *lconn) close() {
	if c.ws == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_ = c.ws.Close(1000, "load run over") // normal closure
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(7 * time.Second):
		_ = c.ws.CloseNow()
	}
	<-c.readerDone
}
