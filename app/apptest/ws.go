package apptest

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Frame is one server frame, decoded loosely so tests can inspect any
// field; Raw keeps the bytes.
type Frame struct {
	Type        string          `json:"type"`
	ChatID      int64           `json:"chat_id"`
	UserID      int64           `json:"user_id"`
	Seq         int64           `json:"seq"`
	Online      bool            `json:"online"`
	Code        string          `json:"code"`
	Message     json.RawMessage `json:"message"`
	ClientMsgID string          `json:"client_msg_id"`
	Duplicate   bool            `json:"duplicate"`
	Raw         []byte          `json:"-"`
}

// Msg is a frame's embedded message (message.new, message.ack).
type Msg struct {
	ID          int64  `json:"id"`
	ChatID      int64  `json:"chat_id"`
	Seq         int64  `json:"seq"`
	SenderID    int64  `json:"sender_id"`
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id"`
	Read        bool   `json:"read"`
}

// Msg decodes the frame's message.
func (f Frame) Msg() Msg {
	var m Msg
	_ = json.Unmarshal(f.Message, &m)
	return m
}

// WS is a test WebSocket client that collects every frame it receives.
// Every frame it receives is checked against ServerFrame in
// api/openapi.yaml, and every frame Send writes against ClientFrame; a
// mismatch fails the test that started the server. SendRaw and TrySendRaw
// write bytes unchecked, for tests that send malformed frames on purpose.
type WS struct {
	path   string
	server *Server
	conn   *websocket.Conn
	frames chan Frame
	closed chan struct{}
	mu     sync.Mutex
	status websocket.StatusCode // close code once closed
}

// DialWS opens path (e.g. "/ws/3?since_seq=2") on s with token in the query.
// It fails the test on any error.
func (s *Server) DialWS(t testing.TB, path, token string) *WS {
	t.Helper()
	w, resp, err := s.TryDialWS(path, token, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, code)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// TryDialWS opens path with token (in ?token= unless empty) and extra
// headers; it returns the handshake response on failure.
func (s *Server) TryDialWS(path, token string, header http.Header) (*WS, *http.Response, error) {
	u := "ws" + strings.TrimPrefix(s.URL, "http") + path
	if token != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		u += sep + "token=" + token
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 20)
	w := &WS{path: path, server: s, conn: c, frames: make(chan Frame, 100000), closed: make(chan struct{})}
	go w.read()
	return w, resp, nil
}

func (w *WS) read() {
	defer close(w.closed)
	for {
		_, data, err := w.conn.Read(context.Background())
		if err != nil {
			w.mu.Lock()
			w.status = websocket.CloseStatus(err)
			w.mu.Unlock()
			return
		}
		if err := w.server.Spec.CheckServerFrame(data); err != nil {
			w.server.rep.Errorf("ws %s: %v", w.path, err)
		}
		var f Frame
		_ = json.Unmarshal(data, &f)
		f.Raw = data
		w.frames <- f
	}
}

// Send writes v as a JSON text frame; v must be a ClientFrame of
// api/openapi.yaml (the test fails otherwise, and the frame is sent all
// the same).
func (w *WS) Send(t testing.TB, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.server.Spec.CheckClientFrame(b); err != nil {
		t.Errorf("ws %s: sending %v", w.path, err)
	}
	w.SendRaw(t, b)
}

// SendRaw writes data as a text frame, unchecked: tests of malformed
// frames use it.
func (w *WS) SendRaw(t testing.TB, data []byte) {
	t.Helper()
	if err := w.TrySendRaw(data); err != nil {
		t.Fatalf("ws write: %v", err)
	}
}

// TrySendRaw writes data as a text frame, unchecked, and returns the
// write error.
func (w *WS) TrySendRaw(data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.conn.Write(ctx, websocket.MessageText, data)
}

// Next returns the next frame, failing after timeout.
func (w *WS) Next(t testing.TB, timeout time.Duration) Frame {
	t.Helper()
	select {
	case f := <-w.frames:
		return f
	case <-time.After(timeout):
		t.Fatalf("no frame within %v", timeout)
	}
	return Frame{}
}

// Expect returns the next frame of type typ, failing on any other frame
// first or after timeout.
func (w *WS) Expect(t testing.TB, typ string, timeout time.Duration) Frame {
	t.Helper()
	f := w.Next(t, timeout)
	if f.Type != typ {
		t.Fatalf("got frame %s, want %s", f.Raw, typ)
	}
	return f
}

// Until returns the next frame of type typ, skipping others (returned too).
func (w *WS) Until(t testing.TB, typ string, timeout time.Duration) (Frame, []Frame) {
	t.Helper()
	deadline := time.After(timeout)
	var skipped []Frame
	for {
		select {
		case f := <-w.frames:
			if f.Type == typ {
				return f, skipped
			}
			skipped = append(skipped, f)
		case <-deadline:
			t.Fatalf("no %s frame within %v (skipped %d)", typ, timeout, len(skipped))
			return Frame{}, nil
		}
	}
}

// Quiet asserts no frame arrives for d.
func (w *WS) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case f := <-w.frames:
		t.Fatalf("got unexpected frame %s", f.Raw)
	case <-time.After(d):
	}
}

// QuietBut asserts that no frame other than the listed types (presence,
// say, whose timing across replicas a test does not control) arrives
// for d.
func (w *WS) QuietBut(t testing.TB, d time.Duration, ignore ...string) {
	t.Helper()
	for _, f := range w.Drain(d) {
		if !slices.Contains(ignore, f.Type) {
			t.Fatalf("got unexpected frame %s", f.Raw)
		}
	}
}

// Drain returns every frame that arrives within d.
func (w *WS) Drain(d time.Duration) []Frame {
	var out []Frame
	for { // what has arrived already, first
		select {
		case f := <-w.frames:
			out = append(out, f)
			continue
		default:
		}
		break
	}
	deadline := time.After(d)
	for {
		select {
		case f := <-w.frames:
			out = append(out, f)
		case <-deadline:
			return out
		}
	}
}

// WaitClosed waits for the server to close the connection and returns the
// close code (-1 when closed without one).
func (w *WS) WaitClosed(t testing.TB, timeout time.Duration) websocket.StatusCode {
	t.Helper()
	select {
	case <-w.closed:
	case <-time.After(timeout):
		t.Fatalf("connection not closed within %v", timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Close closes the client side.
func (w *WS) Close() {
	_ = w.conn.Close(websocket.StatusNormalClosure, "")
	select {
	case <-w.closed:
	case <-time.After(2 * time.Second):
		_ = w.conn.CloseNow()
	}
}

// CloseNow drops the TCP connection without a close handshake.
func (w *WS) CloseNow() { _ = w.conn.CloseNow() }

// IsClosed reports whether the read loop has ended.
func (w *WS) IsClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}
