package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/app/apptest/speccheck"
)

// replicaHeader names the replica that answered a request (every response,
// the WebSocket 101 included, carries it).
const replicaHeader = "X-Windi-Replica"

// api is a REST client for one base URL (the proxy).
type api struct {
	base string
	hc   *http.Client
}

// newAPI returns a client of base whose every response is checked against
// api/openapi.yaml; a mismatch fails t.
func newAPI(t testing.TB, base string) *api {
	t.Helper()
	tr := &speccheck.Transport{Checker: spec(t), R: speccheck.ForTest(t), Skip: notFromReplica}
	return &api{base: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: 15 * time.Second, Transport: tr}}
}

// spec returns the checker of api/openapi.yaml.
func spec(t testing.TB) *speccheck.Checker {
	t.Helper()
	c, err := speccheck.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// notFromReplica leaves out what nginx answered itself (a 502 while no
// replica is up, say): the spec describes the server, not the proxy.
func notFromReplica(resp *http.Response) string {
	if resp.Header.Get(replicaHeader) == "" {
		return "answered by the proxy, not a replica"
	}
	return ""
}

// do sends a request and decodes a JSON answer into out (unless nil). It
// fails the test unless the status is want.
func (a *api) do(t testing.TB, method, path, token string, body io.Reader, contentType string, want int, out any) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: got status %d from replica %q, want %d; body: %s", method, path, resp.StatusCode, resp.Header.Get(replicaHeader), want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp
}

// json sends v as a JSON body.
func (a *api) json(t testing.TB, method, path, token string, v any, want int, out any) *http.Response {
	t.Helper()
	var body io.Reader
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	return a.do(t, method, path, token, body, "application/json", want, out)
}

// user is a registered, logged-in user.
type user struct {
	ID    int64
	Email string
	Token string
}

// register creates a user with a random email and logs it in.
func (a *api) register(t testing.TB, name string) user {
	t.Helper()
	email := fmt.Sprintf("e2e-%s-%s@example.com", strings.ToLower(name), randomHex(6))
	const password = "e2e correct horse"
	var u struct {
		ID int64 `json:"id"`
	}
	a.json(t, http.MethodPost, "/register", "", map[string]string{"name": name, "email": email, "password": password}, http.StatusCreated, &u)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	form := url.Values{"username": {email}, "password": {password}}
	a.do(t, http.MethodPost, "/login", "", strings.NewReader(form.Encode()), "application/x-www-form-urlencoded", http.StatusOK, &tok)
	if u.ID == 0 || tok.AccessToken == "" {
		t.Fatalf("register %s: got id %d and token %q", email, u.ID, tok.AccessToken)
	}
	return user{ID: u.ID, Email: email, Token: tok.AccessToken}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// frame is one server frame, decoded loosely. Message is the Message
// object of message.new and message.ack (and the text of an error).
type frame struct {
	Type        string          `json:"type"`
	ChatID      int64           `json:"chat_id"`
	Code        string          `json:"code"`
	ClientMsgID string          `json:"client_msg_id"`
	Duplicate   bool            `json:"duplicate"`
	Message     json.RawMessage `json:"message"`
	Raw         []byte          `json:"-"`
}

// message is the Message schema (the fields the test looks at).
type message struct {
	ID          int64  `json:"id"`
	ChatID      int64  `json:"chat_id"`
	Seq         int64  `json:"seq"`
	SenderID    int64  `json:"sender_id"`
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id"`
}

// msg decodes the message of a message.new or message.ack frame.
func (f frame) msg() (message, error) {
	var m message
	err := json.Unmarshal(f.Message, &m)
	return m, err
}

func decodeFrame(data []byte) frame {
	var f frame
	_ = json.Unmarshal(data, &f)
	f.Raw = data
	return f
}

// wsConn is a WebSocket client that queues every frame it receives. Each
// frame it receives is checked against ServerFrame in api/openapi.yaml,
// each one it sends against ClientFrame.
type wsConn struct {
	Name    string // for messages: "u2/ws" and the like
	Path    string
	Replica string // X-Windi-Replica of the 101 response

	conn   *websocket.Conn
	spec   *speccheck.Checker
	rep    speccheck.Reporter
	frames chan frame
	done   chan struct{} // closed when the read loop ends
	mu     sync.Mutex    // guards err
	err    error         // why the read loop ended
}

// wsURL turns the proxy's http(s) URL into a ws(s) URL for path with the
// token (if any) in the query.
func wsURL(base, path, token string) string {
	u := "ws" + strings.TrimPrefix(strings.TrimRight(base, "/"), "http") + path
	if token == "" {
		return u
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return u + sep + "token=" + url.QueryEscape(token)
}

// dialWS opens path through base; on failure it returns the handshake
// response (nil when there was none). A frame that does not match the spec
// fails t.
func dialWS(t testing.TB, base, name, path, token string) (*wsConn, *http.Response, error) {
	t.Helper()
	checker := spec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(base, path, token), nil)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 20)
	w := &wsConn{
		Name: name, Path: path, Replica: resp.Header.Get(replicaHeader),
		conn: c, spec: checker, rep: speccheck.ForTest(t), frames: make(chan frame, 4096), done: make(chan struct{}),
	}
	go w.read()
	return w, resp, nil
}

// read queues frames until the connection ends. It lives as long as the
// connection.
func (w *wsConn) read() {
	defer close(w.done)
	for {
		_, data, err := w.conn.Read(context.Background())
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		if err := w.spec.CheckServerFrame(data); err != nil {
			w.rep.Errorf("%s: %v", w.Name, err)
		}
		select {
		case w.frames <- decodeFrame(data):
		default:
			w.mu.Lock()
			w.err = fmt.Errorf("%s: test queue full", w.Name)
			w.mu.Unlock()
			_ = w.conn.CloseNow()
			return
		}
	}
}

// send writes v as a JSON text frame; v must be a ClientFrame of the spec.
func (w *wsConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := w.spec.CheckClientFrame(b); err != nil {
		return fmt.Errorf("%s: not sent: %w", w.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.conn.Write(ctx, websocket.MessageText, b)
}

// messages returns the next n message frames (message.new or message.ack),
// skipping presence and receipts. An error frame, the connection ending
// or the deadline passing is an error.
func (w *wsConn) messages(n int, deadline time.Time) ([]frame, error) {
	out := make([]frame, 0, n)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for len(out) < n {
		select {
		case f := <-w.frames:
			switch f.Type {
			case "message.new", "message.ack":
				out = append(out, f)
			case "error":
				return out, fmt.Errorf("%s: error frame %s", w.Name, f.Raw)
			}
		case <-w.done:
			w.mu.Lock()
			err := w.err
			w.mu.Unlock()
			return out, fmt.Errorf("%s: connection ended after %d of %d messages: %v", w.Name, len(out), n, err)
		case <-timer.C:
			return out, fmt.Errorf("%s: got %d of %d messages in time", w.Name, len(out), n)
		}
	}
	return out, nil
}

// quiet returns the message frames that arrive within d (none expected).
func (w *wsConn) quiet(d time.Duration) []frame {
	var extra []frame
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case f := <-w.frames:
			if f.Type == "message.new" || f.Type == "message.ack" || f.Type == "error" {
				extra = append(extra, f)
			}
		case <-timer.C:
			return extra
		}
	}
}

// close closes the connection normally and waits for the read loop.
func (w *wsConn) close() {
	_ = w.conn.Close(websocket.StatusNormalClosure, "")
	select {
	case <-w.done:
	case <-time.After(3 * time.Second):
		_ = w.conn.CloseNow()
		<-w.done
	}
}
