package realtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/time/rate"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/repo"
)

// conn is one WebSocket connection.
//
// Goroutines: one reads the socket for the connection's whole life
// (readLoop) and ends it (finish); a writer runs only while frames are
// queued (writeLoop) and drains everything queued into one buffered write;
// a task goroutine runs only while database or broker work is queued
// (fills, syncs, joins, membership checks), one task at a time, in order.
// An idle connection costs one parked goroutine, its socket and this
// struct. Deliveries from the broker run the ordering state machine
// inline, under mu, and queue frames without blocking: the writer is the
// one hand-off on the in-order path.
type conn struct {
	hub    *Hub
	id     int64
	userID int64
	sessID int64 // the session of the token it was opened with
	chatID int64 // the chat of /ws/{chat_id}; 0 on /ws
	nc     net.Conn
	br     *bufio.Reader
	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc

	// Rate limits of client frames; used by the read goroutine only.
	sendLimit, syncLimit, readLimit, typingLimit *rate.Limiter

	space chan struct{} // capacity 1: the writer drained the queue

	mu         sync.Mutex // guards everything below
	state      connState
	streams    map[int64]*stream
	sending    map[sendKey]int // sends in flight, by chat and client_msg_id
	out        []outFrame      // queued for the socket
	spare      []outFrame      // the writer's other buffer
	writing    bool            // a writer goroutine runs
	closeMsg   []byte          // payload of the close frame to send after out
	dropped    bool            // closing without the queue: the peer is not reading
	peerClosed bool            // the peer sent its close frame
	finished   bool            // readLoop has ended
	tasks      []func(ctx context.Context)
	working    bool             // a task goroutine runs
	syncs      map[int64]replay // queued syncs by chat: the latest wins
	fillTimer  *time.Timer
	pingTimer  *time.Timer
	expiry     *time.Timer
	scratch    []entry
}

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // a close frame is queued: no more data frames
	stateClosed            // the read loop has ended
)

type outFrame struct {
	op ws.OpCode
	p  []byte
}

type sendKey struct {
	chatID int64
	cmid   string
}

const (
	// fillPage is how many messages a fill reads per query.
	fillPage = 200
	// taskTimeout bounds each task's database and broker work.
	taskTimeout = 15 * time.Second
	// closeWait is how long a closing connection waits for the peer's close
	// frame before dropping the TCP connection.
	closeWait = time.Second
)

// writers are shared by every connection's writer goroutine; a connection
// holds one only while it writes.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func newConn(h *Hub, p chat.Principal, chatID int64, nc net.Conn, br *bufio.Reader, starts map[int64]start) *conn {
	c := &conn{
		hub: h, id: h.connSeq.Add(1), userID: p.UserID, sessID: p.SessionID, chatID: chatID, nc: nc, br: br,
		space: make(chan struct{}, 1), streams: make(map[int64]*stream, len(starts)),
	}
	c.ctx, c.cancel = context.WithCancel(h.ctx)
	if h.cfg.SendRate > 0 {
		c.sendLimit = rate.NewLimiter(rate.Limit(h.cfg.SendRate), h.cfg.SendBurst)
	}
	c.syncLimit = rate.NewLimiter(rate.Limit(h.cfg.SyncRate), h.cfg.SyncBurst)
	c.typingLimit = rate.NewLimiter(rate.Every(time.Second), 5)
	c.readLimit = rate.NewLimiter(rate.Limit(h.cfg.ReadRate), h.cfg.ReadBurst)
	for id, st := range starts {
		c.streams[id] = newStream(st.rev)
		c.streams[id].minSeq = st.minSeq
	}
	return c
}

// start runs the connection once the hub has registered it.
func (c *conn) start(expires time.Time) {
	c.mu.Lock()
	c.pingTimer = time.AfterFunc(c.hub.cfg.PingPeriod, c.ping)
	if !expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(expires), func() { c.close(CloseTokenExpired, "token expired") })
	}
	// Messages committed between the handshake and the subscriptions did
	// not come through the broker, and a removal committed in between was
	// published before anyone knew of this connection: re-check, then read
	// what was missed.
	c.addTaskLocked(c.catchUp)
	c.mu.Unlock()
	go c.readLoop()
}

// chatIDs lists the chats the connection follows.
func (c *conn) chatIDs() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]int64, 0, len(c.streams))
	for id := range c.streams {
		ids = append(ids, id)
	}
	return ids
}

// --- delivery (called from the hub, inline) ---

// deliver offers a chat's new messages, then frames that follow them.
func (c *conn) deliver(chatID int64, items []*item, frames []json.RawMessage, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[chatID]
	if st == nil || c.state != stateOpen {
		return
	}
	before := st.fillAt
	out := c.scratch[:0]
	for _, it := range items {
		out = st.offer(entry{it: it}, now, c.hub.cfg.GapHoldback, c.hold, out)
	}
	c.emitLocked(out)
	c.scratch = out[:0]
	for _, f := range frames {
		c.enqueueLocked(ws.OpText, f)
	}
	if st.fillAt != before {
		c.armFillLocked()
	}
}

// forward queues frames of a chat the connection follows, unless they are
// about the connection's own user and meant for others (except).
func (c *conn) forward(chatID, except int64, frames []json.RawMessage) {
	if except != 0 && except == c.userID {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[chatID] == nil || c.state != stateOpen {
		return
	}
	for _, f := range frames {
		c.enqueueLocked(ws.OpText, f)
	}
}

// removed handles userID leaving chatID: everyone following the chat gets
// the frames; the removed user's per-chat connection closes with 4403 and
// its /ws stops following the chat.
func (c *conn) removed(chatID, userID int64, frames []json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[chatID] == nil || c.state != stateOpen {
		return
	}
	for _, f := range frames {
		c.enqueueLocked(ws.OpText, f)
	}
	if userID == c.userID {
		c.cutLocked(chatID)
	}
}

// cutLocked ends the connection's delivery of a chat its user is no longer
// a member of.
func (c *conn) cutLocked(chatID int64) {
	if c.chatID == chatID {
		c.closeLocked(CloseRemoved, "removed from the chat")
		return
	}
	c.unfollowLocked(chatID)
}

// hold reports whether e is this connection's own message still waiting
// for its ack.
func (c *conn) hold(e entry) bool {
	return e.it.rev == e.it.createdRev && e.it.sender == c.userID && c.sending[sendKey{e.it.chatID, e.it.cmid}] > 0
}

// emitLocked queues the frames of delivered entries: message.ack for the
// connection's own sends, message.new for a message it has not seen
// created, message.updated for one it has.
func (c *conn) emitLocked(es []entry) {
	for _, e := range es {
		switch {
		case e.ack:
			c.enqueueLocked(ws.OpText, event.AckFrame(e.it.cmid, false, e.it.msg))
			continue
		case e.isNew == (e.it.rev == e.it.createdRev):
			c.enqueueLocked(ws.OpText, e.it.frame) // the frame built once for every connection
		case e.isNew:
			c.enqueueLocked(ws.OpText, event.NewFrame(e.it.msg)) // created and changed while away
		default:
			c.enqueueLocked(ws.OpText, event.UpdatedFrame(e.it.msg))
		}
		c.hub.delivered(e.it)
	}
}

// --- sends and their acks ---

func (c *conn) startSend(k sendKey) {
	c.mu.Lock()
	if c.sending == nil {
		c.sending = map[sendKey]int{}
	}
	c.sending[k]++
	c.mu.Unlock()
}

func (c *conn) endSendLocked(k sendKey) {
	if n := c.sending[k]; n > 1 {
		c.sending[k] = n - 1
	} else {
		delete(c.sending, k)
	}
}

// acked answers one of the connection's sends; the sequencer calls it
// after the batch was published. A message the broker brought before its
// ack waited in its stream (hold); the ack takes its place in rev order.
func (c *conn) acked(chatID int64, cmid string, o chat.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endSendLocked(sendKey{chatID, cmid})
	if c.state != stateOpen {
		return
	}
	st := c.streams[chatID]
	if o.Err != nil {
		c.failedLocked(o.Err, &frameError{clientMsgID: cmid, chatID: chatID})
		c.releasedLocked(st)
		return
	}
	m := o.Message
	raw := mustJSON(m.API())
	if o.Duplicate || st == nil || m.Rev <= st.last {
		// A repeat, or a chat this connection does not follow: answer now.
		c.enqueueLocked(ws.OpText, event.AckFrame(cmid, o.Duplicate, raw))
		c.releasedLocked(st)
		return
	}
	it := &item{chatID: chatID, rev: m.Rev, createdRev: m.CreatedRev, seq: m.Seq, sender: m.SenderID, cmid: cmid, msg: raw}
	before := st.fillAt
	c.emitLocked(st.offer(entry{it: it, ack: true}, time.Now(), c.hub.cfg.GapHoldback, c.hold, c.scratch[:0]))
	if st.fillAt != before {
		c.armFillLocked()
	}
}

// releasedLocked delivers what waited in st (nil: none) for a send just
// answered without an entry of its own (hold: a repeat's original, stored
// before, or a send refused after it was read), and arms the fill timer
// for a gap that opens behind it or a fill that must read on.
func (c *conn) releasedLocked(st *stream) {
	if st == nil {
		return
	}
	before := st.fillAt
	c.emitLocked(st.drain(time.Now(), c.hub.cfg.GapHoldback, c.hold, c.scratch[:0]))
	if st.fillAt != before {
		c.armFillLocked()
	}
}

// changed answers one of the connection's edits, deletes or reaction
// changes: on success the connection hears of it through the broker as
// message.updated like every other connection; an error gets an error
// frame naming the message.
func (c *conn) changed(chatID, seq int64, o chat.Outcome) {
	if o.Err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateOpen {
		c.failedLocked(o.Err, &frameError{chatID: chatID, seq: seq})
	}
}

// failedLocked queues the error frame of a failed operation.
func (c *conn) failedLocked(err error, fe *frameError) {
	fe.code, fe.msg = errorFrameCode(err), errorMessage(err)
	c.enqueueLocked(ws.OpText, encodeError(fe))
	if fe.code == gen.ErrorFrameCodeInternal {
		c.hub.log.Error("operation failed", "event", "ws.error", "conn_id", c.id, "chat_id", fe.chatID, "err", err)
	}
}

// --- the outbound queue and the writer ---

// frame queues one frame from outside the delivery path (errors, pongs).
func (c *conn) frame(p []byte) {
	c.mu.Lock()
	if c.state == stateOpen {
		c.enqueueLocked(ws.OpText, p)
	}
	c.mu.Unlock()
}

// enqueueLocked queues a frame without blocking. A connection whose queue
// is full cannot keep up: it is dropped (4008, reconnect and resume)
// instead of holding up the goroutine that delivers to everyone else.
func (c *conn) enqueueLocked(op ws.OpCode, p []byte) {
	if c.state != stateOpen && op != ws.OpPong {
		return
	}
	if len(c.out) >= c.hub.cfg.QueueSize {
		c.dropLocked(CloseSlowConsumer, "slow consumer: queue full")
		return
	}
	c.out = append(c.out, outFrame{op: op, p: p})
	c.startWriterLocked()
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// writeLoop writes everything queued in one buffered write per round,
// until the queue is empty; it then exits, so an idle connection has no
// writer. It writes the close frame last, and closes the socket after it.
func (c *conn) writeLoop() {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		bw.Reset(nil)
		writers.Put(bw)
	}()
	for {
		c.mu.Lock()
		batch := c.out
		c.out = c.spare[:0]
		c.spare = nil
		var closeMsg []byte
		if len(batch) == 0 && c.closeMsg != nil {
			closeMsg, c.closeMsg = c.closeMsg, nil
		}
		if len(batch) == 0 && closeMsg == nil {
			c.writing = false
			c.spare = batch
			closeNow := c.finished
			c.mu.Unlock()
			if closeNow {
				_ = c.nc.Close()
			}
			return
		}
		deadline := c.hub.cfg.WriteTimeout
		if c.dropped {
			deadline = closeWait
		}
		c.mu.Unlock()

		_ = c.nc.SetWriteDeadline(time.Now().Add(deadline))
		var err error
		for i := range batch {
			if err == nil {
				err = writeFrame(bw, batch[i].op, batch[i].p)
			}
			batch[i] = outFrame{} // let the frame go
		}
		if err == nil && closeMsg != nil {
			err = writeFrame(bw, ws.OpClose, closeMsg)
		}
		if err == nil {
			err = bw.Flush()
		}
		select {
		case c.space <- struct{}{}:
		default:
		}
		c.mu.Lock()
		if c.spare == nil {
			c.spare = batch[:0]
		}
		peerClosed, finished := c.peerClosed, c.finished
		if err != nil {
			c.writing = false
			c.out, c.closeMsg = nil, nil
			if c.state == stateOpen {
				c.state = stateClosing
			}
		}
		c.mu.Unlock()
		switch {
		case err != nil:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.wasDropped() {
				c.hub.slowClosed()
				c.hub.log.Warn("dropping connection", "event", "ws.dropped", "conn_id", c.id, "user_id", c.userID, "code", CloseSlowConsumer, "reason", "slow consumer: write timed out")
			}
			_ = c.nc.Close()
			return
		case closeMsg != nil && (peerClosed || finished):
			_ = c.nc.Close()
		case closeMsg != nil:
			// Wait for the peer's close frame (readLoop ends on it, or on
			// the socket closing), but not for ever.
			time.AfterFunc(closeWait, func() { _ = c.nc.Close() })
		}
	}
}

func (c *conn) wasDropped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

func writeFrame(w io.Writer, op ws.OpCode, p []byte) error {
	if err := ws.WriteHeader(w, ws.Header{Fin: true, OpCode: op, Length: int64(len(p))}); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// waitSpace waits until the queue is at most half full: fills and replays
// (on the task goroutine) keep pace with the socket, where live deliveries
// never wait. It reports false when the connection is closing or the
// socket stayed full for the write timeout (then it is dropped).
func (c *conn) waitSpace(ctx context.Context) bool {
	var timeout <-chan time.Time
	for {
		c.mu.Lock()
		n, st := len(c.out), c.state
		c.mu.Unlock()
		if st != stateOpen {
			return false
		}
		if n <= c.hub.cfg.QueueSize/2 {
			return true
		}
		if timeout == nil {
			t := time.NewTimer(c.hub.cfg.WriteTimeout)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-c.space:
		case <-ctx.Done():
			return false
		case <-timeout:
			c.drop(CloseSlowConsumer, "slow consumer: socket not drained")
			return false
		}
	}
}

// --- closing ---

// close queues a close frame after what is already queued.
func (c *conn) close(code int, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

func (c *conn) closeLocked(code int, reason string) {
	if c.state != stateOpen {
		return
	}
	c.hub.log.Info("closing connection", "event", "ws.closing", "conn_id", c.id, "user_id", c.userID, "code", code, "reason", reason)
	c.state = stateClosing
	c.closeMsg = ws.NewCloseFrameBody(ws.StatusCode(code), reason)
	c.startWriterLocked()
}

// drop closes a connection whose peer is not reading: queued frames are
// dropped and the close frame goes first. It never waits for the socket:
// a writer blocked on it is woken by an expired deadline.
func (c *conn) drop(code int, reason string) {
	c.mu.Lock()
	c.dropLocked(code, reason)
	c.mu.Unlock()
}

func (c *conn) dropLocked(code int, reason string) {
	if c.state == stateClosed || c.dropped {
		return
	}
	c.hub.log.Warn("dropping connection", "event", "ws.dropped", "conn_id", c.id, "user_id", c.userID, "code", code, "reason", reason)
	c.hub.slowClosed()
	c.state, c.dropped = stateClosing, true
	c.out = nil
	c.closeMsg = ws.NewCloseFrameBody(ws.StatusCode(code), reason)
	if c.writing {
		_ = c.nc.SetWriteDeadline(time.Now()) // wake a writer stuck on a full socket
	} else {
		c.startWriterLocked()
	}
}

// finish ends the connection once its read loop has: it is unregistered
// and the socket closed (after the close frame, when one is being written).
func (c *conn) finish() {
	c.mu.Lock()
	c.state, c.finished = stateClosed, true
	for _, t := range []*time.Timer{c.pingTimer, c.expiry, c.fillTimer} {
		if t != nil {
			t.Stop()
		}
	}
	var indexed, subscribed []int64
	for id, st := range c.streams {
		indexed = append(indexed, id)
		if st.subscribed {
			subscribed = append(subscribed, id)
		}
	}
	closeNow := !c.writing
	c.mu.Unlock()
	c.cancel()
	if closeNow {
		_ = c.nc.Close()
	} else {
		time.AfterFunc(closeWait, func() { _ = c.nc.Close() })
	}
	c.hub.unregister(c, indexed, subscribed)
}

// --- heartbeat ---

// ping sends a ping frame every PingPeriod; the read deadline (PongWait
// after the last frame read) drops a peer that stopped answering.
func (c *conn) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	c.out = append(c.out, outFrame{op: ws.OpPing, p: nil})
	c.startWriterLocked()
	c.pingTimer.Reset(c.hub.cfg.PingPeriod)
}

// --- reading ---

var errPeerClosed = errors.New("realtime: peer closed")

// readLoop reads client frames until the connection ends. Frames are
// handled in order, on this goroutine; sends do not wait for their commit.
func (c *conn) readLoop() {
	defer c.finish()
	rd := &wsutil.Reader{
		Source: c.br, State: ws.StateServerSide, CheckUTF8: true,
		MaxFrameSize: c.hub.cfg.MaxFrameBytes, OnIntermediate: c.control,
	}
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.hub.cfg.PongWait))
		hdr, err := rd.NextFrame()
		if err != nil {
			c.readFailed(err, hdr)
			return
		}
		if hdr.OpCode.IsControl() {
			if err := c.control(hdr, rd); err != nil {
				return
			}
			continue
		}
		data, err := readMessage(rd, c.hub.cfg.MaxFrameBytes)
		if err != nil {
			c.readFailed(err, ws.Header{})
			return
		}
		if hdr.OpCode == ws.OpBinary {
			c.frame(encodeError(badRequest("binary frames are not supported; send JSON text frames")))
			continue
		}
		c.hub.onFrame(c, data)
	}
}

// readMessage reads one (possibly fragmented) message of at most limit
// bytes.
func readMessage(rd *wsutil.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, wsutil.ErrFrameTooLarge
	}
	return data, nil
}

// control answers a control frame: ping with pong, close with close.
func (c *conn) control(hdr ws.Header, r io.Reader) error {
	payload, err := io.ReadAll(io.LimitReader(r, 125))
	if err != nil {
		return err
	}
	switch hdr.OpCode {
	case ws.OpPing:
		c.mu.Lock()
		c.enqueueLocked(ws.OpPong, payload)
		c.mu.Unlock()
	case ws.OpClose:
		code, _ := ws.ParseCloseFrameData(payload)
		if code == 0 || code == ws.StatusNoStatusRcvd {
			code = ws.StatusNormalClosure
		}
		c.mu.Lock()
		c.peerClosed = true
		c.closeLocked(int(code), "")
		c.mu.Unlock()
		return errPeerClosed
	}
	return nil
}

// readFailed closes the connection with the code its read error calls
// for: 1009 for a frame over the limit, 1007 for invalid UTF-8, 1002 for a
// protocol violation; a socket error or timeout just ends it.
func (c *conn) readFailed(err error, hdr ws.Header) {
	switch {
	case errors.Is(err, wsutil.ErrFrameTooLarge):
		c.hub.log.Info("frame over the size limit", "event", "ws.too_large", "conn_id", c.id, "user_id", c.userID)
		c.close(int(ws.StatusMessageTooBig), "frame too large")
		// Read off the rest of the frame before the socket closes: closing
		// with unread data sends a TCP reset, which can destroy the close
		// frame in flight.
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		if hdr.Length > 0 {
			_, _ = io.CopyN(io.Discard, c.br, hdr.Length)
		} else {
			_, _ = io.Copy(io.Discard, c.br)
		}
	case errors.Is(err, wsutil.ErrInvalidUTF8):
		c.close(int(ws.StatusInvalidFramePayloadData), "text frame is not valid UTF-8")
	case isProtocolError(err):
		c.close(int(ws.StatusProtocolError), err.Error())
	default:
		c.hub.log.Debug("websocket read ended", "event", "ws.read_end", "conn_id", c.id, "err", err)
	}
}

func isProtocolError(err error) bool {
	var pe ws.ProtocolError
	return errors.As(err, &pe)
}

// --- tasks: database and broker work off the delivery path ---

// addTaskLocked queues fn for the task goroutine, starting it if needed.
// afterTasks queues frame p behind the tasks already queued (the syncs'
// replays, say).
func (c *conn) afterTasks(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addTaskLocked(func(context.Context) { c.frame(p) })
}

func (c *conn) addTaskLocked(fn func(ctx context.Context)) {
	if c.state != stateOpen {
		return
	}
	c.tasks = append(c.tasks, fn)
	if !c.working {
		c.working = true
		go c.taskLoop()
	}
}

func (c *conn) taskLoop() {
	for {
		c.mu.Lock()
		if len(c.tasks) == 0 || c.state != stateOpen {
			c.working, c.tasks = false, nil
			c.mu.Unlock()
			return
		}
		fn := c.tasks[0]
		c.tasks[0] = nil
		c.tasks = c.tasks[1:]
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, taskTimeout)
		fn(ctx)
		cancel()
	}
}

// catchUp runs once the connection is registered: membership re-checked,
// then every chat filled from its start.
func (c *conn) catchUp(ctx context.Context) {
	heads, err := c.hub.store.MemberChatHeads(ctx, c.userID)
	if err != nil {
		c.hub.log.Warn("membership check failed; closing", "event", "delivery.error", "conn_id", c.id, "err", err)
		c.close(1011, "membership check failed; retry")
		return
	}
	if !c.reconcile(ctx, heads, false) {
		return
	}
	for _, id := range c.chatIDs() {
		c.fill(ctx, id, false)
	}
}

// reconcile brings the connection's chats in line with the user's
// memberships (chat id to last seq): chats it is no longer in are cut off
// (their removal event was lost, or came before the connection existed);
// on /ws, chats joined meanwhile are followed (when follow is set). It
// also fills a chat whose stream stayed below what the previous periodic
// check saw (a publication was lost). It reports whether the connection
// stays open.
func (c *conn) reconcile(ctx context.Context, heads map[int64]int64, follow bool) bool {
	var behind []int64
	c.mu.Lock()
	for id, st := range c.streams {
		last, ok := heads[id]
		if !ok {
			if c.state == stateOpen {
				c.enqueueLocked(ws.OpText, mustJSON(gen.MemberRemovedFrame{Type: gen.MemberRemoved, ChatID: id, UserID: c.userID}))
			}
			c.cutLocked(id)
			continue
		}
		if st.behind > st.last && st.fillAt.IsZero() {
			behind = append(behind, id)
		}
		st.behind = last
	}
	open := c.state == stateOpen
	var missing []int64
	if open && follow && c.chatID == 0 {
		for id := range heads {
			if c.streams[id] == nil {
				missing = append(missing, id)
			}
		}
	}
	c.mu.Unlock()
	if !open {
		return false
	}
	for _, id := range missing {
		if c.follow(ctx, id, heads[id]) {
			c.fill(ctx, id, true)
		}
	}
	for _, id := range behind {
		c.fill(ctx, id, true)
	}
	return true
}

// follow starts delivering chatID on /ws from seq start: the stream is
// installed and indexed first, then the chat's subscription acquired, so
// nothing published after start is missed (the caller fills from start).
// It reports false when the subscription failed or the stream was cut
// meanwhile.
func (c *conn) follow(ctx context.Context, chatID, start int64) bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if c.streams[chatID] != nil {
		c.mu.Unlock()
		return true
	}
	st := newStream(start)
	c.streams[chatID] = st
	c.hub.index(c, chatID)
	c.mu.Unlock()
	channel := event.ChatChannel(chatID)
	err := c.hub.acquire(ctx, channel)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.hub.cfg.Metrics.BrokerError("subscribe")
		c.hub.log.Warn("subscribe failed", "event", "broker.error", "op", "subscribe", "conn_id", c.id, "chat_id", chatID, "err", err)
		if c.streams[chatID] == st {
			delete(c.streams, chatID)
			c.hub.unindex(c, chatID)
		}
		return false
	}
	if c.streams[chatID] != st || c.state == stateClosed {
		go c.hub.release(channel) // cut, or closed, while subscribing
		return false
	}
	st.subscribed = true
	return true
}

// unfollowLocked stops delivering chatID.
func (c *conn) unfollowLocked(chatID int64) {
	st := c.streams[chatID]
	if st == nil {
		return
	}
	delete(c.streams, chatID)
	delete(c.syncs, chatID)
	c.hub.unindex(c, chatID)
	if st.subscribed {
		go c.hub.release(event.ChatChannel(chatID)) // network I/O: not under mu
	}
}

// join follows a chat the user was just added to (on /ws only). The join
// reached the connection through the user's channel; membership is checked
// again once the subscription has taken effect, since a removal that
// committed meanwhile may have been published before the connection
// followed the chat. The member.added frames go out only for a chat the
// connection then follows.
func (c *conn) join(ctx context.Context, chatID int64, frames []json.RawMessage) {
	if c.chatID != 0 {
		return
	}
	ch, err := c.hub.store.ChatByID(ctx, chatID)
	if err != nil {
		return
	}
	if !c.follow(ctx, chatID, ch.LastSeq) {
		return
	}
	if _, err := c.hub.store.Member(ctx, chatID, c.userID); err != nil {
		c.mu.Lock()
		c.unfollowLocked(chatID)
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	if c.streams[chatID] != nil && c.state == stateOpen {
		for _, f := range frames {
			c.enqueueLocked(ws.OpText, f)
		}
	}
	c.mu.Unlock()
	c.fill(ctx, chatID, false)
}

// replay is where a sync (or a resume at the handshake) starts: after
// revision rev, or, for a resume by seq, after message seq (new messages
// only).
type replay struct {
	bySeq bool
	pos   int64 // the seq or the rev
	end   bool  // asked from past the chat's end
}

// requestSync queues a sync of chatID; syncs of one chat that wait in the
// queue collapse into the latest, so a burst of sync frames replays the
// chat once.
func (c *conn) requestSync(chatID int64, from replay) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.syncs == nil {
		c.syncs = map[int64]replay{}
	}
	_, queued := c.syncs[chatID]
	c.syncs[chatID] = from
	if !queued {
		c.addTaskLocked(func(ctx context.Context) { c.sync(ctx, chatID) })
	}
}

// sync replays chatID from the requested position, then continues live.
func (c *conn) sync(ctx context.Context, chatID int64) {
	c.mu.Lock()
	from, ok := c.syncs[chatID]
	delete(c.syncs, chatID)
	c.mu.Unlock()
	if !ok {
		return
	}
	c.mu.Lock()
	following := c.streams[chatID] != nil
	c.mu.Unlock()
	if from.end && following {
		// Already live from its own position: nothing to replay, and
		// moving it to the head read a moment ago could skip a message
		// committed since.
		c.fill(ctx, chatID, false)
		return
	}
	rev, minSeq := from.pos, int64(0)
	if from.bySeq {
		var err error
		if rev, err = c.hub.svc.RevAtSeq(ctx, chatID, from.pos); err != nil {
			c.frame(encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), chatID: chatID}))
			return
		}
		minSeq = from.pos
	}
	c.mu.Lock()
	st := c.streams[chatID]
	if st != nil {
		st.reset(rev)
		st.minSeq = minSeq
		c.armFillLocked()
	}
	c.mu.Unlock()
	if st == nil {
		if !c.follow(ctx, chatID, rev) {
			return
		}
		c.mu.Lock()
		if st := c.streams[chatID]; st != nil {
			st.minSeq = minSeq
		}
		c.mu.Unlock()
	}
	c.fill(ctx, chatID, false)
}

// fill delivers every stored message of chatID above the stream's
// position, page by page, keeping pace with the socket. With checkMember
// it first makes sure the user is still a member: a fill that repairs a
// gap or a lost publication must not deliver a chat whose removal event
// was lost.
func (c *conn) fill(ctx context.Context, chatID int64, checkMember bool) {
	if checkMember {
		if _, err := c.hub.store.Member(ctx, chatID, c.userID); errors.Is(err, repo.ErrNotFound) {
			c.mu.Lock()
			if c.streams[chatID] != nil && c.state == stateOpen {
				c.enqueueLocked(ws.OpText, mustJSON(gen.MemberRemovedFrame{Type: gen.MemberRemoved, ChatID: chatID, UserID: c.userID}))
				c.cutLocked(chatID)
			}
			c.mu.Unlock()
			return
		}
	}
	hb := c.hub.cfg.GapHoldback
	for {
		c.mu.Lock()
		st := c.streams[chatID]
		if st == nil || c.state != stateOpen {
			c.mu.Unlock()
			return
		}
		from, minSeq := st.last, st.minSeq
		c.mu.Unlock()

		ms, head, err := c.hub.svc.ChangesAfter(ctx, chatID, from, minSeq, fillPage)
		now := time.Now()
		c.mu.Lock()
		if c.streams[chatID] != st {
			c.mu.Unlock()
			return
		}
		if err == nil {
			st.readingOn()
		}
		if err != nil {
			c.hub.log.Warn("fill from the database failed", "event", "delivery.error", "conn_id", c.id, "chat_id", chatID, "err", err)
			st.filled(now, hb)
			c.armFillLocked()
			c.mu.Unlock()
			return
		}
		out := c.scratch[:0]
		for _, m := range ms {
			raw := mustJSON(m.API())
			out = st.offer(entry{it: newItem(chatID, m.Rev, m.CreatedRev, m.Seq, m.SenderID, m.ClientMsgID, raw, 0)}, now, hb, c.hold, out)
		}
		done := len(ms) < fillPage
		if done {
			// Every change up to head has been read: revs below it that
			// did not come were superseded (or, in a resume by seq, are
			// changes of older messages, which it leaves out).
			out = st.raise(head, true, now, hb, c.hold, out)
			st.minSeq = 0
		} else {
			out = st.raise(ms[len(ms)-1].Rev, false, now, hb, c.hold, out)
		}
		c.emitLocked(out)
		c.scratch = out[:0]
		if !done && st.last == from {
			// A full page, and nothing of it delivered: the stream waits
			// for the ack of the socket's own message at its head. The
			// rest is read once the ack lets the stream past it.
			st.cutAtHold()
		}
		if done || st.last == from {
			st.filled(now, hb)
			c.armFillLocked()
			done = true
		}
		c.mu.Unlock()
		if done || !c.waitSpace(ctx) {
			return
		}
	}
}

// armFillLocked sets the fill timer to the earliest due fill.
func (c *conn) armFillLocked() {
	var next time.Time
	for _, st := range c.streams {
		if !st.fillAt.IsZero() && (next.IsZero() || st.fillAt.Before(next)) {
			next = st.fillAt
		}
	}
	if next.IsZero() {
		if c.fillTimer != nil {
			c.fillTimer.Stop()
		}
		return
	}
	d := max(0, time.Until(next))
	if c.fillTimer == nil {
		c.fillTimer = time.AfterFunc(d, c.fillsDue)
	} else {
		c.fillTimer.Reset(d)
	}
}

// fillsDue queues a fill for every stream whose hold-back has passed.
func (c *conn) fillsDue() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for id, st := range c.streams {
		if st.fillDue(now) {
			// Until the fill runs, push the schedule out so the timer does
			// not fire again for the same gap.
			st.fillAt = now.Add(taskTimeout)
			c.addTaskLocked(func(ctx context.Context) { c.fill(ctx, id, true) })
		}
	}
	c.armFillLocked()
}
