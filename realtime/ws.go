package realtime

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

const connKey = "conn"

func (h *Hub) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = h.cfg.MaxFrameBytes
	m.Config.MessageBufferSize = h.cfg.QueueSize
	m.Config.PingPeriod = h.cfg.PingPeriod
	m.Config.PongWait = h.cfg.PongWait
	m.Config.WriteWait = h.cfg.WriteTimeout
	m.Upgrader.CheckOrigin = h.checkOrigin
	// Idle connections should cost little: a small read buffer, and write
	// buffers shared through a pool instead of one per connection.
	m.Upgrader.ReadBufferSize = 1024
	m.Upgrader.WriteBufferSize = 4096
	m.Upgrader.WriteBufferPool = &sync.Pool{}
	m.HandleConnect(h.onConnect)
	m.HandleDisconnect(h.onDisconnect)
	m.HandleMessage(h.onMessage)
	m.HandleMessageBinary(func(s *melody.Session, _ []byte) {
		connOf(s).push(evFrame{frame: encodeError(badRequest("binary frames are not supported; send JSON text frames"))})
	})
	m.HandleSentMessage(func(s *melody.Session, _ []byte) { connOf(s).sent() })
	m.HandleError(h.onError)
	return m
}

func connOf(s *melody.Session) *conn {
	c, _ := s.MustGet(connKey).(*conn)
	return c
}

// checkOrigin lets non-browser clients (no Origin), same-host pages and
// the configured origins open WebSockets.
func (h *Hub) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range h.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// Mount adds GET /ws and GET /ws/{chat_id} to e.
func (h *Hub) Mount(e *echo.Echo) {
	e.GET("/ws", func(c echo.Context) error { return h.serve(c, 0) })
	e.GET("/ws/:chat_id", func(c echo.Context) error {
		id, err := strconv.ParseInt(c.Param("chat_id"), 10, 64)
		if err != nil || id < 1 {
			return echo.NewHTTPError(http.StatusBadRequest, "chat_id must be a positive integer")
		}
		return h.serve(c, id)
	})
}

// token is the JWT from ?token= or the Authorization header.
func token(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	a := r.Header.Get("Authorization")
	if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// serve authenticates and authorizes before the upgrade (401, 403, 404 as
// problems), fixes where each chat's delivery starts, and upgrades.
func (h *Hub) serve(ec echo.Context, chatID int64) error {
	if h.closing.Load() {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "server shutting down")
	}
	r := ec.Request()
	tok := token(r)
	if tok == "" {
		return echo.NewHTTPError(http.StatusUnauthorized, "missing token")
	}
	ctx := r.Context()
	userID, exp, err := h.svc.Authenticate(ctx, tok)
	if err != nil {
		if chat.CodeOf(err) == chat.CodeUnauthorized {
			// The same answer as REST: a bad token is "unauthorized", not a
			// failed login.
			return echo.NewHTTPError(http.StatusUnauthorized, "invalid or expired token")
		}
		return err
	}
	if max := h.cfg.MaxConnsPerUser; max > 0 {
		h.mu.RLock()
		n := h.users[userID]
		h.mu.RUnlock()
		if n >= max {
			ec.Response().Header().Set("Retry-After", "5")
			return echo.NewHTTPError(http.StatusTooManyRequests, "too many open connections for this user")
		}
	}
	var since *int64
	if v := r.URL.Query().Get("since_seq"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return echo.NewHTTPError(http.StatusBadRequest, "since_seq must be a non-negative integer")
		}
		since = &n
	}
	starts := map[int64]int64{}
	if chatID != 0 {
		ch, err := h.svc.Authorize(ctx, userID, chatID)
		if err != nil {
			return err
		}
		starts[chatID] = ch.LastSeq
		if since != nil {
			starts[chatID] = *since
		}
	} else {
		if since != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "since_seq applies to /ws/{chat_id}; on /ws send a sync frame per chat")
		}
		if starts, err = h.store.MemberChatHeads(ctx, userID); err != nil {
			return err
		}
	}
	c := newConn(h, userID, chatID, starts, exp)
	c.ctx = ctx
	if err := h.mel.HandleRequestWithKeys(ec.Response(), r, map[string]any{connKey: c}); err != nil {
		if !ec.Response().Committed {
			return err
		}
		h.log.Debug("websocket upgrade failed", "event", "ws.upgrade_failed", "user_id", userID, "err", err)
	}
	return nil
}

// onConnect registers the connection and starts its actor. Until it
// returns, melody reads no frame from the connection.
func (h *Hub) onConnect(s *melody.Session) {
	c := connOf(s)
	c.sess = s
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	if h.closing.Load() {
		c.closeNow(1001, "server shutting down")
		return
	}
	if err := h.register(ctx, c, c.chatIDs()); err != nil {
		h.cfg.Metrics.BrokerError("subscribe")
		h.log.Warn("connection not registered", "event", "broker.error", "op", "subscribe", "user_id", c.userID, "err", err)
		c.closeNow(1011, "broker unavailable; retry")
		close(c.done)
		return
	}
	c.registered = true
	h.log.Info("connection opened", "event", "ws.opened", "conn_id", c.id, "user_id", c.userID, "chat_id", c.chatID, "chats", len(c.chats))
	h.opened()
	go c.run()
	// Messages committed between the handshake and the subscription did
	// not come through the broker: read them from the database.
	c.push(evCatchup{})
}

func (h *Hub) onDisconnect(s *melody.Session) {
	c := connOf(s)
	if !c.registered {
		return
	}
	close(c.done)
	// The actor has stopped touching c.chats once done is closed and it
	// returns; wait for that through actorDone.
	<-c.actorDone
	h.unregister(c, c.chatIDs())
	h.closed()
	h.log.Info("connection closed", "event", "ws.closed", "conn_id", c.id, "user_id", c.userID, "chat_id", c.chatID)
}

func (h *Hub) onError(s *melody.Session, err error) {
	c := connOf(s)
	if errors.Is(err, melody.ErrMessageBufferFull) {
		c.closeNow(CloseSlowConsumer, "slow consumer: socket queue full")
		return
	}
	// gorilla hides a write timeout's *net.OpError behind its own
	// net.Error, so the operation is only in the message.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && strings.Contains(err.Error(), "write") {
		// The peer stopped reading and the socket stayed full for the write
		// timeout: a slow consumer, whichever timer fired first.
		c.closeNow(CloseSlowConsumer, "slow consumer: write timed out")
		return
	}
	if errors.Is(err, websocket.ErrReadLimit) {
		// gorilla has sent close 1009. Read off the rest of the oversized
		// frame before melody closes the socket: closing with unread data
		// sends a TCP reset, which can destroy the close frame in flight.
		h.log.Info("frame over the size limit", "event", "ws.too_large", "conn_id", c.id, "user_id", c.userID)
		nc := s.WebsocketConnection().UnderlyingConn()
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, nc)
		return
	}
	h.log.Debug("websocket error", "event", "ws.error", "conn_id", c.id, "err", err)
}

// onMessage handles one client frame on the connection's read goroutine.
// Sends and reads go through the chat rules synchronously, so one
// connection's frames take effect in the order it sent them.
func (h *Hub) onMessage(s *melody.Session, data []byte) {
	c := connOf(s)
	f, ferr := decodeFrame(data, c.chatID)
	if ferr != nil {
		c.push(evFrame{frame: encodeError(ferr)})
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	switch f := f.(type) {
	case gen.MessageSendFrame:
		chatID := *f.ChatID
		if c.limiter != nil && !c.limiter.allow() {
			c.push(evFrame{frame: encodeError(&frameError{code: gen.ErrorFrameCodeRateLimited, msg: "too many messages; slow down", clientMsgID: f.ClientMsgID, chatID: chatID})})
			return
		}
		c.startSend(sendKey{chatID, f.ClientMsgID})
		m, dup, err := h.svc.Send(ctx, c.userID, chatID, f.ClientMsgID, f.Text)
		if err != nil {
			c.push(evSendFailed{chatID: chatID, cmid: f.ClientMsgID, frame: encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), clientMsgID: f.ClientMsgID, chatID: chatID})})
			if errorFrameCode(err) == gen.ErrorFrameCodeInternal {
				h.log.Error("send failed", "event", "ws.error", "conn_id", c.id, "chat_id", chatID, "err", err)
			}
			return
		}
		raw := mustJSON(m.API())
		c.push(evAck{chatID: chatID, dup: dup, it: &msgItem{seq: m.Seq, sender: m.SenderID, cmid: m.ClientMsgID, msg: raw}})
	case gen.MessageReadFrame:
		if _, err := h.svc.MarkRead(ctx, c.userID, *f.ChatID, f.Seq); err != nil {
			c.push(evFrame{frame: encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), chatID: *f.ChatID})})
		}
	case gen.SyncFrame:
		if _, err := h.svc.Authorize(ctx, c.userID, *f.ChatID); err != nil {
			c.push(evFrame{frame: encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), chatID: *f.ChatID})})
			return
		}
		if c.chatID != 0 && *f.ChatID != c.chatID {
			c.push(evFrame{frame: encodeError(&frameError{code: gen.ErrorFrameCodeBadRequest, msg: "sync a chat on its own connection or on /ws", chatID: *f.ChatID})})
			return
		}
		c.push(evSync{chatID: *f.ChatID, since: f.SinceSeq})
	}
}

func (h *Hub) opened()     { h.cfg.Metrics.ConnOpened() }
func (h *Hub) closed()     { h.cfg.Metrics.ConnClosed() }
func (h *Hub) slowClosed() { h.cfg.Metrics.SlowConsumer() }

func (h *Hub) delivered(it *msgItem) {
	var at time.Time
	if it.sentAt > 0 {
		at = time.Unix(0, it.sentAt)
	}
	h.cfg.Metrics.Delivered(at)
}
