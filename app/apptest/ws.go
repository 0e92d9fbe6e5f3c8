package apptest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
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

// WS is a test WebSocket client, a client.Socket that collects every frame
// it receives. Every frame it receives is checked against ServerFrame in
// api/openapi.yaml, and every frame Send writes against ClientFrame; a
// mismatch fails the test that started the server. SendRaw and TrySendRaw
// write bytes unchecked (over 64 KiB too), for tests that send malformed
// frames on purpose.
type WS struct {
	path   string
	server *Server
	sock   *client.Socket
	check  func(out bool, data []byte) // Server.SpecTrace
	frames chan Frame
	closed chan struct{}
	// heard is the frame the read loop's current Read took off the wire,
	// and got whether there was one; Trace sets them, on the reading
	// goroutine.
	heard  []byte
	got    bool
	mu     sync.Mutex
	status int // close code once closed
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
// headers; it returns the handshake response, on failure too. A refusal
// with a status is a *client.HandshakeError, which holds the problem
// document (the response's body has been read for it).
func (s *Server) TryDialWS(path, token string, header http.Header) (*WS, *http.Response, error) {
	w := &WS{path: path, server: s, check: s.SpecTrace(path), frames: make(chan Frame, 100000), closed: make(chan struct{})}
	if token != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "token=" + token
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sock, resp, err := s.SDK.DialSocket(ctx, path, client.SocketOptions{
		Header: header, ReadLimit: 1 << 20, Oversize: true, Trace: w.trace,
	})
	if err != nil {
		return nil, resp, err
	}
	w.sock = sock
	go w.read()
	return w, resp, nil
}

// SpecTrace returns a client.SocketOptions.Trace that checks every frame
// read against ServerFrame in api/openapi.yaml and reports a mismatch
// (naming the socket) to the test that started the server. Frames
// written are not checked: raw writes may be malformed on purpose.
func (s *Server) SpecTrace(name string) func(out bool, data []byte) {
	return func(out bool, data []byte) {
		if out {
			return
		}
		if err := s.Spec.CheckServerFrame(data); err != nil {
			s.rep.Errorf("ws %s: %v", name, err)
		}
	}
}

// trace is the socket's Trace: it checks each frame read against the spec
// and keeps it for the read loop, whatever Read then makes of it.
func (w *WS) trace(out bool, data []byte) {
	if out {
		return
	}
	w.check(out, data)
	w.heard, w.got = data, true
}

func (w *WS) read() {
	defer close(w.closed)
	for {
		w.heard, w.got = nil, false
		// A frame that does not decode into the SDK's types is an error
		// of Read's but still a frame to hand to the test (the spec check
		// has reported it): only a Read that heard nothing ends the loop.
		_, err := w.sock.Read(context.Background())
		data := w.heard
		if !w.got {
			w.mu.Lock()
			w.status = client.CloseStatus(err)
			w.mu.Unlock()
			return
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
	return w.sock.WriteRaw(ctx, data)
}

// Next returns the next frame, failing after timeout, or at once when the
// connection has ended and every frame it brought has been taken.
func (w *WS) Next(t testing.TB, timeout time.Duration) Frame {
	t.Helper()
	f, why := w.next(time.After(timeout))
	if why != "" {
		t.Fatalf("no frame within %v: %s", timeout, why)
	}
	return f
}

// next returns the next frame, or why there is none: the deadline passed
// or the connection ended.
func (w *WS) next(deadline <-chan time.Time) (Frame, string) {
	select {
	case f := <-w.frames:
		return f, ""
	case <-w.closed:
		// The read loop hands over every frame before it ends.
		select {
		case f := <-w.frames:
			return f, ""
		default:
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return Frame{}, fmt.Sprintf("the connection ended (close code %d)", w.status)
	case <-deadline:
		return Frame{}, "timed out"
	}
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
		f, why := w.next(deadline)
		if why != "" {
			t.Fatalf("no %s frame within %v (skipped %d): %s", typ, timeout, len(skipped), why)
			return Frame{}, nil
		}
		if f.Type == typ {
			return f, skipped
		}
		skipped = append(skipped, f)
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
func (w *WS) WaitClosed(t testing.TB, timeout time.Duration) int {
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
	_ = w.sock.Close(1000, "")
	select {
	case <-w.closed:
	case <-time.After(2 * time.Second):
		_ = w.sock.CloseNow()
	}
}

// CloseNow drops the TCP connection without a close handshake.
func (w *WS) CloseNow() { _ = w.sock.CloseNow() }

// IsClosed reports whether the read loop has ended.
func (w *WS) IsClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}
