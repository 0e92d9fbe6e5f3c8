// Package realtime delivers WinDI Chat's live events over WebSocket: a hub
// that indexes this replica's connections by chat and by user, subscribes
// to a chat's broker channel while it has local connections, and fans every
// event out to them; and per-connection actors that keep each chat's
// messages exactly once, in seq order and without gaps, filling from the
// database what the broker did not bring.
//
// Delivery path: chat.Service commits a message, then calls the hub's
// MessageStored, which publishes one envelope on the chat's channel. Every
// replica with connections in that chat receives it once, encodes the
// message.new frame once, and hands it to each connection's inbox. A
// connection's actor orders it by seq, holds back briefly on a gap and
// fills the gap from the database, and writes the frame to the socket
// queue; a connection that cannot keep up is closed (4008) instead of
// slowing anyone else.
package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/metrics"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
)

// Config tunes the hub. Zero values take the defaults noted.
type Config struct {
	// Replica names this process in presence entries; default host-pid.
	Replica string
	// AllowedOrigins may open WebSockets from a browser besides the same
	// host; "*" allows any.
	AllowedOrigins []string
	// PingPeriod and PongWait are the heartbeat: a peer silent for PongWait
	// is dropped. Defaults 25s and 30s.
	PingPeriod, PongWait time.Duration
	// QueueSize is the per-connection outbound frame queue; default 128.
	QueueSize int
	// InboxSize is the per-connection event inbox; default 256. Both are
	// allocated per connection, so they are what an idle connection costs.
	InboxSize int
	// GapHoldback is how long a connection waits for a missing seq before
	// it reads the gap from the database; default 100ms.
	GapHoldback time.Duration
	// SendRate and SendBurst limit message.send frames per connection
	// (token bucket); defaults 20/s and 200. A negative SendRate disables
	// the limit.
	SendRate  float64
	SendBurst int
	// MaxConnsPerUser caps a user's open connections on this replica;
	// 0 is no cap.
	MaxConnsPerUser int
	// DedupTTL is how long the fast duplicate guard remembers a send;
	// default 1h. The database key remembers for ever.
	DedupTTL time.Duration
	// MaxFrameBytes is the largest client frame; default 64 KiB. Larger
	// frames close the connection with 1009.
	MaxFrameBytes int64
	// Metrics records connections, deliveries and broker errors; may be nil.
	Metrics *metrics.Metrics
	// WriteTimeout bounds how long a connection's queue may stay full
	// before it is closed as a slow consumer; default 10s.
	WriteTimeout time.Duration
	// PresenceTTL must match the broker's; this replica refreshes its
	// presence entries every third of it. Default 45s.
	PresenceTTL time.Duration
	Logger      *slog.Logger
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
		c.QueueSize = 128
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 256
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
	if c.DedupTTL <= 0 {
		c.DedupTTL = time.Hour
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
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Hub is this replica's side of realtime delivery. It implements
// chat.Events (publishing what the service committed), chat.Presence,
// chat.DedupGuard and broker.Handler.
type Hub struct {
	cfg    Config
	svc    *chat.Service
	store  *repo.Store
	broker broker.Broker
	mel    *melody.Melody
	log    *slog.Logger

	// mu guards byChat, byUser, users and subs. It is never held while
	// writing to a socket or calling the broker.
	mu     sync.RWMutex
	byChat map[int64]map[*conn]struct{}
	byUser map[int64]map[*conn]struct{}
	users  map[int64]int // live local connections per user
	subs   map[string]*subscription

	connSeq  atomic.Int64
	live     sync.WaitGroup // one per registered connection, done after unregister
	closing  atomic.Bool
	presence chan presenceOp // processed in order by presenceLoop
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

var (
	_ chat.Events     = (*Hub)(nil)
	_ chat.Presence   = (*Hub)(nil)
	_ chat.DedupGuard = (*Hub)(nil)
	_ broker.Handler  = (*Hub)(nil)
)

// New returns a hub delivering through b. It starts b with itself as the
// handler and runs the presence heartbeat until Shutdown.
func New(cfg Config, svc *chat.Service, store *repo.Store, b broker.Broker) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{
		cfg: cfg, svc: svc, store: store, broker: b,
		log:    cfg.Logger.With("component", "realtime", "replica", cfg.Replica),
		byChat: map[int64]map[*conn]struct{}{}, byUser: map[int64]map[*conn]struct{}{},
		users: map[int64]int{}, subs: map[string]*subscription{},
		presence: make(chan presenceOp, 4096), stop: make(chan struct{}), loopDone: make(chan struct{}),
	}
	h.mel = h.newMelody()
	b.Start(h)
	go h.presenceLoop()
	return h
}

// Replica is this hub's replica name.
func (h *Hub) Replica() string { return h.cfg.Replica }

func chatChannel(id int64) string { return "chat:" + strconv.FormatInt(id, 10) }
func userChannel(id int64) string { return "user:" + strconv.FormatInt(id, 10) }

// envelope is what travels on the broker. Message envelopes carry the
// encoded message once; receivers build frames from it.
type envelope struct {
	Kind   string            `json:"k"` // msg, fwd, removed, join
	ChatID int64             `json:"c"`
	UserID int64             `json:"u,omitempty"`
	Seq    int64             `json:"s,omitempty"`
	Sender int64             `json:"sid,omitempty"`
	CMID   string            `json:"cm,omitempty"`
	Msg    json.RawMessage   `json:"m,omitempty"`
	Frames []json.RawMessage `json:"f,omitempty"`
	SentAt int64             `json:"t,omitempty"` // unix nanoseconds when stored
}

const (
	kindMessage = "msg"
	kindForward = "fwd"
	kindRemoved = "removed"
	kindJoin    = "join"
)

// publish sends env on channel. When the broker fails, this replica's own
// connections still get it; other replicas fill the gap from the database
// at their next message or resubscription.
func (h *Hub) publish(ctx context.Context, channel string, env envelope) {
	payload := mustJSON(env)
	if err := h.broker.Publish(ctx, channel, payload); err != nil {
		h.cfg.Metrics.BrokerError("publish")
		h.log.WarnContext(ctx, "broker publish failed; delivering locally", "event", "broker.error", "op", "publish", "chat_id", env.ChatID, "err", err)
		h.Receive(channel, payload)
	}
}

// MessageStored implements chat.Events.
func (h *Hub) MessageStored(ctx context.Context, m chat.Message) {
	h.publish(ctx, chatChannel(m.ChatID), envelope{
		Kind: kindMessage, ChatID: m.ChatID, Seq: m.Seq, Sender: m.SenderID, CMID: m.ClientMsgID,
		Msg: mustJSON(m.API()), SentAt: time.Now().UnixNano(),
	})
}

// ReadMoved implements chat.Events.
func (h *Hub) ReadMoved(ctx context.Context, chatID, userID, seq int64, chatRead *int64) {
	var frames []json.RawMessage
	if userID != 0 {
		frames = append(frames, mustJSON(gen.MessageReadEventFrame{
			Type: gen.MessageReadEventFrameTypeMessageRead, ChatID: chatID, UserID: userID, Seq: seq,
		}))
	}
	if chatRead != nil {
		frames = append(frames, mustJSON(gen.ChatReadFrame{Type: gen.ChatRead, ChatID: chatID, Seq: *chatRead}))
	}
	if len(frames) == 0 {
		return
	}
	h.publish(ctx, chatChannel(chatID), envelope{Kind: kindForward, ChatID: chatID, Frames: frames})
}

// MemberAdded implements chat.Events: the chat's connections hear of it,
// and the new member's all-chats connections start receiving the chat.
func (h *Hub) MemberAdded(ctx context.Context, chatID, userID int64) {
	frame := mustJSON(gen.MemberAddedFrame{Type: gen.MemberAdded, ChatID: chatID, UserID: userID})
	h.publish(ctx, chatChannel(chatID), envelope{Kind: kindForward, ChatID: chatID, UserID: userID, Frames: []json.RawMessage{frame}})
	h.publish(ctx, userChannel(userID), envelope{Kind: kindJoin, ChatID: chatID, UserID: userID, Frames: []json.RawMessage{frame}})
}

// MemberRemoved implements chat.Events. The removal goes to the chat's
// channel (every member hears of it) and to the removed user's own channel,
// so that each of the user's sockets hears it whichever chats it has
// indexed yet: one registered while the removal committed, or one whose
// join of the chat is still queued.
func (h *Hub) MemberRemoved(ctx context.Context, chatID, userID int64) {
	frame := mustJSON(gen.MemberRemovedFrame{Type: gen.MemberRemoved, ChatID: chatID, UserID: userID})
	env := envelope{Kind: kindRemoved, ChatID: chatID, UserID: userID, Frames: []json.RawMessage{frame}}
	h.publish(ctx, chatChannel(chatID), env)
	h.publish(ctx, userChannel(userID), env)
}

// Online implements chat.Presence.
func (h *Hub) Online(ctx context.Context, userIDs []int64) ([]int64, error) {
	return h.broker.Online(ctx, userIDs)
}

// Claim implements chat.DedupGuard.
func (h *Hub) Claim(ctx context.Context, key string) (bool, error) {
	return h.broker.Claim(ctx, key, h.cfg.DedupTTL)
}

// Receive implements broker.Handler: one decode per envelope, one frame
// encode per message, then a non-blocking hand-off to each connection.
func (h *Hub) Receive(channel string, payload []byte) {
	var env envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		h.cfg.Metrics.BrokerError("decode")
		h.log.Error("undecodable broker payload", "event", "broker.error", "op", "decode", "channel", channel, "err", err)
		return
	}
	var ev event
	switch env.Kind {
	case kindMessage:
		ev = evMessage{chatID: env.ChatID, it: &msgItem{
			seq: env.Seq, sender: env.Sender, cmid: env.CMID, msg: env.Msg, frame: newFrame(env.Msg), sentAt: env.SentAt,
		}}
	case kindForward:
		ev = evForward{chatID: env.ChatID, frames: env.Frames}
	case kindRemoved:
		ev = evRemoved{chatID: env.ChatID, userID: env.UserID, frames: env.Frames}
		if channel == userChannel(env.UserID) {
			h.fanOut(h.connsOfUser(env.UserID, false), ev)
			return
		}
	case kindJoin:
		h.fanOut(h.connsOfUser(env.UserID, true), evJoin{chatID: env.ChatID, frames: env.Frames})
		return
	default:
		h.cfg.Metrics.BrokerError("decode")
		h.log.Error("unknown broker envelope", "event", "broker.error", "op", "decode", "kind", env.Kind)
		return
	}
	h.fanOut(h.connsOfChat(env.ChatID), ev)
}

// Resubscribed implements broker.Handler: the broker lost its connection,
// so messages may have been missed; every affected connection refills
// from the database.
func (h *Hub) Resubscribed(channels []string) {
	h.log.Warn("broker resubscribed; refilling from the database", "event", "broker.resubscribed", "channels", len(channels))
	for _, ch := range channels {
		switch {
		case strings.HasPrefix(ch, "chat:"):
			id, _ := strconv.ParseInt(strings.TrimPrefix(ch, "chat:"), 10, 64)
			h.fanOut(h.connsOfChat(id), evRefill{chatID: id})
		case strings.HasPrefix(ch, "user:"):
			id, _ := strconv.ParseInt(strings.TrimPrefix(ch, "user:"), 10, 64)
			h.fanOut(h.connsOfUser(id, true), evRejoin{})
		}
	}
}

func (h *Hub) fanOut(conns []*conn, ev event) {
	for _, c := range conns {
		c.push(ev)
	}
}

func (h *Hub) connsOfChat(chatID int64) []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	set := h.byChat[chatID]
	out := make([]*conn, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out
}

// connsOfUser lists the user's connections; allOnly keeps the all-chats
// ones.
func (h *Hub) connsOfUser(userID int64, allOnly bool) []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	set := h.byUser[userID]
	out := make([]*conn, 0, len(set))
	for c := range set {
		if !allOnly || c.chatID == 0 {
			out = append(out, c)
		}
	}
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
	if set := h.byChat[chatID]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.byChat, chatID)
		}
	}
}

// register makes c live: indexed by user and chats, subscribed, counted for
// presence. On error nothing of c remains registered.
func (h *Hub) register(ctx context.Context, c *conn, chats []int64) error {
	var acquired []string
	fail := func(err error) error {
		for _, ch := range acquired {
			h.release(ch)
		}
		return err
	}
	// Every connection follows its user's channel: removals reach it there
	// even for a chat it has not indexed yet, and /ws learns of joins.
	if err := h.acquire(ctx, userChannel(c.userID)); err != nil {
		return fail(err)
	}
	acquired = append(acquired, userChannel(c.userID))
	for _, id := range chats {
		if err := h.acquire(ctx, chatChannel(id)); err != nil {
			return fail(err)
		}
		acquired = append(acquired, chatChannel(id))
	}
	h.mu.Lock()
	set := h.byUser[c.userID]
	if set == nil {
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
	h.users[c.userID]++
	first := h.users[c.userID] == 1
	h.live.Add(1)
	h.mu.Unlock()
	if first {
		h.setPresence(presenceOp{userID: c.userID, online: true})
	}
	return nil
}

// unregister undoes register for a closed connection; chats is what the
// connection was in when it closed.
func (h *Hub) unregister(c *conn, chats []int64) {
	h.mu.Lock()
	if set := h.byUser[c.userID]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.byUser, c.userID)
		}
	}
	for _, id := range chats {
		if set := h.byChat[id]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(h.byChat, id)
			}
		}
	}
	h.users[c.userID]--
	last := h.users[c.userID] == 0
	if last {
		delete(h.users, c.userID)
	}
	h.mu.Unlock()
	for _, id := range chats {
		h.release(chatChannel(id))
	}
	h.release(userChannel(c.userID))
	if last {
		h.setPresence(presenceOp{userID: c.userID, online: false})
	}
	h.live.Done()
}

// setPresence queues a presence change for presenceLoop, or applies it
// here once the loop has stopped.
func (h *Hub) setPresence(op presenceOp) {
	select {
	case h.presence <- op:
	case <-h.stop:
		h.applyPresence(op)
	}
}

// presenceLoop applies presence changes in order and refreshes this
// replica's entries every third of the TTL. It runs until Shutdown.
func (h *Hub) presenceLoop() {
	defer close(h.loopDone)
	tick := time.NewTicker(h.cfg.PresenceTTL / 3)
	defer tick.Stop()
	for {
		select {
		case op := <-h.presence:
			h.applyPresence(op)
		case <-tick.C:
			h.refreshPresence()
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
	for _, id := range chats {
		frame := mustJSON(gen.PresenceFrame{Type: gen.Presence, ChatID: id, UserID: op.userID, Online: op.online})
		h.publish(ctx, chatChannel(id), envelope{Kind: kindForward, ChatID: id, Frames: []json.RawMessage{frame}})
	}
}

func (h *Hub) refreshPresence() {
	h.mu.RLock()
	ids := make([]int64, 0, len(h.users))
	for id := range h.users {
		ids = append(ids, id)
	}
	h.mu.RUnlock()
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

// Shutdown closes every connection with 1001 so clients move to another
// replica, waits for them to go (until ctx is done), and stops the
// presence loop, taking this replica's users offline.
func (h *Hub) Shutdown(ctx context.Context) {
	if h.closing.Swap(true) {
		return
	}
	h.mu.RLock()
	var all []*conn
	for _, set := range h.byUser {
		for c := range set {
			all = append(all, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range all {
		c.push(evClose{code: 1001, reason: "server shutting down"})
	}
	drained := make(chan struct{})
	go func() { h.live.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		h.log.Warn("shutdown: connections still open; closing them", "event", "server.stop", "open", h.mel.Len())
		_ = h.mel.Close()
	}
	h.stopLoop()
}

func (h *Hub) stopLoop() {
	close(h.stop)
	<-h.loopDone
}

// Connections is the number of open WebSocket connections on this replica.
func (h *Hub) Connections() int { return h.mel.Len() }
