package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// ErrReconnect: the connection was dropped because Reconnect asked
	// for a new one (OnState's Disconnected error).
	ErrReconnect = errors.New("client: reconnecting, as Reconnect asked")
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
// and resumes). They may call Send, SendWithID, MarkRead, Positions,
// Reconnect and Close. OnConnect and Trace run on that goroutine too.
type Config struct {
	// ChatID, when set, connects to /ws/{chat_id}: that chat only. Zero
	// connects to /ws: every chat of the user, and chats joined meanwhile.
	ChatID int64
	// Since holds resume positions by seq: chat id to the last seq the
	// application has. A listed chat is delivered from the next seq on
	// (new messages only: changes to older messages made before the
	// connection are not replayed); Resume overrides it for a chat. Chats
	// listed in neither start where GET /chats puts them before the first
	// connection: after their last message's revision, so nothing
	// committed after Dial was called is missed (changes to older messages
	// made after that revision reach OnUpdate).
	Since map[int64]int64
	// Resume holds resume positions by revision (from Conn.Resume): a
	// listed chat is delivered from after Position.Rev, edits, deletes and
	// reactions made meanwhile included; with Rev 0, from after
	// Position.Seq (as Since).
	Resume map[int64]Position
	// ResumeBySeq makes every reconnect resume by seq (since_seq, the
	// behaviour before revisions): a replay then brings new messages only,
	// and changes to older messages made while disconnected are lost.
	// Live updates still reach OnUpdate.
	ResumeBySeq bool

	// OnMessage sees every message once, in seq order per chat, the
	// application's own (from their acks) included.
	OnMessage func(m rest.Message)
	// OnUpdate sees every change (edit, delete, reaction) of a message
	// OnMessage has seen or that was there before the chat's start: the
	// message's state after it, once, in the order the changes were made.
	// Changes made while disconnected arrive after the reconnect, each
	// message collapsed into its latest state.
	OnUpdate func(m rest.Message)
	// OnTyping sees another member typing in a chat (show it for about
	// 5 s); nil passes typing frames to OnFrame.
	OnTyping func(chatID, userID int64)
	// OnError sees error frames that answer no send: a refused edit,
	// delete or reaction (ErrorFrame.ChatID and Seq name the message), read
	// receipt or typing frame. Nil passes them to OnFrame.
	OnError func(e *FrameError)
	// OnFrame sees every other server frame: read receipts, chat.read,
	// presence, member.added and member.removed (and typing and error
	// frames when OnTyping and OnError are nil).
	OnFrame func(f Frame)
	// OnState sees each state change; err says why the connection was lost
	// (Disconnected) or ended (Closed).
	OnState func(s State, err error)
	// OnConnect sees the server's answer to the handshake of every
	// connection the Conn opens (status 101, no Body), before OnState
	// reports it Connected: its headers say which server took it behind a
	// load balancer (WinDI Chat's X-Windi-Replica), its Request the URL
	// with the positions the connection resumes from.
	OnConnect func(resp *http.Response)
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
	// Trace, when set, sees every frame the Conn takes from a socket (out
	// false) and every frame it writes (out true), on the Conn's goroutine
	// in the order of events: a frame read just before the Conn's calls it
	// causes (OnMessage, OnError…). A frame a socket had read when the Conn
	// dropped it is not traced, since the Conn never took it (the resume
	// brings it again). Tests check frames against the spec with it, and
	// count what the server sent before the Conn dropped repeats.
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

// chatState is one chat's delivery state: its ordering state machine and
// the syncs that ask the server to replay it.
type chatState struct {
	*chatStream
	// fallback is where to resume a chat joined while connected that has
	// no position yet (read when it was joined); hasFallback reports one.
	fallback    Position
	hasFallback bool
	// inURL: the current handshake resumes the chat (since / since_rev).
	inURL bool
	// syncDue: a sync must be written then (it was rate limited).
	syncDue time.Time
	// gapCheck: a sync was written; if frames still wait for a missing
	// seq then, write it again.
	gapCheck  time.Time
	syncFails int // rate-limited syncs in a row
}

func newChatState(p Position, seqKnown bool) *chatState {
	return &chatState{chatStream: newChatStream(p, seqKnown)}
}

type readResult struct {
	f   Frame
	err error
}

type fetchResult struct {
	chatID int64
	pos    Position
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
	changes  [][]byte        // edit, delete and reaction frames not yet taken
	typing   map[int64]bool  // typing frames not yet taken, by chat
	typedAt  map[int64]time.Time
	closed   bool
	err      error
	state    State
	reported bool               // OnState has seen a state
	posSnap  map[int64]Position // positions, as of the goroutine's last change
	seqSnap  map[int64]bool     // chats of posSnap whose seq is known

	wake     chan struct{} // capacity 1: the queue or reads changed
	closeReq chan struct{} // closed by Close
	redial   chan struct{} // capacity 1: Reconnect was called
	done     chan struct{} // closed when the goroutine has ended
	fetched  chan fetchResult
	first    chan error // the first connection's outcome, once
	once     sync.Once
	// goroutine is the id of the goroutine that runs the Conn and its
	// callbacks, so that Close called from a callback does not wait for it.
	goroutine atomic.Uint64

	// Owned by the goroutine (run and what it calls).
	chats      map[int64]*chatState
	positioned bool   // the first positions were read
	lastToken  string // the token of the last connection attempt (run only)
	outbox     []*Pending
	inflight   int
	pauseUntil time.Time // rate limited: no sends before then
	pauses     int       // temporary send errors in a row
	sendReads  map[int64]int64
	outChanges []sentChange // taken changes not yet written (at: when first written, zero if never)
	// unconfirmed: changes written on the current socket that nothing the
	// server sent has settled yet (a message.updated or an error frame for
	// their message); written again on the next socket if it ends first.
	unconfirmed []sentChange
	outTyping   []int64 // taken typing frames, written if connected
	scratch     []delivery
	sock        *Socket
	writeErr    error
	deadline    time.Time
	timer       Timer
	firstSent   bool
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
		wake: make(chan struct{}, 1), closeReq: make(chan struct{}), redial: make(chan struct{}, 1), done: make(chan struct{}),
		fetched: make(chan fetchResult, 16), first: make(chan error, 1),
		chats: map[int64]*chatState{}, sendReads: map[int64]int64{},
	}
	conn.ctx, conn.cancel = context.WithCancel(context.Background())
	for id, seq := range cfg.Since {
		conn.chats[id] = newChatState(Position{Seq: seq}, true)
	}
	for id, p := range cfg.Resume {
		conn.chats[id] = newChatState(p, true)
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
	return c.SendWith(chatID, text, SendOptions{})
}

// SendWithID is Send with the application's own client_msg_id (1..64
// printable ASCII), for an application that keeps unsent messages across
// restarts: sending the same id again stores nothing new, and the ack
// carries the original message with Duplicate set. While a send with the
// same chat and id waits, SendWithID returns its Pending.
func (c *Conn) SendWithID(chatID int64, clientMsgID, text string) (*Pending, error) {
	return c.SendWith(chatID, text, SendOptions{ClientMsgID: clientMsgID})
}

// SendOptions are the optional parts of a send.
type SendOptions struct {
	// ClientMsgID is the send's id (see SendWithID); empty means a new
	// random one.
	ClientMsgID string
	// ReplyToSeq makes the message a reply to that message of the same
	// chat (deleted ones too); 0 means none. An unknown seq fails the send
	// with bad_request.
	ReplyToSeq int64
}

// SendWith is Send with options: a reply, the application's own
// client_msg_id.
func (c *Conn) SendWith(chatID int64, text string, o SendOptions) (*Pending, error) {
	if err := c.checkChat(chatID); err != nil {
		return nil, err
	}
	clientMsgID := o.ClientMsgID
	if clientMsgID == "" {
		clientMsgID = NewClientMsgID()
	}
	id := chatID
	f := rest.MessageSendFrame{Type: rest.MessageSend, ChatID: &id, ClientMsgID: clientMsgID, Text: text}
	if o.ReplyToSeq != 0 {
		reply := o.ReplyToSeq
		f.ReplyToSeq = &reply
	}
	frame, err := json.Marshal(f)
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

func (c *Conn) checkChat(chatID int64) error {
	if c.cfg.ChatID != 0 && chatID != c.cfg.ChatID {
		return fmt.Errorf("client: chat %d on the connection of chat %d", chatID, c.cfg.ChatID)
	}
	if chatID < 1 {
		return fmt.Errorf("client: chat id %d: must be positive", chatID)
	}
	return nil
}

// Edit asks the server to replace the text of message seq of chatID (a
// message.edit frame; only its sender may). Edit, Delete, React and
// Unreact are written in the order called, as soon as a connection is up
// (queued while there is none, and written again on the next connection
// if the socket failed under the write, or ended within 10 s of it before
// the server answered about the message: each is idempotent). Success
// reaches every connection, this one too, as message.updated (OnUpdate);
// an edit to the same text changes nothing and sends nothing. A refusal
// is an error frame naming chat and seq (OnError): forbidden (not the
// sender), not_found (no such seq), bad_request (a deleted message, or a
// text out of 1..4096 characters), too_large. The error returned here is
// only the local one: the Conn has ended, or MaxPending changes wait.
func (c *Conn) Edit(chatID, seq int64, text string) error {
	id := chatID
	return c.change(chatID, rest.MessageEditFrame{Type: rest.MessageEdit, ChatID: &id, Seq: seq, Text: text})
}

// Delete asks the server to delete message seq of chatID (its sender, or
// the group's owner, may): it becomes a tombstone (empty text, Deleted,
// no reactions), seen through OnUpdate. Deleting it again changes
// nothing. See Edit for how it travels and fails.
func (c *Conn) Delete(chatID, seq int64) error {
	id := chatID
	return c.change(chatID, rest.MessageDeleteFrame{Type: rest.MessageDelete, ChatID: &id, Seq: seq})
}

// React adds the user's emoji (1..16 characters, no whitespace) to message
// seq of chatID; adding one twice changes nothing. A message takes at
// most 20 distinct emoji and a deleted one none (bad_request). See Edit
// for how it travels and fails.
func (c *Conn) React(chatID, seq int64, emoji string) error {
	id := chatID
	return c.change(chatID, rest.ReactionAddFrame{Type: rest.ReactionAdd, ChatID: &id, Seq: seq, Emoji: emoji})
}

// Unreact removes the user's emoji from message seq of chatID; removing
// an absent one changes nothing. See Edit for how it travels and fails.
func (c *Conn) Unreact(chatID, seq int64, emoji string) error {
	id := chatID
	return c.change(chatID, rest.ReactionRemoveFrame{Type: rest.ReactionRemove, ChatID: &id, Seq: seq, Emoji: emoji})
}

func (c *Conn) change(chatID int64, v any) error {
	if err := c.checkChat(chatID); err != nil {
		return err
	}
	frame, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("client: encode frame: %w", err)
	}
	if len(frame) > MaxFrameBytes {
		return ErrFrameTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closedErrLocked()
	}
	if len(c.changes) >= c.cfg.MaxPending {
		return ErrQueueFull
	}
	c.changes = append(c.changes, frame)
	c.signal()
	return nil
}

// changeSettleWindow is how long after its write a change still counts
// as possibly unprocessed when its socket ends: the server answers a
// change within milliseconds, or not at all when it changed nothing (an
// edit to the same text), so one older than this is not written again.
const changeSettleWindow = 10 * time.Second

// sentChange is an edit, delete or reaction frame written on the current
// socket, and the message it is about.
type sentChange struct {
	frame       []byte
	chatID, seq int64
	at          time.Time
}

func newSentChange(frame []byte, at time.Time) sentChange {
	var k struct {
		ChatID int64 `json:"chat_id"`
		Seq    int64 `json:"seq"`
	}
	_ = json.Unmarshal(frame, &k) // the Conn encoded it
	return sentChange{frame: frame, chatID: k.ChatID, seq: k.Seq, at: at}
}

// settleChanges forgets the written changes of message seq of chatID: the
// server has answered about that message since (message.updated: the
// change, or a later one, is applied; an error frame: it was refused).
func (c *Conn) settleChanges(chatID, seq int64) {
	c.unconfirmed = slices.DeleteFunc(c.unconfirmed, func(sc sentChange) bool {
		return sc.chatID == chatID && sc.seq == seq
	})
}

// requeueChanges runs when a socket ends: the changes first written in the
// last changeSettleWindow that the server has not answered about may not
// have been processed (written as a replica was shutting down, or into a
// link that had died), so they go first on the next socket. Each is
// idempotent, so one that was applied changes nothing the second time.
// The only changes that may compete with one written again are the same
// user's on another device (only the sender edits, reactions are per
// user), made within seconds.
func (c *Conn) requeueChanges() {
	if len(c.unconfirmed) == 0 {
		return
	}
	now := c.clock.Now()
	var again []sentChange
	for _, sc := range c.unconfirmed {
		if now.Sub(sc.at) <= changeSettleWindow {
			again = append(again, sc) // its first write's time: written again within the window only
		}
	}
	c.unconfirmed = nil
	c.outChanges = append(again, c.outChanges...)
}

// TypingInterval is how often Typing writes a typing frame for one chat
// at most: the server relays one per user and chat every 2 s and drops
// the rest.
const TypingInterval = 2 * time.Second

// Typing tells the chat's other members that the user is typing: call it
// on every keystroke. It writes a typing frame at most every
// TypingInterval per chat, and only while connected (typing is not worth
// sending late); the others see it through OnTyping for about 5 s.
func (c *Conn) Typing(chatID int64) error {
	if err := c.checkChat(chatID); err != nil {
		return err
	}
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closedErrLocked()
	}
	if c.state != Connected {
		return nil // typing is not worth sending late
	}
	if at, ok := c.typedAt[chatID]; ok && now.Sub(at) < TypingInterval {
		return nil
	}
	if c.typedAt == nil {
		c.typedAt, c.typing = map[int64]time.Time{}, map[int64]bool{}
	}
	c.typedAt[chatID] = now
	c.typing[chatID] = true
	c.signal()
	return nil
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

// Positions returns each chat's last seq delivered to OnMessage. Keep it
// to resume a later Conn by seq with Config.Since; Resume keeps more.
func (c *Conn) Positions() map[int64]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int64]int64, len(c.posSnap))
	for k, v := range c.posSnap {
		if c.seqSnap[k] {
			out[k] = v.Seq
		}
	}
	return out
}

// Resume returns each chat's position with its revision. Keep it to
// resume a later Conn (Config.Resume) with every change made meanwhile,
// edits, deletes and reactions included.
func (c *Conn) Resume() map[int64]Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int64]Position, len(c.posSnap))
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
// ended (and OnClose has run). Called from a callback, it returns at once
// and the Conn ends when the callback has returned. Closing twice is
// harmless.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.closeReq)
		c.cancel()
	})
	if goroutineID() == c.goroutine.Load() {
		// Called from a callback (or Trace), on the Conn's goroutine: it
		// ends once the callback has returned; waiting here would wait for
		// ever.
		return nil
	}
	<-c.done
	return nil
}

// goroutineID is the id of the calling goroutine, from the first line of
// its stack ("goroutine 18 [running]:"). Go does not expose it otherwise;
// Close alone asks, to tell a call from the Conn's own callbacks.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

// Reconnect drops the current connection and opens a new one at once,
// resuming as after any lost connection (sends not yet acked are written
// again, with their client_msg_id): to move to another server behind a
// load balancer, say, or when the device has changed networks and the old
// path may be dead. The old socket is closed with 1000 in the background.
// While the Conn waits to reconnect after a loss, Reconnect ends the wait;
// while it dials, the connection being dialed is the new one. OnState
// reports Disconnected with ErrReconnect, then Connecting and Connected.
// After the Conn has ended it does nothing.
func (c *Conn) Reconnect() {
	select {
	case c.redial <- struct{}{}:
	default: // one is pending already
	}
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
	c.goroutine.Store(goroutineID())
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
		select { // a Reconnect asked for before this attempt: it is the new connection
		case <-c.redial:
		default:
		}
		sock, resp, err := c.connect(expired)
		if err != nil {
			if c.ctx.Err() != nil {
				c.finish(ErrClosed)
				return
			}
			switch status := StatusOf(err); {
			case errors.Is(err, ErrNoToken) || errors.Is(err, ErrSessionEnded) || (status == 0 && isTokenErr(err)):
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
		if c.cfg.OnConnect != nil {
			c.cfg.OnConnect(resp)
		}
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
		case errors.Is(err, ErrReconnect):
			wait = 0
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

// connect gets a token, reads the first positions (once), and dials; it
// returns the handshake's answer too.
func (c *Conn) connect(expired bool) (*Socket, *http.Response, error) {
	tok, err := c.client.tokenFor(c.ctx, expired, c.lastToken)
	if err != nil {
		if errors.Is(err, ErrNoToken) || errors.Is(err, ErrSessionEnded) {
			return nil, nil, err
		}
		if c.client.hasTokenFunc() {
			return nil, nil, &tokenError{err}
		}
		return nil, nil, err // a refresh that failed on the way (network, 503): retried with backoff
	}
	c.lastToken = tok
	if !c.positioned {
		if err := c.readPositions(tok); err != nil {
			return nil, nil, err
		}
		c.positioned = true
	}
	path, query := "/ws", c.resumeQuery()
	if c.cfg.ChatID != 0 {
		path = "/ws/" + strconv.FormatInt(c.cfg.ChatID, 10)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	opts := SocketOptions{
		HTTPClient: c.client.http,
		Header:     http.Header{"Authorization": {"Bearer " + tok}},
	}
	if trace := c.cfg.Trace; trace != nil {
		// Writes are traced by the socket (they happen on this goroutine);
		// reads by serve, when it takes them.
		opts.Trace = func(out bool, data []byte) {
			if out {
				trace(true, data)
			}
		}
	}
	sock, resp, err := DialSocket(ctx, c.client.wsURLRaw(path, query), opts)
	if err != nil {
		return nil, nil, err
	}
	return sock, resp, nil
}

// maxResumeQuery bounds the positions listed in the handshake URL (the
// server takes request headers up to 16 KiB); chats beyond it resume with
// sync frames once the socket is open.
const maxResumeQuery = 6 << 10

// resumeQuery prepares every chat for a new socket and returns the
// handshake's query, which resumes each chat from its position:
// since_rev (or since_seq without a revision) on /ws/{chat_id}; on /ws
// the since_rev=chat:rev,… and since=chat:seq,… lists, so every chat
// resumes at the handshake without racing live frames. Chats that do not
// fit are left to sync frames (serve).
func (c *Conn) resumeQuery() string {
	ids := make([]int64, 0, len(c.chats))
	for id, st := range c.chats {
		st.reconnected()
		st.inURL = false
		if !st.hasPosition() && st.hasFallback {
			st.chatStream = newChatStream(st.fallback, true)
		}
		if st.hasPosition() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if c.cfg.ChatID != 0 {
		st := c.chats[c.cfg.ChatID]
		if st == nil || !st.hasPosition() {
			return ""
		}
		st.inURL = true
		if st.rev > 0 && !c.cfg.ResumeBySeq {
			return "since_rev=" + strconv.FormatInt(st.rev, 10)
		}
		return "since_seq=" + strconv.FormatInt(st.seq, 10)
	}
	// Colons and commas need no escaping in a query (RFC 3986 §3.4).
	var byRev, bySeq []byte
	for _, id := range ids {
		st := c.chats[id]
		list, pos := &bySeq, st.seq
		if st.rev > 0 && !c.cfg.ResumeBySeq {
			list, pos = &byRev, st.rev
		}
		if len(byRev)+len(bySeq) > maxResumeQuery {
			break
		}
		if len(*list) > 0 {
			*list = append(*list, ',')
		}
		*list = strconv.AppendInt(*list, id, 10)
		*list = append(*list, ':')
		*list = strconv.AppendInt(*list, pos, 10)
		st.inURL = true
	}
	var q []string
	if len(byRev) > 0 {
		q = append(q, "since_rev="+string(byRev))
	}
	if len(bySeq) > 0 {
		q = append(q, "since="+string(bySeq))
	}
	return strings.Join(q, "&")
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
		if st := c.chats[c.cfg.ChatID]; st != nil && st.hasPosition() {
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
		if st := c.chats[ch.ID]; st == nil || !st.hasPosition() {
			c.chats[ch.ID] = newChatState(chatStart(ch), true)
		}
	}
	c.snapshot()
	return nil
}

// chatStart is where a chat without a position starts: after its last
// message, by the revision of that message's latest change. Chat carries
// no revision of its own, so changes to older messages made after that
// revision are replayed (to OnUpdate) rather than missed.
func chatStart(ch rest.Chat) Position {
	var p Position
	switch {
	case ch.LastSeq != nil:
		p.Seq = *ch.LastSeq
	case ch.LastMessage != nil:
		p.Seq = ch.LastMessage.Seq
	}
	if ch.LastMessage != nil {
		p.Rev = ch.LastMessage.Rev
	}
	return p
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
		case <-c.redial:
			return true
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
	closeSock := sock.CloseNow
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
		_ = closeSock()
		c.stopTimer()
		c.requeueChanges()
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
		if st.hasPosition() && !st.inURL {
			c.writeSync(id, st, now) // more chats than the handshake URL holds
		}
	}
	c.take()
	c.pump(now)
	c.flushReads()
	c.flushChanges()
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
			if c.cfg.Trace != nil {
				c.cfg.Trace(false, r.f.Raw)
			}
			c.handle(r.f)
		case <-c.wake:
			c.take()
			c.pump(c.clock.Now())
			c.flushReads()
			c.flushChanges()
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
		case <-c.redial:
			// The close handshake waits for the server (up to 5 s, longer
			// than a dead path deserves): the new socket need not.
			stopReader()
			closeSock = func() error {
				go func() { _ = sock.Close(int(websocket.StatusNormalClosure), "reconnecting") }()
				return nil
			}
			return ErrReconnect
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
	for _, f := range c.changes {
		c.outChanges = append(c.outChanges, sentChange{frame: f})
	}
	clear(c.changes)
	c.changes = c.changes[:0]
	for id := range c.typing {
		if c.sock != nil { // typing is not worth sending late
			c.outTyping = append(c.outTyping, id)
		}
		delete(c.typing, id)
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

// flushChanges writes the edits, deletes and reaction changes taken, in
// order, and the typing frames; a change whose write fails stays for the
// next socket.
func (c *Conn) flushChanges() {
	if c.sock == nil {
		return
	}
	now := c.clock.Now()
	// Changes written longer ago than the window are not written again:
	// forget them (a socket full of changes the server answers nothing
	// about, edits to the same text, would keep them all otherwise).
	c.unconfirmed = slices.DeleteFunc(c.unconfirmed, func(sc sentChange) bool { return now.Sub(sc.at) > changeSettleWindow })
	for len(c.outChanges) > 0 && c.writeErr == nil {
		sc := c.outChanges[0]
		c.write(sc.frame)
		if c.writeErr == nil {
			if sc.at.IsZero() {
				sc = newSentChange(sc.frame, now) // written again keeps its first time
			}
			c.unconfirmed = append(c.unconfirmed, sc)
			c.outChanges[0] = sentChange{}
			c.outChanges = c.outChanges[1:]
		}
	}
	if len(c.outChanges) == 0 {
		c.outChanges = nil
	}
	for _, id := range c.outTyping {
		chatID := id
		c.writeJSON(rest.TypingFrame{Type: rest.TypingFrameTypeTyping, ChatID: &chatID})
	}
	c.outTyping = c.outTyping[:0]
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

// writeSync asks the server to replay chatID from its position: by rev
// (every change after it), or by seq without a revision or with
// ResumeBySeq (new messages only). What waits for a missing seq stays:
// the replay brings the missing message, and repeats are dropped.
func (c *Conn) writeSync(chatID int64, st *chatState, now time.Time) {
	id := chatID
	f := rest.SyncFrame{Type: rest.Sync, ChatID: &id}
	if st.rev > 0 && !c.cfg.ResumeBySeq {
		rev := st.rev
		f.SinceRev = &rev
	} else {
		seq := st.seq
		f.SinceSeq = &seq
	}
	c.writeJSON(f)
	st.syncDue = time.Time{}
	st.gapCheck = now.Add(c.cfg.GapTimeout)
	c.schedule(st.gapCheck)
}

// handle takes one server frame.
func (c *Conn) handle(f Frame) {
	switch v := f.Value.(type) {
	case rest.MessageNewFrame:
		c.offer(v.Message, true)
	case rest.MessageUpdatedFrame:
		c.settleChanges(v.Message.ChatID, v.Message.Seq)
		c.offer(v.Message, false)
	case rest.MessageAckFrame:
		c.acked(v)
		// A duplicate's message was stored before (maybe before where the
		// chat starts): the stream brings it, if the application is to see
		// it, in its place; the ack itself comes out of order.
		if !v.Duplicate {
			c.offer(v.Message, true)
		}
	case rest.TypingEventFrame:
		if c.cfg.OnTyping != nil {
			c.cfg.OnTyping(v.ChatID, v.UserID)
		} else {
			c.onFrame(f)
		}
	case rest.ErrorFrame:
		if v.ChatID != nil && v.Seq != nil {
			c.settleChanges(*v.ChatID, *v.Seq)
		}
		if c.frameError(v) {
			return
		}
		if c.cfg.OnError != nil {
			c.cfg.OnError(&FrameError{v})
		} else {
			c.onFrame(f)
		}
	case rest.MemberAddedFrame:
		if st := c.chats[v.ChatID]; c.cfg.ChatID == 0 && (st == nil || !st.hasPosition() && !st.hasFallback) {
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

// offer runs one message frame through its chat's ordering state machine
// and hands the application what comes out.
func (c *Conn) offer(m rest.Message, isNew bool) {
	st := c.chats[m.ChatID]
	if st == nil {
		st = newChatState(Position{}, false) // a chat joined meanwhile: starts with its first frame
		c.chats[m.ChatID] = st
	}
	before := st.position()
	out := st.offer(m, isNew, c.scratch[:0])
	for i, d := range out {
		if d.created {
			if c.cfg.OnMessage != nil {
				c.cfg.OnMessage(d.m)
			}
		} else if c.cfg.OnUpdate != nil {
			c.cfg.OnUpdate(d.m)
		}
		out[i] = delivery{}
	}
	c.scratch = out[:0]
	if st.position() != before {
		c.snapshot()
	}
	switch {
	case !st.waiting():
		st.gapCheck = time.Time{}
	case st.gapCheck.IsZero() && st.syncDue.IsZero():
		// A missing seq with no sync under way: ask for what is missing.
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
	if e.ChatID == nil || e.Seq != nil {
		return false // an edit, delete or reaction refused: the application's
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
			if st.waiting() {
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
		case c.fetched <- fetchResult{chatID, chatStart(*r.JSON200)}:
		case <-c.ctx.Done():
		}
	}()
}

func (c *Conn) onFetched(f fetchResult) {
	st := c.chats[f.chatID]
	if st == nil {
		st = newChatState(Position{}, false)
		c.chats[f.chatID] = st
	}
	if !st.hasPosition() {
		st.fallback, st.hasFallback = f.pos, true
	}
}

// snapshot publishes the positions for Positions.
func (c *Conn) snapshot() {
	c.mu.Lock()
	c.snapshotLocked()
	c.mu.Unlock()
}

func (c *Conn) snapshotLocked() {
	m, known := make(map[int64]Position, len(c.chats)), make(map[int64]bool, len(c.chats))
	for id, st := range c.chats {
		if st.hasPosition() {
			m[id], known[id] = st.position(), st.seqKnown
		}
	}
	c.posSnap, c.seqSnap = m, known
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
