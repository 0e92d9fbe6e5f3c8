package apptest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/client"
)

// reports is a speccheck.Reporter, and with recordingTB a testing.TB,
// that keeps what it is told instead of failing the test.
type reports struct {
	mu   sync.Mutex
	errs []string
}

func (r *reports) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *reports) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.errs
	r.errs = nil
	return out
}

type recordingTB struct {
	testing.TB
	*reports
}

func (r recordingTB) Errorf(format string, args ...any) { r.reports.Errorf(format, args...) }

// TestWSChecksFrames runs the test WebSocket client against a fake server
// (its side of the socket is coder/websocket's, as the real server's is)
// that sends one frame that matches the spec and two that do not: the
// client reports the two, names them, and still hands every frame to the
// test. Send checks client frames, SendRaw does not, and both send.
func TestWSChecksFrames(t *testing.T) {
	spec, err := speccheck.Default()
	if err != nil {
		t.Fatal(err)
	}
	sent := []string{
		`{"type":"presence","chat_id":1,"user_id":2,"online":true}`,
		`{"type":"presence","chat_id":1,"user_id":2,"online":"yes"}`,
		`{"type":"message.sent","chat_id":1}`,
	}
	received := make(chan string, 10)
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		for _, f := range sent {
			if err := c.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
				return
			}
		}
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			received <- string(data)
		}
	}))
	defer fake.Close()

	rep := &reports{}
	sdk, err := client.New(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{URL: fake.URL, SDK: sdk, Spec: spec, rep: rep}
	w, _, err := s.TryDialWS("/ws", "token", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, want := range sent {
		if f := w.Next(t, 5*time.Second); string(f.Raw) != want {
			t.Fatalf("frame %d: got %s, want %s", i, f.Raw, want)
		}
	}
	errs := rep.take()
	if len(errs) != 2 || !strings.Contains(errs[0], `"online":"yes"`) || !strings.Contains(errs[1], `type "message.sent" is not one of ServerFrame's types`) {
		t.Fatalf("got reports %q, want one for each of the two bad frames", errs)
	}

	tb := recordingTB{TB: t, reports: &reports{}}
	w.Send(tb, map[string]any{"type": "message.send", "client_msg_id": "c-1", "text": "hi"})
	if errs := tb.take(); len(errs) != 0 {
		t.Errorf("a good client frame: got reports %q, want none", errs)
	}
	w.Send(tb, map[string]any{"type": "message.send", "client_msg_id": "c-2", "text": ""})
	if errs := tb.take(); len(errs) != 1 || !strings.Contains(errs[0], "MessageSendFrame") && !strings.Contains(errs[0], "text") {
		t.Errorf("an empty text: got reports %q, want one naming the text", errs)
	}
	w.SendRaw(tb, []byte(`{"type":"nonsense"}`))
	if errs := tb.take(); len(errs) != 0 {
		t.Errorf("SendRaw: got reports %q, want none (raw frames are not checked)", errs)
	}
	for _, want := range []string{"c-1", "c-2", "nonsense"} {
		select {
		case got := <-received:
			if !strings.Contains(got, want) {
				t.Errorf("the server got %s, want the frame with %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the server did not get the frame with %s", want)
		}
	}
}

// TestServerIsChecked checks that a server started by apptest goes through
// the spec check, for its own client, Do and any other client, and that
// the WebSocket endpoints pass through it untouched.
func TestServerIsChecked(t *testing.T) {
	s := NewEnv(t, "sqlite").Start(t)
	before := s.Spec.Stats()
	alice := s.NewUser(t, "Alice") // register and login through s.Client
	if code, _, _ := s.Do(t, "GET", "/users/me", "", nil, alice.Token); code != http.StatusOK {
		t.Fatalf("GET /users/me: got %d", code)
	}
	resp, err := http.Get(s.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	w := s.DialWS(t, "/ws", alice.Token)
	w.Send(t, map[string]any{"type": "sync", "chat_id": 1, "since_seq": 0})
	if f := w.Next(t, 5*time.Second); f.Type != "error" {
		t.Fatalf("sync of a chat alice is not in: got %s, want an error frame", f.Raw)
	}
	after := s.Spec.Stats()
	if got := after.Checked - before.Checked; got < 4 {
		t.Errorf("checked %d responses, want at least 4 (register, login, /users/me, /healthz)", got)
	}
	if after.Skipped["outside the spec: /ws"] <= before.Skipped["outside the spec: /ws"] {
		t.Errorf("the WebSocket upgrade was not counted as outside the spec: %v", after.Skipped)
	}
}
