package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/client/rest"
)

// Errors a Conn returns.
var (
	// ErrClosed: the Conn was closed (Close) or ended for good; sends still
	// waiting fail with it (wrapping the cause, when there is one).
	ErrClosed = errors.New("client: connection closed")
	// ErrQueueFull: MaxPending sends wait for their acks already.
	ErrQueueFull = errors.New("client: too many sends waiting for their acks")
)

// Close codes of SPEC §4 beyond RFC 6455's.
const (
	CloseGoingAway    = 1001 // the replica shuts down: reconnect elsewhere
	CloseTooLarge     = 1009 // a frame over 64 KiB
	CloseSlowConsumer = 4008 // too slow to drain its queue: reconnect and resume
	CloseRevoked      = 4401 // the session was revoked: log in again
	CloseRemoved      = 4403 // removed from the chat of a per-chat connection
	CloseTokenExpired = 4501 // the token expired: get a new one
)

// CloseError is the close frame that ended a Conn for good.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("windi: connection closed with %d %s", e.Code, e.Reason)
}

// State is where a Conn is in its life.
type State int

// The states, in the order a Conn moves through them; it returns from
// Disconnected to Connecting.
const (
	Connecting   State = iota // dialing (and, the first time, reading positions)
	Connected                 // the socket is open and resumed
	Disconnected              // lost; waiting to reconnect
	Closed                    // ended for good
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Closed:
		return "closed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Config says what a Conn follows and how it behaves. The callbacks run on
// the Conn's one goroutine, in the order of events: each sees a consistent
// view and must return soon (a callback that blocks stops reading, and a
// server that cannot deliver closes with 4008; the Conn then reconnects
// and resumes). They may call Send, SendWithID, MarkRead, Positions and
// Close.
type Config struct {
	// ChatID, when set, connects to /ws/{chat_id}: that chat only. Zero
	// connects to /ws: every chat of the user, and chats joined meanwhile.
	ChatID int64
	// Since holds resume positions: chat id to the last seq the
	// application has. A listed chat is delivered from the next seq on;
	// chats not listed start where GET /chats puts them before the first
	// connection (their last message).
	Since map[int64]int64

	// OnMessage sees every message once, in seq order per chat, the
	// application's own (from their acks) included.
	OnMessage func(m rest.Message)
	// OnFrame sees every other server frame: read receipts, chat.read,
	// presence, member.added and member.removed, and error frames that
	// answer no send.
	OnFrame func(f Frame)
	// OnState sees each state change; err says why the connection was lost
	// (Disconnected) or ended (Closed).
	OnState func(s State, err error)
	// OnClose is called once when the Conn ends: ErrClosed after Close, a
	// *CloseError for a terminal close code (4401, 4403, 4500–4999), a
	// *HandshakeError for a terminal handshake answer (401 after a token
	// refresh, 403, 404), or the TokenFunc's error.
	OnClose func(err error)

	// Backoff chooses the wait before each reconnect attempt; nil means
	// DefaultBackoff.
	Backoff Backoff
	// Clock is the time of the waits; nil means SystemClock.
	Clock Clock
	// GapTimeout is how long a chat may wait above a gap after a sync
	// before the sync is sent again; 0 means 5 s.
	GapTimeout time.Duration
	// IdleTimeout drops a connection that read nothing, not even a ping,
	// for that long (the server pings every 25 s); 0 means 60 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds each frame write; 0 means 10 s.
	WriteTimeout time.Duration
	// MaxPending is how many sends may wait for their acks; 0 means 10000.
	MaxPending int
	// MaxInFlight is how many sends are written ahead of their acks; 0
	// means 64 (the server allows bursts of 200 per connection).
	MaxInFlight int
	// SendRetries is how often a send answered with rate_limited or
	// unavailable is tried again before its Pending fails; 0 means 10,
	// negative means never.
	SendRetries int
	// Trace, when set, sees every frame read (out false) and written (out
	// true).
	Trace func(out bool, data []byte)
}

// Pending is a send on its way: it resolves with the server's message.ack
// or error frame, or fails when the Conn ends first.
type Pending struct {
	// ChatID and ClientMsgID identify the send.
	ChatID      int64
	ClientMsgID string

	frame []byte
	done  chan struct{}
	ack   rest.MessageAckFrame // set before done closes
	err   error                // set before done closes

	// Owned by the Conn's goroutine.
	seen     bool // the goroutine has taken it from the queue
	written  bool // written on the current socket
	resolved bool
	attempts int // temporary errors answered so far
}

// Done is closed once the send is resolved.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the send's outcome: the message.ack (its Message is the
// stored message; Duplicate says it had been stored before), a
// *FrameError the server answered, or an error wrapping ErrClosed. Giving
// up on ctx does not cancel the send.
func (p *Pending) Wait(ctx context.Context) (rest.MessageAckFrame, error) {
	select {
	case <-p.done:
		return p.ack, p.err
	case <-ctx.Done():
		return rest.MessageAckFrame{}, ctx.Err()
	}
}

func (p *Pending) finish(ack rest.MessageAckFrame, err error) {
	p.resolved = true
	p.ack, p.err = ack, err
	close(p.done)
}

type sendKey struct {
	chatID int64
	cmid   string
}

// chatState is one chat's delivery position: the ordering state machine.
type chatState struct {
	known bool  // last is a real position (else the first message sets it)
	last  int64 // highest seq delivered to the application
	// fallback is where to resume a chat joined while connected whose
	// first message has not come yet (its last seq read when it was
	// joined); hasFallback reports one.
	fallback    int64
	hasFallback bool
	buf         map[int64]rest.Message // above last+1, waiting for a gap to close
	// syncDue: a sync must be written then (it was rate limited).
	syncDue time.Time
	// gapCheck: a sync was written; if a gap is still open then, write it
	// again.
	gapCheck  time.Time
	syncFails int // rate-limited syncs in a row
}

func (st *chatState) gap() bool { return len(st.buf) > 0 }

type readResult struct {
	f   Frame
	err error
}

type fetchResult struct {
	chatID int64
	last   int64
}

// Conn is a WebSocket session with a WinDI Chat server that outlives its
// connections: it reconnects, resumes every chat where the application is,
// and re-sends what was not acknowledged. Its methods are safe for
// concurrent use. See the package documentation for the guarantees.
type Conn struct {
	client *Client
	cfg    Config
	clock  Clock
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	mu       sync.Mutex // guards the fields below it
	pending  map[sendKey]*Pending
	queue    []*Pending      // sends not yet taken by the goroutine
	reads    map[int64]int64 // read receipts not yet taken
	closed   bool
	err      error
	state    State
	reported bool            // OnState has seen a state
	posSnap  map[int64]int64 // positions, as of the goroutine's last change

	wake     chan struct{} // capacity 1: the queue or reads changed
	closeReq chan struct{} // closed by Close
	done     chan struct{} // closed when the goroutine has ended
	fetched  chan fetchResult
	first    chan error // the first connection's outcome, once
	once     sync.Once

	// Owned by the goroutine (run and what it calls).
	chats      map[int64]*chatState
	positioned bool // the first positions were read
	outbox     []*Pending
	inflight   int
	pauseUntil time.Time // rate limited: no sends before then
	pauses     int       // temporary send errors in a row
	sendReads  map[int64]int64
	sock       *Socket
	writeErr   error
	deadline   time.Time
	timer      Timer
	firstSent  bool
}

// Dial starts a Conn and waits for its first connection: it returns once
// the socket is open and resumed, or with the error that ends the Conn (a
// refused handshake that a retry cannot fix, the TokenFunc's error), or
// ctx's. Failures that may pass (the server is down or not ready) are
// retried with backoff until ctx ends.
func (c *Client) Dial(ctx context.Context, cfg Config) (*Conn, error) {
	conn := c.newConn(cfg)
	go conn.run()
	select {
	case err := <-conn.first:
		if err != nil {
			<-conn.done
			return nil, err
		}
		return conn, nil
	case <-ctx.Done():
		_ = conn.Close()
		return nil, ctx.Err()
	}
}

func (c *Client) newConn(cfg Config) *Conn {
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.GapTimeout <= 0 {
		cfg.GapTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 10000
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.SendRetries == 0 {
		cfg.SendRetries = 10
	}
	conn := &Conn{
		client: c, cfg: cfg, clock: cfg.Clock,
		pending: map[sendKey]*Pending{}, reads: map[int64]int64{},
		wake: make(chan struct{}, 1), closeReq: make(chan struct{}), done: make(chan struct{}),
		fetched: make(chan fetchResult, 16), first: make(chan error, 1),
		chats: map[int64]*chatState{}, sendReads: map[int64]int64{},
	}
	conn.ctx, conn.cancel = context.WithCancel(context.Background())
	for id, seq := range cfg.Since {
		conn.chats[id] = &chatState{known: true, last: seq}
	}
	conn.snapshotLocked()
	return conn
}

// --- the application's side ---

// Send queues text for chatID under a new random client_msg_id and
// returns at once; the Pending resolves with the ack. Sends survive
// reconnects (see the package documentation). It fails at once only when
// the Conn has ended, MaxPending sends wait already, the frame would be
// over 64 KiB, or chatID is not the chat of a per-chat Conn.
func (c *Conn) Send(chatID int64, text string) (*Pending, error) {
	return c.SendWithID(chatID, NewClientMsgID(), text)
}

// SendWithID is Send with the application's own client_msg_id (1..64
// printable ASCII), for an application that keeps unsent messages across
// restarts: sending the same id again stores nothing new, and the ack
// carries the original message with Duplicate set. While a send with the
// same chat and id waits, SendWithID returns its Pending.
func (c *Conn) SendWithID(chatID int64, clientMsgID, text string) (*Pending, error) {
	if c.cfg.ChatID != 0 && chatID != c.cfg.ChatID {
		return nil, fmt.Errorf("client: send to chat %d on the connection of chat %d", chatID, c.cfg.ChatID)
	}
	if chatID < 1 {
		return nil, fmt.Errorf("client: chat id %d: must be positive", chatID)
	}
	id := chatID
	frame, err := json.Marshal(rest.MessageSendFrame{Type: rest.MessageSend, ChatID: &id, ClientMsgID: clientMsgID, Text: text})
	if err != nil {
		return nil, fmt.Errorf("client: encode send: %w", err)
	}
	if len(frame) > MaxFrameBytes {
		return nil, ErrFrameTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.closedErrLocked()
	}
	k := sendKey{chatID, clientMsgID}
	if p := c.pending[k]; p != nil {
		return p, nil
	}
	if len(c.pending) >= c.cfg.MaxPending {
		return nil, ErrQueueFull
	}
	p := &Pending{ChatID: chatID, ClientMsgID: clientMsgID, frame: frame, done: make(chan struct{})}
	c.pending[k] = p
	c.queue = append(c.queue, p)
	c.signal()
	return p, nil
}

// MarkRead moves the user's read watermark in chatID to seq (a
// message.read frame). Receipts are coalesced per chat and kept until a
// connection takes them.
func (c *Conn) MarkRead(chatID, seq int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closedErrLocked()
	}
	if seq > c.reads[chatID] {
		c.reads[chatID] = seq
	}
	c.signal()
	return nil
}

// Positions returns each chat's position: the last seq delivered to
// OnMessage. Keep it to resume a later Conn with Config.Since.
func (c *Conn) Positions() map[int64]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int64]int64, len(c.posSnap))
	for k, v := range c.posSnap {
		out[k] = v
	}
	return out
}

// State returns the Conn's state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Done is closed when the Conn has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the Conn ended (nil while it runs); see Config.OnClose.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the Conn: the socket closes with 1000, sends still waiting
// fail with ErrClosed, and Close returns once the Conn's goroutine has
// ended (and OnClose has run). Closing twice is harmless.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.closeReq)
		c.cancel()
	})
	<-c.done
	return nil
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Conn) closedErrLocked() error {
	if c.err != nil && !errors.Is(c.err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	return ErrClosed
}

// NewClientMsgID returns a random client_msg_id (32 hex digits).
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// --- the goroutine ---

// errUserClose ends serve when Close was called.
var errUserClose = errors.New("client: closed by the application")

// errIdle ends serve when the socket read nothing for IdleTimeout.
var errIdle = errors.New("client: no frame or ping from the server within the idle timeout")

// run connects, serves and reconnects until the Conn ends.
func (c *Conn) run() {
	defer close(c.done)
	var (
		attempt  int  // failed attempts since the last stable connection
		expired  bool // the server rejected the last token
		rejected int  // tokens rejected in a row
		wait     time.Duration
		lastErr  error
	)
	for {
		if wait > 0 || lastErr != nil {
			c.setState(Disconnected, lastErr)
			if !c.sleep(wait) {
				c.finish(ErrClosed)
				return
			}
		}
		c.setState(Connecting, nil)
		sock, err := c.connect(expired)
		if err != nil {
			if c.ctx.Err() != nil {
				c.finish(ErrClosed)
				return
			}
			switch status := StatusOf(err); {
			case errors.Is(err, ErrNoToken) || (status == 0 && isTokenErr(err)):
				c.finish(err)
				return
			case status == http.StatusUnauthorized:
				rejected++
				if rejected >= 2 {
					c.finish(err)
					return
				}
				expired, wait, lastErr = true, 0, err
				continue
			case status == http.StatusForbidden || status == http.StatusNotFound || status == http.StatusBadRequest:
				c.finish(err)
				return
			}
			attempt++
			wait, lastErr = c.cfg.Backoff(attempt), err
			continue
		}
		expired, rejected = false, 0
		up := c.clock.Now()
		err = c.serve(sock)
		c.sock = nil
		if errors.Is(err, errUserClose) {
			c.finish(ErrClosed)
			return
		}
		if c.clock.Now().Sub(up) >= 5*time.Second {
			attempt = 0 // the connection was stable: start the backoff over
		}
		lastErr = err
		switch code := CloseStatus(err); {
		case code == CloseTokenExpired:
			expired, wait = true, 0
		case code == CloseGoingAway:
			// The replica shuts down and the others are up: come back at
			// once, spread over a quarter second.
			wait = time.Duration(mrand.N(int64(250 * time.Millisecond)))
		case code == CloseRevoked || code == CloseRemoved || code >= 4500:
			var ce websocket.CloseError
			errors.As(err, &ce)
			c.finish(&CloseError{Code: code, Reason: ce.Reason})
			return
		default:
			attempt++
			wait = c.cfg.Backoff(attempt)
		}
	}
}

// tokenError marks an error of the TokenFunc, which ends the Conn.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return "client: token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

func isTokenErr(err error) bool {
	var te *tokenError
	return errors.As(err, &te)
}

// connect gets a token, reads the first positions (once), and dials.
func (c *Conn) connect(expired bool) (*Socket, error) {
	tok, err := c.client.tokenFor(c.ctx, expired)
	if err != nil {
		if errors.Is(err, ErrNoToken) {
			return nil, err
		}
		return nil, &tokenError{err}
	}
	if !c.positioned {
		if err := c.readPositions(tok); err != nil {
			return nil, err
		}
		c.positioned = true
	}
	q := url.Values{}
	path := "/ws"
	if c.cfg.ChatID != 0 {
		path = "/ws/" + strconv.FormatInt(c.cfg.ChatID, 10)
		if st := c.chats[c.cfg.ChatID]; st != nil && st.known {
			q.Set("since_seq", strconv.FormatInt(st.last, 10))
		}
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	sock, _, err := DialSocket(ctx, c.client.wsURL(path, q), SocketOptions{
		HTTPClient: c.client.http,
		Header:     http.Header{"Authorization": {"Bearer " + tok}},
		Trace:      c.cfg.Trace,
	})
	return sock, err
}

// readPositions sets the position of every chat Since did not name from
// the server's last seq, before the first connection.
func (c *Conn) readPositions(tok string) error {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	bearer := func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+tok)
		return nil
	}
	var chats []rest.Chat
	if c.cfg.ChatID != 0 {
		if st := c.chats[c.cfg.ChatID]; st != nil && st.known {
			return nil
		}
		r, err := c.client.REST.GetChatWithResponse(ctx, c.cfg.ChatID, bearer)
		if err != nil {
			return err
		}
		if r.JSON200 == nil {
			return ResponseError(r.HTTPResponse, r.Body)
		}
		chats = []rest.Chat{*r.JSON200}
	} else {
		r, err := c.client.REST.ListChatsWithResponse(ctx, bearer)
		if err != nil {
			return err
		}
		if r.JSON200 == nil {
			return ResponseError(r.HTTPResponse, r.Body)
		}
		chats = *r.JSON200
	}
	for _, ch := range chats {
		if st := c.chats[ch.ID]; st == nil || !st.known {
			c.chats[ch.ID] = &chatState{known: true, last: lastSeq(ch)}
		}
	}
	c.snapshot()
	return nil
}

func lastSeq(ch rest.Chat) int64 {
	switch {
	case ch.LastSeq != nil:
		return *ch.LastSeq
	case ch.LastMessage != nil:
		return ch.LastMessage.Seq
	}
	return 0
}

// sleep waits d on the Clock, taking sends and fetches meanwhile; it
// reports false when Close was called.
func (c *Conn) sleep(d time.Duration) bool {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C():
			return true
		case <-c.closeReq:
			return false
		case <-c.wake:
			c.take()
		case f := <-c.fetched:
			c.onFetched(f)
		}
	}
}

// serve runs one socket: resume, then frames, sends and timers until the
// socket ends (its error says how) or Close is called.
func (c *Conn) serve(sock *Socket) error {
	c.sock, c.writeErr = sock, nil
	frames := make(chan readResult)
	stop := make(chan struct{})
	stopReader := sync.OnceFunc(func() { close(stop) })
	go func() { // reads the socket until it ends or serve returns
		for {
			f, err := sock.Read(context.Background())
			select {
			case frames <- readResult{f, err}:
			case <-stop:
				return
			}
			if err != nil && f.Raw == nil {
				return
			}
		}
	}()
	defer func() {
		stopReader()
		_ = sock.CloseNow()
		c.stopTimer()
	}()

	// Resume: every chat from its position, then the sends not yet acked
	// (same client_msg_id), then read receipts.
	now := c.clock.Now()
	c.inflight, c.pauseUntil, c.pauses = 0, time.Time{}, 0
	for _, p := range c.outbox {
		p.written = false
	}
	for id, st := range c.chats {
		st.syncDue, st.gapCheck, st.syncFails = time.Time{}, time.Time{}, 0
		if !st.known && st.hasFallback {
			st.known, st.last = true, st.fallback
		}
		if st.known && c.cfg.ChatID == 0 {
			c.writeSync(id, st, now) // /ws/{chat_id} resumed with since_seq
		}
	}
	c.take()
	c.pump(now)
	c.flushReads()
	if c.writeErr != nil {
		return c.writeErr
	}
	c.schedule(now.Add(c.cfg.IdleTimeout / 2))
	c.setState(Connected, nil)
	if !c.firstSent {
		c.firstSent = true
		c.first <- nil
	}

	for {
		var tc <-chan time.Time
		if c.timer != nil {
			tc = c.timer.C()
		}
		select {
		case r := <-frames:
			if r.err != nil && r.f.Raw == nil {
				return r.err
			}
			c.handle(r.f)
		case <-c.wake:
			c.take()
			c.pump(c.clock.Now())
			c.flushReads()
		case <-tc:
			c.timer, c.deadline = nil, time.Time{}
			if err := c.tick(sock); err != nil {
				return err
			}
		case f := <-c.fetched:
			c.onFetched(f)
		case <-c.closeReq:
			// The reader must not hold a frame for this goroutine while
			// Close waits for the server's close frame.
			stopReader()
			_ = sock.Close(int(websocket.StatusNormalClosure), "")
			return errUserClose
		}
		if c.writeErr != nil {
			return c.writeErr
		}
	}
}

// take moves new sends and read receipts from the application's side.
func (c *Conn) take() {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	for id, seq := range c.reads {
		if seq > c.sendReads[id] {
			c.sendReads[id] = seq
		}
		delete(c.reads, id)
	}
	c.mu.Unlock()
	for _, p := range q {
		p.seen = true
	}
	c.outbox = append(c.outbox, q...)
}

// pump writes unwritten sends, oldest first, while fewer than MaxInFlight
// wait for acks and no rate limit pause holds.
func (c *Conn) pump(now time.Time) {
	if c.sock == nil || now.Before(c.pauseUntil) {
		return
	}
	resolved := 0
	for _, p := range c.outbox {
		if p.resolved {
			resolved++
			continue
		}
		if p.written {
			continue
		}
		if c.inflight >= c.cfg.MaxInFlight || c.writeErr != nil {
			break
		}
		c.write(p.frame)
		p.written = true
		c.inflight++
	}
	if resolved > len(c.outbox)/2 {
		kept := c.outbox[:0]
		for _, p := range c.outbox {
			if !p.resolved {
				kept = append(kept, p)
			}
		}
		clear(c.outbox[len(kept):])
		c.outbox = kept
	}
}

func (c *Conn) flushReads() {
	if c.sock == nil {
		return
	}
	for id, seq := range c.sendReads {
		if c.writeErr != nil {
			return
		}
		chatID := id
		c.writeJSON(rest.MessageReadFrame{Type: rest.MessageReadFrameTypeMessageRead, ChatID: &chatID, Seq: seq})
		if c.writeErr == nil {
			delete(c.sendReads, id)
		}
	}
}

func (c *Conn) writeJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.writeErr = fmt.Errorf("client: encode frame: %w", err)
		return
	}
	c.write(b)
}

// write writes one frame; a failure ends the socket (serve returns it).
func (c *Conn) write(b []byte) {
	if c.writeErr != nil || c.sock == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
	defer cancel()
	if err := c.sock.WriteRaw(ctx, b); err != nil {
		c.writeErr = err
	}
}

func (c *Conn) writeSync(chatID int64, st *chatState, now time.Time) {
	id := chatID
	since := st.last
	c.writeJSON(rest.SyncFrame{Type: rest.Sync, ChatID: &id, SinceSeq: &since})
	st.syncDue = time.Time{}
	st.gapCheck = now.Add(c.cfg.GapTimeout)
	c.schedule(st.gapCheck)
}

// handle takes one server frame.
func (c *Conn) handle(f Frame) {
	switch v := f.Value.(type) {
	case rest.MessageNewFrame:
		c.deliver(v.Message, false)
	case rest.MessageAckFrame:
		c.acked(v)
		c.deliver(v.Message, v.Duplicate)
	case rest.ErrorFrame:
		if c.frameError(v) {
			return
		}
		c.onFrame(f)
	case rest.MemberAddedFrame:
		if st := c.chats[v.ChatID]; c.cfg.ChatID == 0 && (st == nil || !st.known && !st.hasFallback) {
			c.fetchPosition(v.ChatID)
		}
		c.onFrame(f)
	default:
		c.onFrame(f)
	}
}

func (c *Conn) onFrame(f Frame) {
	if c.cfg.OnFrame != nil {
		c.cfg.OnFrame(f)
	}
}

// deliver passes m to the application in seq order, once. A duplicate
// ack never sets a chat's first position: its message may be older than
// where the chat starts.
func (c *Conn) deliver(m rest.Message, duplicate bool) {
	st := c.chats[m.ChatID]
	if st == nil {
		if duplicate {
			return
		}
		st = &chatState{}
		c.chats[m.ChatID] = st
	}
	if !st.known {
		if duplicate {
			return
		}
		st.known, st.last = true, m.Seq-1
	}
	if m.Seq <= st.last {
		return // delivered already: a replay or a repeat
	}
	if st.buf == nil {
		st.buf = map[int64]rest.Message{}
	}
	if _, ok := st.buf[m.Seq]; !ok {
		st.buf[m.Seq] = m
	}
	moved := false
	for {
		next, ok := st.buf[st.last+1]
		if !ok {
			break
		}
		delete(st.buf, next.Seq)
		st.last = next.Seq
		moved = true
		if c.cfg.OnMessage != nil {
			c.cfg.OnMessage(next)
		}
	}
	if moved {
		c.snapshot()
	}
	switch {
	case !st.gap():
		st.gapCheck = time.Time{}
	case st.gapCheck.IsZero() && st.syncDue.IsZero():
		// A gap with no sync under way: ask for what is missing.
		c.writeSync(m.ChatID, st, c.clock.Now())
	}
}

// acked resolves the Pending an ack answers.
func (c *Conn) acked(a rest.MessageAckFrame) {
	p := c.takePending(sendKey{a.Message.ChatID, a.ClientMsgID})
	if p == nil {
		return
	}
	if p.written {
		c.inflight--
	}
	c.pauses = 0
	p.finish(a, nil)
	c.pump(c.clock.Now())
}

func (c *Conn) takePending(k sendKey) *Pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[k]
	if p == nil || !p.seen {
		return nil
	}
	delete(c.pending, k)
	return p
}

// frameError handles an error frame about a send or a sync; it reports
// whether the frame was consumed (not for the application's OnFrame).
func (c *Conn) frameError(e rest.ErrorFrame) bool {
	fe := &FrameError{e}
	now := c.clock.Now()
	if e.ClientMsgID != nil {
		p := c.findPending(e.ChatID, *e.ClientMsgID)
		if p == nil {
			return false
		}
		if p.written {
			p.written = false
			c.inflight--
		}
		if fe.Temporary() && c.cfg.SendRetries > 0 && p.attempts < c.cfg.SendRetries {
			p.attempts++
			c.pauses++
			c.pauseUntil = now.Add(c.cfg.Backoff(c.pauses))
			c.schedule(c.pauseUntil)
			return true
		}
		if c.takePending(sendKey{p.ChatID, p.ClientMsgID}) == p {
			p.finish(rest.MessageAckFrame{}, fe)
		}
		c.pump(now)
		return true
	}
	if e.ChatID == nil {
		return false
	}
	st := c.chats[*e.ChatID]
	if st == nil {
		return false
	}
	switch e.Code {
	case rest.ErrorFrameCodeRateLimited:
		if st.gapCheck.IsZero() {
			return false // not a sync of ours (a read receipt)
		}
		st.syncFails++
		st.gapCheck = time.Time{}
		st.syncDue = now.Add(c.cfg.Backoff(st.syncFails))
		c.schedule(st.syncDue)
		return true
	case rest.ErrorFrameCodeForbidden, rest.ErrorFrameCodeNotFound:
		// No longer a member (or no such chat): stop following it.
		delete(c.chats, *e.ChatID)
		c.snapshot()
	}
	return false
}

// findPending finds the written send an error frame names.
func (c *Conn) findPending(chatID *int64, cmid string) *Pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	if chatID != nil {
		if p := c.pending[sendKey{*chatID, cmid}]; p != nil && p.seen {
			return p
		}
		return nil
	}
	for k, p := range c.pending {
		if k.cmid == cmid && p.seen {
			return p
		}
	}
	return nil
}

// tick runs what is due: paused sends, syncs, the idle check.
func (c *Conn) tick(sock *Socket) error {
	now := c.clock.Now()
	if time.Since(sock.LastHeard()) > c.cfg.IdleTimeout {
		return errIdle
	}
	c.schedule(now.Add(c.cfg.IdleTimeout / 2))
	if !c.pauseUntil.IsZero() {
		if now.Before(c.pauseUntil) {
			c.schedule(c.pauseUntil)
		} else {
			c.pauseUntil = time.Time{}
			c.pump(now)
		}
	}
	for id, st := range c.chats {
		switch {
		case !st.syncDue.IsZero() && !now.Before(st.syncDue):
			c.writeSync(id, st, now)
		case !st.syncDue.IsZero():
			c.schedule(st.syncDue)
		case !st.gapCheck.IsZero() && !now.Before(st.gapCheck):
			if st.gap() {
				c.writeSync(id, st, now)
			} else {
				st.gapCheck = time.Time{}
			}
		case !st.gapCheck.IsZero():
			c.schedule(st.gapCheck)
		}
	}
	return nil
}

// schedule makes the timer fire at t at the latest.
func (c *Conn) schedule(t time.Time) {
	if !c.deadline.IsZero() && !t.Before(c.deadline) {
		return
	}
	c.stopTimer()
	c.deadline = t
	c.timer = c.clock.NewTimer(max(0, t.Sub(c.clock.Now())))
}

func (c *Conn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer, c.deadline = nil, time.Time{}
}

// fetchPosition reads, off the goroutine, the last seq of a chat just
// joined, as the place to resume it from if the connection drops before
// its first message arrives.
func (c *Conn) fetchPosition(chatID int64) {
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
		defer cancel()
		r, err := c.client.REST.GetChatWithResponse(ctx, chatID)
		if err != nil || r.JSON200 == nil {
			return // the chat then starts at the reconnect
		}
		select {
		case c.fetched <- fetchResult{chatID, lastSeq(*r.JSON200)}:
		case <-c.ctx.Done():
		}
	}()
}

func (c *Conn) onFetched(f fetchResult) {
	st := c.chats[f.chatID]
	if st == nil {
		st = &chatState{}
		c.chats[f.chatID] = st
	}
	if !st.known {
		st.fallback, st.hasFallback = f.last, true
	}
}

// snapshot publishes the positions for Positions.
func (c *Conn) snapshot() {
	c.mu.Lock()
	c.snapshotLocked()
	c.mu.Unlock()
}

func (c *Conn) snapshotLocked() {
	m := make(map[int64]int64, len(c.chats))
	for id, st := range c.chats {
		if st.known {
			m[id] = st.last
		}
	}
	c.posSnap = m
}

func (c *Conn) setState(s State, err error) {
	c.mu.Lock()
	same := c.state == s && c.reported
	c.state, c.reported = s, true
	c.mu.Unlock()
	if !same && c.cfg.OnState != nil {
		c.cfg.OnState(s, err)
	}
}

// finish ends the Conn with err: every waiting send fails.
func (c *Conn) finish(err error) {
	c.cancel()
	c.mu.Lock()
	c.closed, c.err = true, err
	waiting := make([]*Pending, 0, len(c.pending))
	for _, p := range c.pending {
		waiting = append(waiting, p)
	}
	c.pending, c.queue = map[sendKey]*Pending{}, nil
	failed := c.closedErrLocked()
	c.mu.Unlock()
	for _, p := range waiting {
		if !p.resolved {
			p.finish(rest.MessageAckFrame{}, failed)
		}
	}
	if !c.firstSent {
		c.firstSent = true
		c.first <- err
	}
	c.setState(Closed, err)
	if c.cfg.OnClose != nil {
		c.cfg.OnClose(err)
	}
}
