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
	"github.com/windi-chat/windi/repo"
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
	p, err := h.svc.Authenticate(ctx, tok)
	if err != nil {
		if code := chat.CodeOf(err); code == chat.CodeUnauthorized || code == chat.CodeSessionRevoked {
			// The same answer as REST: a bad token is "unauthorized", not a
			// failed login.
			return echo.NewHTTPError(http.StatusUnauthorized, "invalid or expired token")
		}
		return err
	}
	userID := p.UserID
	starts, err := h.starts(ctx, r.URL.Query(), userID, chatID)
	if err != nil {
		return err
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
	c := newConn(h, p, chatID, nc, br, starts)
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
	c.start(p.ExpiresAt)
	// A revocation announced while this connection was registering may
	// have passed it by (it was not indexed yet): look once more.
	if h.svc.SessionRevoked(c.sessID) {
		c.close(CloseRevoked, "session revoked")
	}
	return nil
}

// start is where a connection's delivery of one chat begins: after
// revision rev; with minSeq set, its first fill replays only messages with
// a greater seq (a resume by seq: new messages only).
type start struct{ rev, minSeq int64 }

// starts fixes where each chat's delivery starts. Without a resume
// position a chat starts at its last revision as of the handshake; the
// query may give one: since_seq or since_rev on /ws/{chat_id}, since
// (chat:seq,…) or since_rev (chat:rev,…) on /ws. Positions past a chat's
// end are clamped to it, so live changes still arrive; chats in a list that
// the user is not a member of are ignored.
func (h *Hub) starts(ctx context.Context, q url.Values, userID, chatID int64) (map[int64]start, error) {
	bySeq, byRev := map[int64]int64{}, map[int64]int64{}
	parseOne := func(name string, into map[int64]int64) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return echo.NewHTTPError(http.StatusBadRequest, name+" must be a non-negative integer")
		}
		into[chatID] = n
		return nil
	}
	parseList := func(name string, into map[int64]int64) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		for _, part := range strings.Split(v, ",") {
			id, pos, ok := strings.Cut(strings.TrimSpace(part), ":")
			c, err1 := strconv.ParseInt(id, 10, 64)
			n, err2 := strconv.ParseInt(pos, 10, 64)
			if !ok || err1 != nil || err2 != nil || c < 1 || n < 0 {
				return echo.NewHTTPError(http.StatusBadRequest, name+" must list chat_id:position pairs such as 12:35,14:0")
			}
			into[c] = n
		}
		return nil
	}
	if chatID != 0 {
		if q.Has("since") {
			return nil, echo.NewHTTPError(http.StatusBadRequest, "since lists positions on /ws; on /ws/{chat_id} use since_seq or since_rev")
		}
		if err := parseOne("since_seq", bySeq); err != nil {
			return nil, err
		}
		if err := parseOne("since_rev", byRev); err != nil {
			return nil, err
		}
	} else {
		if q.Has("since_seq") {
			return nil, echo.NewHTTPError(http.StatusBadRequest, "since_seq applies to /ws/{chat_id}; on /ws list positions with since=chat_id:seq,… or send sync frames")
		}
		if err := parseList("since", bySeq); err != nil {
			return nil, err
		}
		if err := parseList("since_rev", byRev); err != nil {
			return nil, err
		}
	}
	for id := range bySeq {
		if _, both := byRev[id]; both {
			return nil, echo.NewHTTPError(http.StatusBadRequest, "a chat's position is a seq or a rev, not both")
		}
	}
	heads := map[int64]repo.ChatHead{}
	if chatID != 0 {
		ch, err := h.svc.Authorize(ctx, userID, chatID)
		if err != nil {
			return nil, err
		}
		heads[chatID] = repo.ChatHead{ChatID: chatID, LastSeq: ch.LastSeq, LastRev: ch.LastRev}
	} else {
		hs, err := h.store.MemberHeads(ctx, userID)
		if err != nil {
			return nil, err
		}
		for _, hd := range hs {
			heads[hd.ChatID] = hd
		}
	}
	out := make(map[int64]start, len(heads))
	for id, hd := range heads {
		st := start{rev: hd.LastRev}
		if n, ok := byRev[id]; ok {
			st.rev = min(n, hd.LastRev)
		}
		if n, ok := bySeq[id]; ok {
			n = min(n, hd.LastSeq)
			rev, err := h.svc.RevAtSeq(ctx, id, n)
			if err != nil {
				return nil, err
			}
			st = start{rev: rev, minSeq: n}
		}
		out[id] = st
	}
	return out, nil
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
		err := h.svc.SendAsync(c.ctx, c.userID, chatID, cmid, f.Text, f.ReplyToSeq, func(o chat.Outcome) { c.acked(chatID, cmid, o) })
		if err != nil {
			c.mu.Lock()
			c.endSendLocked(k)
			if c.state == stateOpen {
				c.releasedLocked(c.streams[chatID])
			}
			c.mu.Unlock()
			fail(err, chatID, cmid)
		}
	case gen.MessageEditFrame, gen.MessageDeleteFrame, gen.ReactionAddFrame, gen.ReactionRemoveFrame:
		var chatID, seq int64
		var apply func(done func(chat.Outcome)) error
		switch f := f.(type) {
		case gen.MessageEditFrame:
			chatID, seq = *f.ChatID, f.Seq
			apply = func(done func(chat.Outcome)) error {
				return h.svc.EditAsync(c.ctx, c.userID, chatID, seq, f.Text, done)
			}
		case gen.MessageDeleteFrame:
			chatID, seq = *f.ChatID, f.Seq
			apply = func(done func(chat.Outcome)) error { return h.svc.DeleteAsync(c.ctx, c.userID, chatID, seq, done) }
		case gen.ReactionAddFrame:
			chatID, seq = *f.ChatID, f.Seq
			apply = func(done func(chat.Outcome)) error {
				return h.svc.ReactAsync(c.ctx, c.userID, chatID, seq, f.Emoji, true, done)
			}
		case gen.ReactionRemoveFrame:
			chatID, seq = *f.ChatID, f.Seq
			apply = func(done func(chat.Outcome)) error {
				return h.svc.ReactAsync(c.ctx, c.userID, chatID, seq, f.Emoji, false, done)
			}
		}
		if c.sendLimit != nil && !c.sendLimit.Allow() {
			// Named by chat and seq, like the change's other errors.
			c.frame(encodeError(&frameError{code: gen.ErrorFrameCodeRateLimited, msg: "too many changes; slow down", chatID: chatID, seq: seq}))
			return
		}
		if err := apply(func(o chat.Outcome) { c.changed(chatID, seq, o) }); err != nil {
			c.changed(chatID, seq, chat.Outcome{Err: err})
		}
	case gen.TypingFrame:
		if !c.typingLimit.Allow() {
			return // typing is relayed at most every 2 s anyway: extra frames are dropped silently
		}
		ctx, cancel := context.WithTimeout(c.ctx, taskTimeout)
		defer cancel()
		if err := h.svc.Typing(ctx, c.userID, *f.ChatID); err != nil {
			fail(err, *f.ChatID, "")
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
		// A refused sync is answered behind the replays of the syncs
		// before it (they run as tasks), so the answers keep the frames'
		// order: a client may mark the end of its syncs with one.
		chatID := *f.ChatID
		if !c.syncLimit.Allow() {
			c.afterTasks(encodeError(&frameError{code: gen.ErrorFrameCodeRateLimited, msg: "too many sync frames; slow down", chatID: chatID}))
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, taskTimeout)
		defer cancel()
		ch, err := h.svc.Authorize(ctx, c.userID, chatID)
		if err != nil {
			c.afterTasks(encodeError(&frameError{code: errorFrameCode(err), msg: errorMessage(err), chatID: chatID}))
			return
		}
		if c.chatID != 0 && chatID != c.chatID {
			c.afterTasks(encodeError(&frameError{code: gen.ErrorFrameCodeBadRequest, msg: "sync a chat on its own connection or on /ws", chatID: chatID}))
			return
		}
		// A position past the chat's end is clamped to it; on a chat the
		// connection already follows, "the end" is where it has got to, so
		// a message committed while this frame was read is not skipped.
		if f.SinceSeq != nil {
			c.requestSync(chatID, replay{bySeq: true, pos: min(*f.SinceSeq, ch.LastSeq), end: *f.SinceSeq > ch.LastSeq})
		} else {
			c.requestSync(chatID, replay{pos: min(*f.SinceRev, ch.LastRev), end: *f.SinceRev > ch.LastRev})
		}
	}
}
