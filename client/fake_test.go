package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// fakeClock is a Clock whose time moves only when a test advances it.
type fakeClock struct {
	mu     sync.Mutex // guards the fields below
	now    time.Time
	timers []*fakeTimer
	made   []time.Duration // every timer's duration, in order
	change chan struct{}   // closed and replaced when a timer is made
}

type fakeTimer struct {
	clock *fakeClock
	at    time.Time
	c     chan time.Time
	done  bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), change: make(chan struct{})}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) client.Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clock: f, at: f.now.Add(d), c: make(chan time.Time, 1)}
	f.made = append(f.made, d)
	if d <= 0 {
		t.done = true
		t.c <- f.now
	} else {
		f.timers = append(f.timers, t)
	}
	close(f.change)
	f.change = make(chan struct{})
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// Advance moves the time by d and fires every timer due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.timers[:0]
	for _, t := range f.timers {
		switch {
		case t.done:
		case !t.at.After(f.now):
			t.done = true
			t.c <- f.now
		default:
			kept = append(kept, t)
		}
	}
	f.timers = kept
}

// WaitTimer waits until a live timer of exactly d exists, failing after
// a while: the test then knows the Conn is waiting for it.
func (f *fakeClock) WaitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	f.WaitTimerWithin(t, d, d)
}

// WaitTimerWithin waits until a live timer due in lo..hi exists.
func (f *fakeClock) WaitTimerWithin(t *testing.T, lo, hi time.Duration) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		for _, tm := range f.timers {
			if d := tm.at.Sub(f.now); !tm.done && d >= lo && d <= hi {
				f.mu.Unlock()
				return
			}
		}
		ch := f.change
		f.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no timer due in %v..%v was started", lo, hi)
		}
	}
}

// fakeServer speaks just enough of WinDI Chat for a Conn: GET /chats,
// GET /chats/{id}, and WebSockets whose frames the test reads and writes.
type fakeServer struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *fakeConn

	mu       sync.Mutex        // guards the fields below
	chats    []rest.Chat       // GET /chats
	refuse   []int             // statuses for the next handshakes
	tokens   []string          // Authorization of each handshake
	paths    []string          // path and query of each handshake
	accepted map[string]bool   // tokens the server accepts; nil accepts any
	listHits int               // GET /chats answered
	closed   []*websocket.Conn // to close at the end
	all      []*fakeConn       // every connection, in order
}

type fakeConn struct {
	t  *testing.T
	ws *websocket.Conn
	in chan map[string]any
	// end is the read error that ended the connection, set before in is
	// closed (it carries the client's close code).
	end error
}

func newFakeServer(t *testing.T, chats ...rest.Chat) *fakeServer {
	f := &fakeServer{t: t, conns: make(chan *fakeConn, 10), chats: chats}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /chats", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.listHits++
		body, _ := json.Marshal(f.chats)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /chats/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, ch := range f.chats {
			if ch.ID == id {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(ch)
				return
			}
		}
		http.Error(w, `{"code":"not_found","title":"no such chat","status":404,"type":"about:blank"}`, http.StatusNotFound)
	})
	ws := func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.tokens = append(f.tokens, auth)
		f.paths = append(f.paths, r.URL.RequestURI())
		status := 0
		if len(f.refuse) > 0 {
			status, f.refuse = f.refuse[0], f.refuse[1:]
		}
		if f.accepted != nil && !f.accepted[auth] {
			status = http.StatusUnauthorized
		}
		f.mu.Unlock()
		if status != 0 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"code":"refused","title":"refused","status":` + strconv.Itoa(status) + `,"type":"about:blank"}`))
			return
		}
		// Each connection names itself, as a replica behind a proxy does.
		f.mu.Lock()
		w.Header().Set("X-Windi-Replica", "fake-"+strconv.Itoa(len(f.all)+1))
		f.mu.Unlock()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		fc := &fakeConn{t: t, ws: c, in: make(chan map[string]any, 1000)}
		f.mu.Lock()
		f.closed = append(f.closed, c)
		f.all = append(f.all, fc)
		f.mu.Unlock()
		go func() {
			defer close(fc.in)
			for {
				_, data, err := c.Read(context.Background())
				if err != nil {
					fc.end = err
					return
				}
				var m map[string]any
				if err := json.Unmarshal(data, &m); err != nil {
					t.Errorf("client sent a frame that is not JSON: %s", data)
					continue
				}
				fc.in <- m
			}
		}()
		f.conns <- fc
	}
	mux.HandleFunc("/ws", ws)
	mux.HandleFunc("/ws/{id}", ws)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.mu.Lock()
		for _, c := range f.closed {
			_ = c.CloseNow()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeServer) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(f.srv.URL, append([]client.Option{client.WithToken("tok-1")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// next returns the next connection the client opened.
func (f *fakeServer) next(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not connect")
		return nil
	}
}

// none asserts the client opens no connection for a while (real time:
// only for the absence of a reconnect the fake clock would not cause).
func (f *fakeServer) none(t *testing.T) {
	t.Helper()
	select {
	case <-f.conns:
		t.Fatal("the client connected again")
	case <-time.After(100 * time.Millisecond):
	}
}

func (c *fakeConn) read(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m, ok := <-c.in:
		if !ok {
			t.Fatal("the connection closed while a frame was expected")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no frame from the client")
		return nil
	}
}

// last returns the newest connection the client opened.
func (f *fakeServer) last(t *testing.T) *fakeConn {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.all) == 0 {
		t.Fatal("no connection")
	}
	return f.all[len(f.all)-1]
}

// none asserts the client writes nothing for a while (real time).
func (c *fakeConn) none(t *testing.T) {
	t.Helper()
	select {
	case m, ok := <-c.in:
		if ok {
			t.Fatalf("the client wrote %v", m)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func (c *fakeConn) write(t *testing.T, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("server write: %v", err)
	}
}

func (c *fakeConn) close(code int) {
	_ = c.ws.Close(websocket.StatusCode(code), "test")
}

// msg is a message created by its own revision and not changed since.
func msg(chatID, seq int64, text string) rest.Message { return rmsg(chatID, seq, seq, text) }

// rmsg is a message whose latest change is rev.
func rmsg(chatID, seq, rev int64, text string) rest.Message {
	return rest.Message{ID: chatID*1000 + seq, ChatID: chatID, Seq: seq, Rev: rev, SenderID: 9, Text: text,
		ClientMsgID: "c-" + strconv.FormatInt(seq, 10), CreatedAt: time.Unix(1_700_000_000, 0).UTC(), Reactions: []rest.Reaction{}}
}

func newFrame(m rest.Message) rest.MessageNewFrame {
	return rest.MessageNewFrame{Type: rest.MessageNew, Message: m}
}

func updated(m rest.Message) rest.MessageUpdatedFrame {
	return rest.MessageUpdatedFrame{Type: rest.MessageUpdated, Message: m}
}

// recorder collects what a Conn hands the application.
type recorder struct {
	mu      sync.Mutex // guards the fields below
	msgs    []rest.Message
	updates []rest.Message
	typing  [][2]int64 // chat and user
	errors  []*client.FrameError
	frames  []client.Frame
	closed  []error
	change  chan struct{}
}

func newRecorder() *recorder { return &recorder{change: make(chan struct{})} }

func (r *recorder) config(cfg client.Config) client.Config {
	cfg.OnMessage = func(m rest.Message) { r.add(func() { r.msgs = append(r.msgs, m) }) }
	cfg.OnUpdate = func(m rest.Message) { r.add(func() { r.updates = append(r.updates, m) }) }
	cfg.OnTyping = func(chatID, userID int64) { r.add(func() { r.typing = append(r.typing, [2]int64{chatID, userID}) }) }
	cfg.OnError = func(e *client.FrameError) { r.add(func() { r.errors = append(r.errors, e) }) }
	cfg.OnFrame = func(f client.Frame) { r.add(func() { r.frames = append(r.frames, f) }) }
	cfg.OnClose = func(err error) { r.add(func() { r.closed = append(r.closed, err) }) }
	return cfg
}

func (r *recorder) add(fn func()) {
	r.mu.Lock()
	fn()
	close(r.change)
	r.change = make(chan struct{})
	r.mu.Unlock()
}

// waitFor waits until cond (called under the lock) holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok, ch := cond(), r.change
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// seqs returns the seqs delivered for chatID, in delivery order.
func (r *recorder) seqs(chatID int64) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, m := range r.msgs {
		if m.ChatID == chatID {
			out = append(out, m.Seq)
		}
	}
	return out
}
