package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// The test talks to the deployment only through the Go SDK (package
// client): REST through client.Client, WebSockets as raw client.Sockets
// where the test is about the frames on the wire, and as a client.Conn
// where it is about a client that resumes. What follows are thin helpers
// over it that check every response and frame against api/openapi.yaml.

// replicaHeader names the replica that answered a request (every response,
// the WebSocket 101 included, carries it).
const replicaHeader = "X-Windi-Replica"

// kit makes SDK clients of one deployment whose every REST response is
// checked against the spec, and reports mismatches to the test.
type kit struct {
	t    *testing.T
	base string // the proxy's URL
	spec *speccheck.Checker
	rep  speccheck.Reporter
}

func newKit(t *testing.T, base string) *kit {
	t.Helper()
	return &kit{t: t, base: strings.TrimRight(base, "/"), spec: spec(t), rep: speccheck.ForTest(t)}
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

// checked is the transport of the kit's clients: REST requests go through
// speccheck.Transport; WebSocket handshakes go straight out, because the
// body of a 101 response is the connection itself, which the check would
// read to its end. onUpgrade, when set, sees each handshake's response
// (a Conn does not hand it out, and the test wants its replica).
type checked struct {
	rest      *speccheck.Transport
	onUpgrade func(*http.Response)
}

func (c checked) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Upgrade") == "" {
		return c.rest.RoundTrip(req)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && c.onUpgrade != nil {
		c.onUpgrade(resp)
	}
	return resp, err
}

// client returns an SDK client of base (the proxy, or one replica).
func (k *kit) client(base string, onUpgrade func(*http.Response), opts ...client.Option) *client.Client {
	k.t.Helper()
	tr := checked{rest: &speccheck.Transport{Checker: k.spec, R: k.rep, Skip: notFromReplica}, onUpgrade: onUpgrade}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: tr}
	c, err := client.New(base, append([]client.Option{client.WithHTTPClient(hc)}, opts...)...)
	if err != nil {
		k.t.Fatal(err)
	}
	return c
}

// trace checks every frame a socket reads or writes against ServerFrame or
// ClientFrame of the spec.
func (k *kit) trace(name string) func(out bool, data []byte) {
	return func(out bool, data []byte) {
		check := k.spec.CheckServerFrame
		if out {
			check = k.spec.CheckClientFrame
		}
		if err := check(data); err != nil {
			k.rep.Errorf("%s: %v", name, err)
		}
	}
}

// do sends a raw request through c (with its token, if any) and fails the
// test unless the status is want. The body is read and closed; the
// response is returned for its headers.
func do(t testing.TB, c *client.Client, method, path string, header http.Header, want int) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, method, path, header, nil)
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
	return resp
}

// user is a registered, logged-in user and its SDK client.
type user struct {
	ID    int64
	Email string
	Token string // the access token of its session
	C     *client.Client
}

// register creates a user with a random email and logs it in.
func (k *kit) register(name string) user {
	k.t.Helper()
	email := fmt.Sprintf("e2e-%s-%s@example.com", strings.ToLower(name), randomHex(6))
	const password = "e2e correct horse"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := k.client(k.base, nil)
	u, err := c.Register(ctx, name, email, password)
	if err != nil {
		k.t.Fatalf("register %s: %v", email, err)
	}
	tok, err := c.Login(ctx, email, password)
	if err != nil {
		k.t.Fatalf("login %s: %v", email, err)
	}
	if u.ID == 0 || tok.AccessToken == "" {
		k.t.Fatalf("register %s: got id %d and token %q", email, u.ID, tok.AccessToken)
	}
	return user{ID: u.ID, Email: email, Token: tok.AccessToken, C: c}
}

// createGroup creates a group owned by u with the given other members. A
// new group is 201 Created; the SDK's CreateGroup would take a 200 too.
func createGroup(t testing.TB, u user, name string, members []int64) rest.Chat {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var body rest.CreateChatRequest
	if err := body.FromCreateGroupChat(rest.CreateGroupChat{Type: rest.CreateGroupChatTypeGroup, Name: name, MemberIds: &members}); err != nil {
		t.Fatal(err)
	}
	r, err := u.C.REST.CreateChatWithResponse(ctx, body)
	if err != nil {
		t.Fatalf("POST /chats: %v", err)
	}
	if r.JSON201 == nil {
		t.Fatalf("POST /chats: got status %d from replica %q, want 201; body: %s", r.StatusCode(), r.HTTPResponse.Header.Get(replicaHeader), r.Body)
	}
	return *r.JSON201
}

// history returns up to limit messages of chatID as u sees them.
func history(t testing.TB, u user, chatID int64, limit int) []rest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	hist, err := u.C.History(ctx, chatID, &rest.GetHistoryParams{Limit: &limit})
	if err != nil {
		t.Fatalf("GET /history/%d: %v", chatID, err)
	}
	return hist
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// messageOf returns the message of a message.new or message.ack frame, and
// whether the ack says duplicate; ok is false for any other frame (or one
// that did not decode).
func messageOf(f client.Frame) (m rest.Message, duplicate, ok bool) {
	switch v := f.Value.(type) {
	case rest.MessageNewFrame:
		return v.Message, false, true
	case rest.MessageAckFrame:
		return v.Message, v.Duplicate, true
	}
	return rest.Message{}, false, false
}

// isMessage reports whether f is a message.new or message.ack frame.
func isMessage(f client.Frame) bool {
	return f.Type == string(rest.MessageNew) || f.Type == string(rest.MessageAck)
}

const errorFrame = string(rest.ErrorFrameTypeError)

// sock is one WebSocket whose every server frame is queued for the test: a
// raw client.Socket, or the socket of a client.Conn (its frames as its
// Trace sees them, before the Conn orders and deduplicates them). Every
// frame read or written is checked against the spec.
type sock struct {
	Name    string // for messages: "u2/ws" and the like
	Path    string
	Replica string // X-Windi-Replica of the 101 response

	ws   *client.Socket // a raw socket; nil for a Conn
	conn *client.Conn   // a Conn; nil for a raw socket

	frames chan client.Frame
	done   chan struct{} // closed when the socket (or the Conn) has ended
	once   sync.Once
	mu     sync.Mutex // guards err
	err    error      // why it ended
}

func newSock(name, path string) *sock {
	return &sock{Name: name, Path: path, frames: make(chan client.Frame, 4096), done: make(chan struct{})}
}

// end records why s ended, once.
func (s *sock) end(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.done)
	})
}

func (s *sock) endErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// queue hands a frame to the test; a full queue ends the socket.
func (s *sock) queue(f client.Frame) bool {
	select {
	case s.frames <- f:
		return true
	default:
		s.end(fmt.Errorf("%s: test queue full", s.Name))
		return false
	}
}

// dialSocket opens path through u's client as a raw socket, the token in
// the query as the web client sends it (a Conn sends it as a bearer
// header). On failure it returns the handshake response (nil when there
// was none).
func (k *kit) dialSocket(c *client.Client, name, path, token string) (*sock, *http.Response, error) {
	s := newSock(name, path)
	if token != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "token=" + url.QueryEscape(token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := c.DialSocket(ctx, path, client.SocketOptions{Trace: k.trace(name)})
	if err != nil {
		return nil, resp, err
	}
	s.Replica, s.ws = resp.Header.Get(replicaHeader), ws
	go s.read(k.rep)
	return s, resp, nil
}

// read queues frames until the socket ends. It lives as long as the
// socket.
func (s *sock) read(rep speccheck.Reporter) {
	for {
		f, err := s.ws.Read(context.Background())
		if err != nil && f.Raw == nil {
			s.end(fmt.Errorf("%w (close status %d)", err, client.CloseStatus(err)))
			return
		}
		if err != nil {
			rep.Errorf("%s: %v", s.Name, err) // the frame does not decode
		}
		if !s.queue(f) {
			_ = s.ws.CloseNow()
			return
		}
	}
}

// resumeConn dials a client.Conn for chatID as u, resuming by seq after
// since (since_seq in the handshake). It returns the Conn's socket and
// what the Conn delivered to OnMessage.
func (k *kit) resumeConn(u user, name string, chatID, since int64) (*sock, *delivered) {
	k.t.Helper()
	s := newSock(name, fmt.Sprintf("/ws/%d?since_seq=%d", chatID, since))
	var (
		mu    sync.Mutex
		first string // the replica of the Conn's first handshake
	)
	c := k.client(k.base, func(resp *http.Response) {
		mu.Lock()
		defer mu.Unlock()
		if first == "" {
			first = resp.Header.Get(replicaHeader)
		}
	}, client.WithToken(u.Token))
	got := &delivered{}
	check := k.trace(name)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, client.Config{
		ChatID:      chatID,
		Since:       map[int64]int64{chatID: since},
		ResumeBySeq: true,
		OnMessage:   got.add,
		Trace: func(out bool, data []byte) {
			check(out, data)
			if out {
				return
			}
			f, err := client.DecodeFrame(data)
			if err != nil {
				k.rep.Errorf("%s: %v", name, err)
			}
			s.queue(f) // a full queue ends s; the test's cleanup closes the Conn
		},
	})
	if err != nil {
		k.t.Fatalf("dial %s: %v (status %d)", name, err, client.StatusOf(err))
	}
	mu.Lock()
	s.Replica = first
	mu.Unlock()
	s.conn = conn
	go func() {
		<-conn.Done()
		s.end(conn.Err())
	}()
	return s, got
}

// delivered collects what a Conn gave OnMessage.
type delivered struct {
	mu   sync.Mutex
	msgs []rest.Message
}

func (d *delivered) add(m rest.Message) {
	d.mu.Lock()
	d.msgs = append(d.msgs, m)
	d.mu.Unlock()
}

// wait returns the messages once there are at least n, or what there is
// when d passes.
func (d *delivered) wait(n int, within time.Duration) []rest.Message {
	deadline := time.Now().Add(within)
	for {
		d.mu.Lock()
		got := append([]rest.Message(nil), d.msgs...)
		d.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// send writes a message.send frame for chatID; Trace checks it against
// ClientFrame.
func (s *sock) send(chatID int64, clientMsgID, text string) error {
	if s.ws == nil {
		return fmt.Errorf("%s: a Conn sends through Conn.Send", s.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.ws.Write(ctx, rest.MessageSendFrame{Type: rest.MessageSend, ChatID: &chatID, ClientMsgID: clientMsgID, Text: text})
}

// messages returns the next n message frames (message.new or message.ack),
// skipping presence and receipts. An error frame, the connection ending
// or the deadline passing is an error.
func (s *sock) messages(n int, deadline time.Time) ([]client.Frame, error) {
	out := make([]client.Frame, 0, n)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for len(out) < n {
		select {
		case f := <-s.frames:
			switch {
			case isMessage(f):
				out = append(out, f)
			case f.Type == errorFrame:
				return out, fmt.Errorf("%s: error frame %s", s.Name, f.Raw)
			}
		case <-s.done:
			return out, fmt.Errorf("%s: connection ended after %d of %d messages: %v", s.Name, len(out), n, s.endErr())
		case <-timer.C:
			return out, fmt.Errorf("%s: got %d of %d messages in time", s.Name, len(out), n)
		}
	}
	return out, nil
}

// quiet returns the message and error frames that arrive within d (none
// expected).
func (s *sock) quiet(d time.Duration) []client.Frame {
	var extra []client.Frame
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case f := <-s.frames:
			if isMessage(f) || f.Type == errorFrame {
				extra = append(extra, f)
			}
		case <-timer.C:
			return extra
		}
	}
}

// close closes the socket normally and waits for it to end.
func (s *sock) close() {
	if s.conn != nil {
		_ = s.conn.Close() // returns once the Conn has ended
		return
	}
	_ = s.ws.Close(1000, "")
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = s.ws.CloseNow()
		<-s.done
	}
}
