package realtime

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/labstack/echo/v4"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

// Why gobwas/ws and not melody (the stack's first choice): melody gives
// every session a read and a write goroutine, a buffered channel and the
// retained *http.Request, and writes one frame per system call. Delivery
// here needs a writer that exists only while frames wait and drains them
// all in one buffered write, and an idle connection that costs one parked
// goroutine; gobwas/ws exposes the frame codec and the upgrade, so the
// connection (conn.go) can be shaped that way.

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

// checkUpgrade refuses a request that is not a WebSocket handshake before
// anything is hijacked, so the refusal is an ordinary problem response.
func checkUpgrade(r *http.Request) error {
	hasToken := func(header, token string) bool {
		for _, v := range r.Header.Values(header) {
			for _, part := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(part), token) {
					return true
				}
			}
		}
		return false
	}
	switch {
	case !hasToken("Connection", "upgrade") || !hasToken("Upgrade", "websocket"):
		return echo.NewHTTPError(http.StatusBadRequest, "a WebSocket handshake is expected (Connection: Upgrade, Upgrade: websocket)")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return echo.NewHTTPError(http.StatusUpgradeRequired, "Sec-WebSocket-Version 13 is required")
	case len(r.Header.Get("Sec-WebSocket-Key")) != 24:
		return echo.NewHTTPError(http.StatusBadRequest, "Sec-WebSocket-Key is missing or malformed")
	}
	return nil
}

// serve authenticates and authorizes before the upgrade (401, 403, 404,
// 429, 503 as problems), reserves the connection's slot, fixes where each
// chat's delivery starts, upgrades, registers and starts the connection.
// The request is not retained: the handler returns once the connection
// runs, and the connection lives on its own context.
func (h *Hub) serve(ec echo.Context, chatID int64) error {
	r := ec.Request()
	if err := checkUpgrade(r); err != nil {
		if he := (*echo.HTTPError)(nil); errors.As(err, &he) && he.Code == http.StatusUpgradeRequired {
			ec.Response().Header().Set("Sec-WebSocket-Version", "13")
		}
		return err
	}
	if !h.checkOrigin(r) {
		return echo.NewHTTPError(http.StatusForbidden, "origin not allowed")
	}
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
			// A position past the end is clamped: live messages from the
			// chat's end on still arrive.
			starts[chatID] = min(*since, ch.LastSeq)
		}
	} else {
		if since != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "since_seq applies to /ws/{chat_id}; on /ws send a sync frame per chat")
		}
		if starts, err = h.store.MemberChatHeads(ctx, userID); err != nil {
			return err
		}
	}
	if err := h.reserve(userID); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, errTooManyForUser) {
			status = http.StatusTooManyRequests
		}
		ec.Response().Header().Set("Retry-After", "5")
		return echo.NewHTTPError(status, err.Error())
	}

	// The 101 carries the headers set so far (X-Windi-Replica, the request
	// id): the upgrader writes the response itself.
	up := ws.HTTPUpgrader{Timeout: 10 * time.Second, Header: ec.Response().Header()}
	nc, rw, _, err := up.Upgrade(r, ec.Response())
	if err != nil {
		h.unreserve(userID)
		if nc != nil {
			_ = nc.Close()
		}
		h.log.Debug("websocket upgrade failed", "event", "ws.upgrade_failed", "user_id", userID, "err", err)
		return nil
	}
	ec.Response().Status = http.StatusSwitchingProtocols // for the request log
	// The hijacked reader is net/http's (4 KiB); a client does not send
	// before the handshake's answer, so a small reader of our own does.
	br := rw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(nc, 512)
	}
	c := newConn(h, userID, chatID, nc, br, starts)
	rctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	if err := h.register(rctx, c); err != nil {
		h.cfg.Metrics.BrokerError("subscribe")
		h.log.Warn("connection not registered", "event", "broker.error", "op", "subscribe", "user_id", userID, "err", err)
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = writeFrame(nc, ws.OpClose, ws.NewCloseFrameBody(1011, "broker unavailable; retry"))
		_ = nc.Close()
		c.cancel()
		return nil
	}
	h.log.Info("connection opened", "event", "ws.opened", "conn_id", c.id, "user_id", userID, "chat_id", chatID, "chats", len(starts))
	c.start(exp)
	return nil
}

// onFrame handles one client frame on the connection's read goroutine, in
// the order the client sent them. Sends do not wait for their commit: the
// sequencer answers them (acked) once published, and one connection's sends
// to one chat are stored in the order sent.
func (h *Hub) onFrame(c *conn, data []byte) {
	f, ferr := decodeFrame(data, c.chatID)
	if ferr != nil {
		c.frame(encodeError(ferr))
		return
	}
	fail := func(err error, chatID int64, cmid string) {
		c.frame(encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), clientMsgID: cmid, chatID: chatID}))
	}
	limited := func(what string, chatID int64, cmid string) {
		c.frame(encodeError(&frameError{code: gen.ErrorFrameCodeRateLimited, msg: "too many " + what + "; slow down", clientMsgID: cmid, chatID: chatID}))
	}
	switch f := f.(type) {
	case gen.MessageSendFrame:
		chatID, cmid := *f.ChatID, f.ClientMsgID
		if c.sendLimit != nil && !c.sendLimit.Allow() {
			limited("messages", chatID, cmid)
			return
		}
		k := sendKey{chatID, cmid}
		c.startSend(k)
		err := h.svc.SendAsync(c.ctx, c.userID, chatID, cmid, f.Text, func(o chat.SendOutcome) { c.acked(chatID, cmid, o) })
		if err != nil {
			c.mu.Lock()
			c.endSendLocked(k)
			c.mu.Unlock()
			fail(err, chatID, cmid)
		}
	case gen.MessageReadFrame:
		if !c.readLimit.Allow() {
			limited("read receipts", *f.ChatID, "")
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, taskTimeout)
		defer cancel()
		if _, err := h.svc.MarkRead(ctx, c.userID, *f.ChatID, f.Seq); err != nil {
			fail(err, *f.ChatID, "")
		}
	case gen.SyncFrame:
		chatID := *f.ChatID
		if !c.syncLimit.Allow() {
			limited("sync frames", chatID, "")
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, taskTimeout)
		defer cancel()
		ch, err := h.svc.Authorize(ctx, c.userID, chatID)
		if err != nil {
			fail(err, chatID, "")
			return
		}
		if c.chatID != 0 && chatID != c.chatID {
			c.frame(encodeError(&frameError{code: gen.ErrorFrameCodeBadRequest, msg: "sync a chat on its own connection or on /ws", chatID: chatID}))
			return
		}
		c.requestSync(chatID, min(f.SinceSeq, ch.LastSeq))
	}
}
