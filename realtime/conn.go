package realtime

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// msgItem is one message on its way to connections. Items from the broker
// are shared by every connection of the chat and never modified.
type msgItem struct {
	seq    int64
	sender int64
	cmid   string
	msg    json.RawMessage // the encoded gen.Message
	frame  []byte          // the message.new frame, encoded once
	sentAt int64           // unix nanoseconds when stored; 0 when unknown
}

// The events a connection's actor handles, in inbox order.
type (
	event     any
	evMessage struct {
		chatID int64
		it     *msgItem
	}
	evForward struct {
		chatID int64
		frames []json.RawMessage
	}
	evRemoved struct {
		chatID, userID int64
		frames         []json.RawMessage
	}
	evJoin struct {
		chatID int64
		frames []json.RawMessage
	}
	evAck struct {
		chatID int64
		it     *msgItem
		dup    bool
	}
	evSendFailed struct {
		chatID int64
		cmid   string
		frame  []byte
	}
	evSync    struct{ chatID, since int64 }
	evCatchup struct{}
	evRefill  struct{ chatID int64 }
	evRejoin  struct{}
	evFrame   struct{ frame []byte }
	evClose   struct {
		code   int
		reason string
	}
)

// chatState is one chat's delivery position on one connection.
type chatState struct {
	last     int64                // highest seq delivered (or acked) here
	pending  map[int64]pendingMsg // arrived above last+1, waiting for the gap
	gapSince time.Time            // when the oldest unfilled gap was seen
}

type pendingMsg struct {
	it  *msgItem
	ack bool // answer with message.ack: this connection sent it
}

// conn is one WebSocket connection. Its actor goroutine owns the chat
// states and is the only writer to the session, so frames leave in the
// order the actor decides. Other goroutines talk to it through push.
type conn struct {
	hub     *Hub
	id      int64
	userID  int64
	chatID  int64 // the chat of /ws/{chat_id}; 0 on /ws
	sess    *melody.Session
	ctx     context.Context // the request's; ends with the connection
	expires time.Time

	inbox   chan event
	queued  atomic.Int64  // frames handed to the session, not yet written
	drained chan struct{} // signalled when the session writes a frame
	done    chan struct{} // closed when the connection has ended
	closing atomic.Bool

	registered bool          // set by onConnect before the actor starts
	actorDone  chan struct{} // closed when the actor has returned
	limiter    *tokenBucket  // used by the read goroutine only

	// sending holds this connection's sends between the read goroutine
	// starting them and the actor answering them, so that a message the
	// connection sent is answered with message.ack, never message.new, even
	// when a database fill reads it before the ack is handled.
	sendMu  sync.Mutex
	sending map[sendKey]struct{}

	// Owned by the actor goroutine.
	chats map[int64]*chatState
	timer *time.Timer
}

type sendKey struct {
	chatID int64
	cmid   string
}

func (c *conn) startSend(k sendKey) {
	c.sendMu.Lock()
	c.sending[k] = struct{}{}
	c.sendMu.Unlock()
}

func (c *conn) endSend(k sendKey) {
	c.sendMu.Lock()
	delete(c.sending, k)
	c.sendMu.Unlock()
}

func (c *conn) isSending(k sendKey) bool {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	_, ok := c.sending[k]
	return ok
}

func newConn(h *Hub, userID, chatID int64, starts map[int64]int64, expires time.Time) *conn {
	c := &conn{
		hub: h, id: h.connSeq.Add(1), userID: userID, chatID: chatID, expires: expires,
		inbox: make(chan event, h.cfg.InboxSize), drained: make(chan struct{}, 1), done: make(chan struct{}),
		actorDone: make(chan struct{}),
		chats:     make(map[int64]*chatState, len(starts)), sending: map[sendKey]struct{}{},
	}
	if h.cfg.SendRate > 0 {
		c.limiter = newTokenBucket(h.cfg.SendRate, h.cfg.SendBurst)
	}
	for id, last := range starts {
		c.chats[id] = &chatState{last: last}
	}
	return c
}

func (c *conn) chatIDs() []int64 {
	ids := make([]int64, 0, len(c.chats))
	for id := range c.chats {
		ids = append(ids, id)
	}
	return ids
}

// push hands ev to the actor without blocking. A connection whose inbox is
// full cannot keep up: it is closed (4008) so it resyncs, instead of
// holding up anyone else.
func (c *conn) push(ev event) {
	select {
	case <-c.done:
	case c.inbox <- ev:
	default:
		c.closeNow(CloseSlowConsumer, "slow consumer: event queue full")
	}
}

// run is the actor loop; it ends with the connection.
func (c *conn) run() {
	defer close(c.actorDone)
	c.timer = time.NewTimer(time.Hour)
	c.timer.Stop()
	var expiry <-chan time.Time
	if !c.expires.IsZero() {
		t := time.NewTimer(time.Until(c.expires))
		defer t.Stop()
		expiry = t.C
	}
	for {
		select {
		case <-c.done:
			return
		case ev := <-c.inbox:
			c.handle(ev)
		case <-c.timer.C:
			c.fillGaps(false)
		case <-expiry:
			c.closeGracefully(CloseTokenExpired, "token expired")
		}
		c.armTimer()
	}
}

func (c *conn) handle(ev event) {
	switch ev := ev.(type) {
	case evMessage:
		if cs := c.chats[ev.chatID]; cs != nil {
			c.offer(ev.chatID, cs, pendingMsg{it: ev.it})
		}
	case evForward:
		if c.chats[ev.chatID] != nil {
			for _, f := range ev.frames {
				c.write(f)
			}
		}
	case evRemoved:
		if c.chats[ev.chatID] == nil {
			return
		}
		for _, f := range ev.frames {
			c.write(f)
		}
		if ev.userID != c.userID {
			return
		}
		if c.chatID == ev.chatID {
			c.closeGracefully(CloseRemoved, "removed from the chat")
			return
		}
		c.unfollow(ev.chatID)
	case evJoin:
		c.join(ev.chatID, ev.frames)
	case evRejoin:
		c.rejoin()
	case evAck:
		c.acked(ev)
	case evSendFailed:
		c.endSend(sendKey{ev.chatID, ev.cmid})
		c.write(ev.frame)
		c.drainAll()
	case evSync:
		c.sync(ev.chatID, ev.since)
	case evCatchup:
		if c.revalidate() {
			c.fillGaps(true)
		}
	case evRefill:
		if cs := c.chats[ev.chatID]; cs != nil {
			c.fill(ev.chatID, cs)
		}
	case evFrame:
		c.write(ev.frame)
	case evClose:
		c.closeGracefully(ev.code, ev.reason)
	}
}

// offer takes a message for chatID and delivers whatever is now in order.
func (c *conn) offer(chatID int64, cs *chatState, p pendingMsg) {
	if p.it.seq <= cs.last {
		return // already delivered: a repeat from another path
	}
	if cs.pending == nil {
		cs.pending = map[int64]pendingMsg{}
	}
	if old, ok := cs.pending[p.it.seq]; !ok || p.ack && !old.ack {
		cs.pending[p.it.seq] = p
	}
	c.drain(chatID, cs)
}

// drain delivers consecutive pending messages. It stops at a gap, and at a
// message this connection is sending until the send's outcome is known.
func (c *conn) drain(chatID int64, cs *chatState) {
	for {
		p, ok := cs.pending[cs.last+1]
		if !ok {
			break
		}
		if !p.ack && p.it.sender == c.userID && c.isSending(sendKey{chatID, p.it.cmid}) {
			break // ours, still in flight: the ack decides how to answer
		}
		delete(cs.pending, p.it.seq)
		if p.ack {
			c.write(ackFrame(p.it.cmid, false, p.it.msg))
		} else {
			c.write(p.it.frame)
			c.hub.delivered(p.it)
		}
		cs.last = p.it.seq
	}
	switch {
	case len(cs.pending) == 0:
		cs.gapSince = time.Time{}
	case cs.gapSince.IsZero():
		cs.gapSince = time.Now()
	}
}

func (c *conn) drainAll() {
	for id, cs := range c.chats {
		c.drain(id, cs)
	}
}

// acked answers this connection's own send.
func (c *conn) acked(ev evAck) {
	c.endSend(sendKey{ev.chatID, ev.it.cmid})
	cs := c.chats[ev.chatID]
	if ev.dup || cs == nil || ev.it.seq <= cs.last {
		// A repeat, or a chat this connection does not follow: answer now.
		c.write(ackFrame(ev.it.cmid, ev.dup, ev.it.msg))
		c.drainAll()
		return
	}
	c.offer(ev.chatID, cs, pendingMsg{it: ev.it, ack: true})
	c.drainAll()
}

// armTimer sets the gap timer to the earliest hold-back deadline.
func (c *conn) armTimer() {
	var next time.Time
	for _, cs := range c.chats {
		if !cs.gapSince.IsZero() && (next.IsZero() || cs.gapSince.Before(next)) {
			next = cs.gapSince
		}
	}
	c.timer.Stop()
	if !next.IsZero() {
		c.timer.Reset(max(0, time.Until(next.Add(c.hub.cfg.GapHoldback))))
	}
}

// fillGaps reads from the database what the broker did not bring: for
// chats whose gap outlived the hold-back, or for every chat (all=true)
// right after the connection's subscriptions took effect.
func (c *conn) fillGaps(all bool) {
	now := time.Now()
	for id, cs := range c.chats {
		if all || !cs.gapSince.IsZero() && now.Sub(cs.gapSince) >= c.hub.cfg.GapHoldback {
			c.fill(id, cs)
		}
	}
}

// fill delivers every stored message of chatID above the connection's
// position, page by page.
func (c *conn) fill(chatID int64, cs *chatState) {
	const page = 500
	for {
		ms, err := c.hub.svc.MessagesAfter(c.ctx, chatID, cs.last, page)
		if err != nil {
			c.hub.log.Warn("refill from the database failed", "event", "delivery.error", "conn_id", c.id, "chat_id", chatID, "err", err)
			if cs.gapSince.IsZero() {
				cs.gapSince = time.Now() // try again after the hold-back
			}
			return
		}
		before := cs.last
		for _, m := range ms {
			raw := mustJSON(m.API())
			c.offer(chatID, cs, pendingMsg{it: &msgItem{seq: m.Seq, sender: m.SenderID, cmid: m.ClientMsgID, msg: raw, frame: newFrame(raw)}})
		}
		if len(ms) < page || cs.last == before || c.closing.Load() {
			return
		}
	}
}

// sync replays every message above since, then continues live.
func (c *conn) sync(chatID, since int64) {
	cs := c.chats[chatID]
	if cs == nil {
		// On /ws, a chat the connection does not follow yet (the caller
		// checked membership): follow it from since.
		if !c.follow(chatID) {
			return
		}
		cs = c.chats[chatID]
	}
	cs.last, cs.pending, cs.gapSince = since, nil, time.Time{}
	c.fill(chatID, cs)
}

// follow subscribes the connection to chatID, starting at its position
// zero; the caller sets the position.
func (c *conn) follow(chatID int64) bool {
	if err := c.hub.acquire(c.ctx, chatChannel(chatID)); err != nil {
		c.hub.cfg.Metrics.BrokerError("subscribe")
		c.hub.log.Warn("subscribe failed", "event", "broker.error", "op", "subscribe", "conn_id", c.id, "chat_id", chatID, "err", err)
		return false
	}
	c.chats[chatID] = &chatState{}
	c.hub.index(c, chatID)
	return true
}

// revalidate re-checks the connection's memberships once its
// subscriptions have taken effect. The upgrade checked them before the
// connection was registered, so a removal that committed in between was
// published to nobody who knew of this connection; from here on every
// removal reaches it through the broker. A per-chat connection that is no
// longer a member closes with 4403; /ws drops such chats. It reports
// whether the connection stays open.
func (c *conn) revalidate() bool {
	heads, err := c.hub.store.MemberChatHeads(c.ctx, c.userID)
	if err != nil {
		c.hub.log.Warn("membership re-check failed; closing", "event", "delivery.error", "conn_id", c.id, "err", err)
		c.closeGracefully(1011, "membership check failed; retry")
		return false
	}
	for id := range c.chats {
		if _, ok := heads[id]; ok {
			continue
		}
		if c.chatID == id {
			c.closeGracefully(CloseRemoved, "removed from the chat")
			return false
		}
		c.unfollow(id)
	}
	return true
}

// unfollow stops delivering chatID to the connection.
func (c *conn) unfollow(chatID int64) {
	delete(c.chats, chatID)
	c.hub.unindex(c, chatID)
	c.hub.release(chatChannel(chatID))
}

// join starts delivering a chat the user was just added to (on /ws only),
// from the chat's current last seq. Membership is checked again once the
// chat's subscription has taken effect: a removal that committed while the
// join waited in the inbox would otherwise be missed for good.
func (c *conn) join(chatID int64, frames []json.RawMessage) {
	if c.chatID != 0 {
		return
	}
	if c.chats[chatID] == nil {
		if !c.follow(chatID) {
			return
		}
		if _, err := c.hub.store.Member(c.ctx, chatID, c.userID); err != nil {
			c.unfollow(chatID) // removed meanwhile (or unknown): do not follow
			return
		}
		if ch, err := c.hub.store.ChatByID(c.ctx, chatID); err == nil {
			c.chats[chatID].last = ch.LastSeq
		}
	}
	for _, f := range frames {
		c.write(f)
	}
}

// rejoin follows chats the user joined while the broker was away.
func (c *conn) rejoin() {
	heads, err := c.hub.store.MemberChatHeads(c.ctx, c.userID)
	if err != nil {
		return
	}
	for id, last := range heads {
		if c.chats[id] == nil && c.follow(id) {
			c.chats[id].last = last
		}
	}
}

// write queues frame on the session. It waits while the session's queue is
// full; a peer that does not drain it within the write timeout is closed.
func (c *conn) write(frame []byte) {
	if c.closing.Load() {
		return
	}
	limit := int64(c.hub.cfg.QueueSize) - 2 // room for the close frame
	if c.queued.Load() >= limit {
		deadline := time.NewTimer(c.hub.cfg.WriteTimeout)
		defer deadline.Stop()
		for c.queued.Load() >= limit {
			select {
			case <-c.drained:
			case <-c.done:
				return
			case <-deadline.C:
				c.closeNow(CloseSlowConsumer, "slow consumer: socket not drained")
				return
			}
		}
	}
	c.queued.Add(1)
	if err := c.sess.Write(frame); err != nil {
		c.queued.Add(-1)
	}
}

// sent is called by the session after it wrote a text frame.
func (c *conn) sent() {
	c.queued.Add(-1)
	select {
	case c.drained <- struct{}{}:
	default:
	}
}

// closeGracefully queues a close frame after what is already queued.
func (c *conn) closeGracefully(code int, reason string) {
	if c.closing.Swap(true) {
		return
	}
	c.hub.log.Info("closing connection", "event", "ws.closing", "conn_id", c.id, "user_id", c.userID, "code", code, "reason", reason)
	_ = c.sess.CloseWithMsg(melody.FormatCloseMessage(code, reason))
}

// closeNow sends a close frame ahead of anything queued and drops the
// connection: for peers that are not reading.
func (c *conn) closeNow(code int, reason string) {
	if c.closing.Swap(true) {
		return
	}
	c.hub.log.Warn("dropping connection", "event", "ws.dropped", "conn_id", c.id, "user_id", c.userID, "code", code, "reason", reason)
	c.hub.slowClosed()
	ws := c.sess.WebsocketConnection()
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = ws.Close()
}

// tokenBucket is a small token-bucket rate limiter.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

func (b *tokenBucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
