// Package realtime delivers WinDI Chat's live events over WebSocket: a hub
// that indexes this replica's connections by chat and by user, subscribes
// to a chat's broker channel while it has local connections, and fans every
// envelope (package event) out to them; and connections that keep each
// chat's messages exactly once, in seq order and without gaps, filling
// from the database what the broker did not bring.
//
// Delivery path: chat.Service commits a batch and publishes one envelope
// per chat on the chat's channel. Every replica with connections in that
// chat receives it once (Hub.Receive, on the broker's goroutine), builds
// each message.new frame once, and offers the messages to each
// connection's ordering state machine inline; what is in order is queued
// on the connection, whose writer goroutine writes everything queued in
// one system call. A connection that cannot keep up is dropped (4008)
// instead of slowing anyone else.
package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/metrics"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
)

// Config tunes the hub. Zero values take the defaults noted; a negative
// rate turns that limit off.
type Config struct {
	// Replica names this process in presence entries; default host-pid.
	Replica string
	// AllowedOrigins may open WebSockets from a browser besides the same
	// host; "*" allows any.
	AllowedOrigins []string
	// PingPeriod and PongWait are the heartbeat: a peer silent for PongWait
	// is dropped. Defaults 25s and 30s.
	PingPeriod, PongWait time.Duration
	// QueueSize is how many frames may wait for a connection's socket; a
	// connection whose queue overflows is dropped as a slow consumer
	// (4008). Frames are shared between connections, so a queued frame
	// costs a slice header. Default 1024.
	QueueSize int
	// GapHoldback is how long a connection waits for a missing seq before
	// it reads the gap from the database; default 100ms.
	GapHoldback time.Duration
	// SendRate and SendBurst limit message.send frames per connection;
	// defaults 20/s and 200.
	SendRate  float64
	SendBurst int
	// SyncRate/SyncBurst and ReadRate/ReadBurst limit sync and message.read
	// frames per connection; defaults 2/s burst 10 and 20/s burst 100.
	SyncRate  float64
	SyncBurst int
	ReadRate  float64
	ReadBurst int
	// MaxConnsPerUser caps a user's open connections on this replica, and
	// MaxConns all of them; 0 is no cap.
	MaxConnsPerUser int
	MaxConns        int
	// MaxFrameBytes is the largest client message; default 64 KiB. Larger
	// ones close the connection with 1009.
	MaxFrameBytes int64
	// Metrics records connections, deliveries and broker errors; may be nil.
	Metrics *metrics.Metrics
	// WriteTimeout bounds one write to a socket (and how long a replay
	// waits for the socket to drain); a peer that does not read within it
	// is dropped. Default 10s.
	WriteTimeout time.Duration
	// PresenceTTL must match the broker's; this replica refreshes its
	// presence entries every third of it. Default 45s.
	PresenceTTL time.Duration
	// CheckEvery is how often every connection's memberships are checked
	// against the database (a removal whose event was lost cuts the member
	// off within it) and lost publications repaired; default PresenceTTL/3.
	CheckEvery time.Duration
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Replica == "" {
		host, _ := os.Hostname()
		c.Replica = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano()%1e6)
	}
	if c.PingPeriod <= 0 {
		c.PingPeriod = 25 * time.Second
	}
	if c.PongWait <= 0 {
		c.PongWait = 30 * time.Second
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.GapHoldback <= 0 {
		c.GapHoldback = 100 * time.Millisecond
	}
	if c.SendRate == 0 {
		c.SendRate = 20
	}
	if c.SendBurst <= 0 {
		c.SendBurst = 200
	}
	if c.SyncRate == 0 {
		c.SyncRate, c.SyncBurst = 2, 10
	}
	if c.ReadRate == 0 {
		c.ReadRate, c.ReadBurst = 20, 100
	}
	if c.SyncRate < 0 {
		c.SyncRate, c.SyncBurst = float64(1<<30), 1<<30
	}
	if c.ReadRate < 0 {
		c.ReadRate, c.ReadBurst = float64(1<<30), 1<<30
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = 45 * time.Second
	}
	if c.CheckEvery <= 0 {
		c.CheckEvery = c.PresenceTTL / 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Hub is this replica's side of realtime delivery: the index of its
// connections by chat and by user, the broker subscriptions they need,
// and the handler of what the broker delivers.
type Hub struct {
	cfg    Config
	svc    *chat.Service
	store  *repo.Store
	broker broker.Broker
	log    *slog.Logger
	ctx    context.Context // parent of every connection's; ends at Shutdown
	cancel context.CancelFunc

	// mu guards the maps and counters below. It is never held while
	// writing to a socket or calling the broker, and never taken before a
	// connection's mutex (a connection may take mu while holding its own).
	mu       sync.RWMutex
	byChat   map[int64]map[*conn]struct{}
	byUser   map[int64]map[*conn]struct{}
	users    map[int64]int // live and reserved connections per user
	total    int           // live and reserved connections
	subs     map[string]*subscription
	closing  bool
	slices   sync.Pool // []*conn snapshots for fan-out
	connSeq  atomic.Int64
	live     sync.WaitGroup // one per registered connection, done after unregister
	presence chan presenceOp
	stop     chan struct{}
	loopDone chan struct{}
}

// subscription counts local users of one broker channel. Its mutex
// serializes subscribing and unsubscribing the channel.
type subscription struct {
	mu         sync.Mutex
	refs       int // guarded by Hub.mu
	subscribed bool
}

type presenceOp struct {
	userID int64
	online bool
}

var _ broker.Handler = (*Hub)(nil)

// New returns a hub delivering through b. It starts b with itself as the
// handler and runs the presence heartbeat and the periodic checks until
// Shutdown.
func New(cfg Config, svc *chat.Service, store *repo.Store, b broker.Broker) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{
		cfg: cfg, svc: svc, store: store, broker: b,
		log:    cfg.Logger.With("component", "realtime", "replica", cfg.Replica),
		byChat: map[int64]map[*conn]struct{}{}, byUser: map[int64]map[*conn]struct{}{},
		users: map[int64]int{}, subs: map[string]*subscription{},
		presence: make(chan presenceOp, 4096), stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	b.Start(h)
	go h.loop()
	return h
}

// Replica is this hub's replica name.
func (h *Hub) Replica() string { return h.cfg.Replica }

// Receive implements broker.Handler: one decode per envelope, one frame
// per message, then each connection's state machine, inline.
func (h *Hub) Receive(channel string, payload []byte) {
	env, err := event.Decode(payload)
	if err != nil {
		h.cfg.Metrics.BrokerError("decode")
		h.log.Error("undecodable broker payload", "event", "broker.error", "op", "decode", "channel", channel, "err", err)
		return
	}
	kind, _, _ := event.ParseChannel(channel)
	switch env.Kind {
	case event.Messages:
		items := make([]*item, len(env.Items))
		for i, it := range env.Items {
			items[i] = newItem(env.ChatID, it.Rev, it.CreatedRev, it.Seq, it.Sender, it.CMID, it.Msg, env.SentAt)
		}
		now := time.Now()
		h.each(h.connsOfChat(env.ChatID), func(c *conn) { c.deliver(env.ChatID, items, env.Frames, now) })
	case event.Forward:
		h.each(h.connsOfChat(env.ChatID), func(c *conn) { c.forward(env.ChatID, env.UserID, env.Frames) })
	case event.Removed:
		conns := h.connsOfChat(env.ChatID)
		if kind == "user" {
			conns = h.connsOfUser(env.UserID, false)
		}
		h.each(conns, func(c *conn) { c.removed(env.ChatID, env.UserID, env.Frames) })
	case event.Revoked:
		h.svc.NoteRevoked(env.Sessions...)
		h.closeRevoked(h.connsOfUser(env.UserID, false))
	case event.Join:
		h.each(h.connsOfUser(env.UserID, true), func(c *conn) {
			c.mu.Lock()
			c.addTaskLocked(func(ctx context.Context) { c.join(ctx, env.ChatID, env.Frames) })
			c.mu.Unlock()
		})
	default:
		h.cfg.Metrics.BrokerError("decode")
		h.log.Error("unknown broker envelope", "event", "broker.error", "op", "decode", "kind", env.Kind)
	}
}

// Resubscribed implements broker.Handler: the broker lost its connection,
// so messages may have been missed; every affected connection refills from
// the database, and all-chats connections reconcile their chats.
func (h *Hub) Resubscribed(channels []string) {
	h.log.Warn("broker resubscribed; refilling from the database", "event", "broker.resubscribed", "channels", len(channels))
	for _, ch := range channels {
		kind, id, ok := event.ParseChannel(ch)
		switch {
		case ch == event.SessionsChannel:
			// Revocations may have been missed: the database has them.
			go h.reloadRevocations()
		case !ok:
		case kind == "chat":
			h.each(h.connsOfChat(id), func(c *conn) {
				c.mu.Lock()
				c.addTaskLocked(func(ctx context.Context) { c.fill(ctx, id, true) })
				c.mu.Unlock()
			})
		case kind == "user":
			h.each(h.connsOfUser(id, false), func(c *conn) {
				c.mu.Lock()
				c.addTaskLocked(func(ctx context.Context) {
					if heads, err := h.store.MemberChatHeads(ctx, c.userID); err == nil {
						c.reconcile(ctx, heads, true)
					}
				})
				c.mu.Unlock()
			})
		}
	}
}

// Start subscribes this replica to the sessions channel, then reads the
// recent revocations from the database (in that order, so that none falls
// in between): call it once, before the server takes requests.
func (h *Hub) Start(ctx context.Context) error {
	if err := h.acquire(ctx, event.SessionsChannel); err != nil {
		return fmt.Errorf("realtime: subscribe to %s: %w", event.SessionsChannel, err)
	}
	return h.svc.LoadRevocations(ctx)
}

// reloadRevocations refreshes the revocation cache from the database and
// closes this replica's connections of sessions revoked meanwhile.
func (h *Hub) reloadRevocations() {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if err := h.svc.LoadRevocations(ctx); err != nil {
		h.log.Warn("revocations not reloaded", "event", "session.reload_failed", "err", err)
		return
	}
	h.mu.RLock()
	all := h.snapshot()
	for _, set := range h.byUser {
		for c := range set {
			*all = append(*all, c)
		}
	}
	h.mu.RUnlock()
	h.closeRevoked(all)
}

// closeRevoked closes, with 4401, the connections of the snapshot whose
// session is revoked.
func (h *Hub) closeRevoked(conns *[]*conn) {
	h.each(conns, func(c *conn) {
		if h.svc.SessionRevoked(c.sessID) {
			c.close(CloseRevoked, "session revoked")
		}
	})
}

// each calls fn for every connection of a snapshot and recycles it.
func (h *Hub) each(conns *[]*conn, fn func(*conn)) {
	for _, c := range *conns {
		fn(c)
	}
	clear(*conns)
	*conns = (*conns)[:0]
	h.slices.Put(conns)
}

func (h *Hub) snapshot() *[]*conn {
	if p, ok := h.slices.Get().(*[]*conn); ok {
		return p
	}
	s := make([]*conn, 0, 64)
	return &s
}

func (h *Hub) connsOfChat(chatID int64) *[]*conn {
	out := h.snapshot()
	h.mu.RLock()
	for c := range h.byChat[chatID] {
		*out = append(*out, c)
	}
	h.mu.RUnlock()
	return out
}

// connsOfUser lists the user's connections; allOnly keeps the all-chats
// ones.
func (h *Hub) connsOfUser(userID int64, allOnly bool) *[]*conn {
	out := h.snapshot()
	h.mu.RLock()
	for c := range h.byUser[userID] {
		if !allOnly || c.chatID == 0 {
			*out = append(*out, c)
		}
	}
	h.mu.RUnlock()
	return out
}

// acquire subscribes this replica to channel unless a local connection
// already holds it; it returns once the subscription is confirmed.
func (h *Hub) acquire(ctx context.Context, channel string) error {
	h.mu.Lock()
	s := h.subs[channel]
	if s == nil {
		s = &subscription{}
		h.subs[channel] = s
	}
	s.refs++
	h.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subscribed {
		return nil
	}
	if err := h.broker.Subscribe(ctx, channel); err != nil {
		h.mu.Lock()
		s.refs--
		if s.refs == 0 && h.subs[channel] == s {
			delete(h.subs, channel)
		}
		h.mu.Unlock()
		return err
	}
	s.subscribed = true
	return nil
}

// release drops one local user of channel and unsubscribes after the last.
func (h *Hub) release(channel string) {
	h.mu.Lock()
	s := h.subs[channel]
	if s == nil {
		h.mu.Unlock()
		return
	}
	s.refs--
	last := s.refs == 0
	h.mu.Unlock()
	if !last {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h.mu.Lock()
	if s.refs != 0 || h.subs[channel] != s {
		h.mu.Unlock()
		return // someone acquired it again meanwhile
	}
	delete(h.subs, channel)
	h.mu.Unlock()
	if s.subscribed {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.broker.Unsubscribe(ctx, channel); err != nil {
			h.cfg.Metrics.BrokerError("unsubscribe")
			h.log.Warn("broker unsubscribe failed", "event", "broker.error", "op", "unsubscribe", "channel", channel, "err", err)
		}
		s.subscribed = false
	}
}

// index adds c to chatID's connections.
func (h *Hub) index(c *conn, chatID int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.byChat[chatID]
	if set == nil {
		set = map[*conn]struct{}{}
		h.byChat[chatID] = set
	}
	set[c] = struct{}{}
}

// unindex removes c from chatID's connections.
func (h *Hub) unindex(c *conn, chatID int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unindexLocked(c, chatID)
}

func (h *Hub) unindexLocked(c *conn, chatID int64) {
	if set := h.byChat[chatID]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.byChat, chatID)
		}
	}
}

// Refusals of reserve.
var (
	errTooManyForUser = errors.New("too many open connections for this user")
	errTooMany        = errors.New("this server holds as many connections as it may; retry on another")
	errShuttingDown   = errors.New("server shutting down")
)

// reserve counts a connection of userID against the caps before its
// upgrade, so concurrent dials cannot exceed them; release the slot with
// unreserve when the connection does not get registered.
func (h *Hub) reserve(userID int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closing:
		return errShuttingDown
	case h.cfg.MaxConns > 0 && h.total >= h.cfg.MaxConns:
		return errTooMany
	case h.cfg.MaxConnsPerUser > 0 && h.users[userID] >= h.cfg.MaxConnsPerUser:
		return errTooManyForUser
	}
	h.total++
	h.users[userID]++
	return nil
}

func (h *Hub) unreserve(userID int64) (last bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	h.users[userID]--
	if h.users[userID] <= 0 {
		delete(h.users, userID)
		return true
	}
	return false
}

// register makes c live: subscribed to its user's channel and its chats,
// indexed, counted for presence. Its slot is reserved already. On error
// nothing of c remains registered and the slot is released.
func (h *Hub) register(ctx context.Context, c *conn) error {
	var acquired []string
	fail := func(err error) error {
		for _, ch := range acquired {
			h.release(ch)
		}
		h.unreserve(c.userID)
		return err
	}
	// Every connection follows its user's channel: removals reach it there
	// even for a chat it has not indexed yet, and /ws learns of joins.
	channels := []string{event.UserChannel(c.userID)}
	chats := c.chatIDs()
	for _, id := range chats {
		channels = append(channels, event.ChatChannel(id))
	}
	for _, ch := range channels {
		if err := h.acquire(ctx, ch); err != nil {
			return fail(err)
		}
		acquired = append(acquired, ch)
	}
	c.mu.Lock()
	for _, st := range c.streams {
		st.subscribed = true
	}
	c.mu.Unlock()
	h.mu.Lock()
	set := h.byUser[c.userID]
	first := set == nil
	if first {
		set = map[*conn]struct{}{}
		h.byUser[c.userID] = set
	}
	set[c] = struct{}{}
	for _, id := range chats {
		cs := h.byChat[id]
		if cs == nil {
			cs = map[*conn]struct{}{}
			h.byChat[id] = cs
		}
		cs[c] = struct{}{}
	}
	h.live.Add(1)
	h.mu.Unlock()
	if first {
		h.setPresence(presenceOp{userID: c.userID, online: true})
	}
	h.cfg.Metrics.ConnOpened()
	return nil
}

// unregister undoes register for a closed connection: indexed is every
// chat it was indexed under, subscribed those it held a subscription of.
func (h *Hub) unregister(c *conn, indexed, subscribed []int64) {
	h.mu.Lock()
	set := h.byUser[c.userID]
	delete(set, c)
	last := len(set) == 0
	if last {
		delete(h.byUser, c.userID)
	}
	for _, id := range indexed {
		h.unindexLocked(c, id)
	}
	h.mu.Unlock()
	h.unreserve(c.userID)
	for _, id := range subscribed {
		h.release(event.ChatChannel(id))
	}
	h.release(event.UserChannel(c.userID))
	if last {
		h.setPresence(presenceOp{userID: c.userID, online: false})
	}
	h.cfg.Metrics.ConnClosed()
	h.log.Info("connection closed", "event", "ws.closed", "conn_id", c.id, "user_id", c.userID, "chat_id", c.chatID)
	h.live.Done()
}

// setPresence queues a presence change for the loop, or applies it here
// once the loop has stopped.
func (h *Hub) setPresence(op presenceOp) {
	select {
	case h.presence <- op:
	case <-h.stop:
		h.applyPresence(op)
	}
}

// loop applies presence changes in order, refreshes this replica's
// presence entries every third of the TTL, and checks every connection's
// memberships every CheckEvery. It runs until Shutdown.
func (h *Hub) loop() {
	defer close(h.loopDone)
	refresh := time.NewTicker(h.cfg.PresenceTTL / 3)
	defer refresh.Stop()
	check := time.NewTicker(h.cfg.CheckEvery)
	defer check.Stop()
	for {
		select {
		case op := <-h.presence:
			h.applyPresence(op)
		case <-refresh.C:
			h.refreshPresence()
		case <-check.C:
			h.check()
			go h.reloadRevocations()
		case <-h.stop:
			for {
				select {
				case op := <-h.presence:
					h.applyPresence(op)
				default:
					return
				}
			}
		}
	}
}

func (h *Hub) applyPresence(op presenceOp) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var changed bool
	var err error
	if op.online {
		changed, err = h.broker.PresenceJoin(ctx, h.cfg.Replica, op.userID)
	} else {
		changed, err = h.broker.PresenceLeave(ctx, h.cfg.Replica, op.userID)
	}
	if err != nil {
		h.cfg.Metrics.BrokerError("presence")
		h.log.Warn("presence update failed", "event", "broker.error", "op", "presence", "user_id", op.userID, "err", err)
		return
	}
	if !changed {
		return
	}
	chats, err := h.store.MemberChatIDs(ctx, op.userID)
	if err != nil {
		h.log.Warn("presence: cannot list chats", "event", "presence.error", "user_id", op.userID, "err", err)
		return
	}
	h.log.Info("presence changed", "event", "presence", "user_id", op.userID, "online", op.online)
	pubs := make([]broker.Publication, len(chats))
	for i, id := range chats {
		frame := mustJSON(gen.PresenceFrame{Type: gen.Presence, ChatID: id, UserID: op.userID, Online: op.online})
		env := event.Envelope{Kind: event.Forward, ChatID: id, Frames: []json.RawMessage{frame}}
		pubs[i] = broker.Publication{Channel: event.ChatChannel(id), Payload: env.Encode()}
	}
	if err := h.broker.PublishMany(ctx, pubs); err != nil {
		h.cfg.Metrics.BrokerError("publish")
		h.log.Warn("presence publish failed", "event", "broker.error", "op", "publish", "user_id", op.userID, "err", err)
	}
}

func (h *Hub) localUsers() []int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ids := make([]int64, 0, len(h.byUser))
	for id := range h.byUser {
		ids = append(ids, id)
	}
	return ids
}

func (h *Hub) refreshPresence() {
	ids := h.localUsers()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.broker.PresenceRefresh(ctx, h.cfg.Replica, ids); err != nil {
		h.cfg.Metrics.BrokerError("presence_refresh")
		h.log.Warn("presence refresh failed", "event", "broker.error", "op", "presence_refresh", "err", err)
	}
}

// checkChunk is how many users' memberships one query of check reads.
const checkChunk = 500

// check reads the memberships of every local user and lets each
// connection reconcile with them: chats the user left are cut off even
// when their removal event was lost, and a stream still below what the
// previous check saw is refilled (a lost publication).
func (h *Hub) check() {
	ids := h.localUsers()
	for len(ids) > 0 {
		chunk := ids[:min(checkChunk, len(ids))]
		ids = ids[len(chunk):]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		heads, err := h.store.MemberHeadsOf(ctx, chunk)
		cancel()
		if err != nil {
			h.log.Warn("membership check failed", "event", "delivery.error", "err", err)
			return
		}
		for _, uid := range chunk {
			mine := heads[uid]
			if mine == nil {
				mine = map[int64]int64{}
			}
			h.each(h.connsOfUser(uid, false), func(c *conn) {
				c.mu.Lock()
				c.addTaskLocked(func(ctx context.Context) { c.reconcile(ctx, mine, true) })
				c.mu.Unlock()
			})
		}
	}
}

// Shutdown closes every connection with 1001 so clients move to another
// replica, waits for them to go (until ctx is done), and stops the loop,
// taking this replica's users offline.
func (h *Hub) Shutdown(ctx context.Context) {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return
	}
	h.closing = true
	var all []*conn
	for _, set := range h.byUser {
		for c := range set {
			all = append(all, c)
		}
	}
	h.mu.Unlock()
	for _, c := range all {
		c.close(1001, "server shutting down")
	}
	drained := make(chan struct{})
	go func() { h.live.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		h.log.Warn("shutdown: connections still open; closing them", "event", "server.stop", "open", h.Connections())
		for _, c := range all {
			_ = c.nc.Close()
		}
		<-drained
	}
	h.cancel()
	close(h.stop)
	<-h.loopDone
}

// Connections is the number of open WebSocket connections on this replica.
func (h *Hub) Connections() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, set := range h.byUser {
		n += len(set)
	}
	return n
}

func (h *Hub) slowClosed() { h.cfg.Metrics.SlowConsumer() }

func (h *Hub) delivered(it *item) {
	var at time.Time
	if it.sentAt > 0 {
		at = time.Unix(0, it.sentAt)
	}
	h.cfg.Metrics.Delivered(at)
}
