package app_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// TestSlowBodyIsCutOff is a real slow client: it sends a request's headers
// promptly and then its body one byte every two seconds. The server must
// give up on it once the read timeout (3 s here, 30 s in production) has
// passed, rather than hold the connection for as long as the client keeps
// trickling.
func TestSlowBodyIsCutOff(t *testing.T) {
	const timeout = 3 * time.Second
	env := apptest.NewEnv(t, "sqlite")
	s := env.StartMain(t, func(m *app.Main) { m.HTTP.Read = timeout })
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	body := `{"name":"Slow","email":"slow@example.com","password":"password-123"}`
	fmt.Fprintf(conn, "POST /register HTTP/1.1\r\nHost: windi\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	trickling := make(chan error, 1)
	go func() {
		for i := range len(body) {
			if _, err := conn.Write([]byte{body[i]}); err != nil {
				trickling <- err
				return
			}
			time.Sleep(2 * time.Second)
		}
		trickling <- nil
	}()
	// The whole body would take over two minutes; allow the timeout and a
	// margin.
	_ = conn.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	held := time.Since(start)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got status %d, want 400 (or the connection closed)", resp.StatusCode)
		}
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the trickling connection after %v (read timeout %v)", held, timeout)
	}
	if held > timeout+1500*time.Millisecond {
		t.Errorf("the connection was answered or closed after %v, want within the %v read timeout (+1.5 s)", held, timeout)
	}
	// The connection is closed: reading more ends at once.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the connection stayed open after the timeout answer")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the connection stayed open after the timeout answer")
	}
	if strings.Contains(s.Logs.String(), `"slow@example.com"`) {
		t.Error("the half-sent registration was processed")
	}
}

// TestWebSocketOutlivesReadTimeout: the read timeout bounds requests, not
// hijacked WebSockets. With a 1 s timeout a socket still receives a
// message sent after 2.5 s.
func TestWebSocketOutlivesReadTimeout(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.StartMain(t, func(m *app.Main) { m.HTTP.Read = time.Second })
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		var body rest.CreateChatRequest
		_ = body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: bob.ID})
		cr, err := s.Client.CreateChatWithResponse(t.Context(), body, alice.Auth())
		if err != nil || cr.JSON201 == nil {
			t.Fatalf("create chat: %v %v", err, cr)
		}
		w := s.DialWS(t, "/ws/"+strconv.FormatInt(cr.JSON201.ID, 10), bob.Token)
		time.Sleep(2500 * time.Millisecond) // past the read timeout on purpose
		r, err := s.Client.SendMessageWithResponse(t.Context(), cr.JSON201.ID, rest.SendMessageRequest{ClientMsgID: "late-1", Text: "still there?"}, alice.Auth())
		if err != nil || r.StatusCode() != 201 {
			t.Fatalf("send: %v %v", err, r)
		}
		// Until fails at once if the WebSocket ends before the message.
		for {
			if f, _ := w.Until(t, "message.new", 15*time.Second); f.Msg().ClientMsgID == "late-1" {
				return
			}
		}
	})
}

// TestReplicaHeader: X-Windi-Replica shows the configured name, or a
// random id, never the host name and pid unless debug logging is on.
func TestReplicaHeader(t *testing.T) {
	host, _ := os.Hostname()
	pid := strconv.Itoa(os.Getpid())
	env := apptest.NewEnv(t, "sqlite")
	header := func(tune func(*app.Main)) string {
		s := env.StartMain(t, tune)
		resp, err := http.Get(s.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Windi-Replica")
	}
	named := header(func(m *app.Main) { m.Config.LogLevel, m.Config.ReplicaName = slog.LevelInfo, "blue-7" })
	if named != "blue-7" {
		t.Errorf("named replica: got %q, want blue-7", named)
	}
	anon := header(func(m *app.Main) { m.Config.LogLevel = slog.LevelInfo })
	anon2 := header(func(m *app.Main) { m.Config.LogLevel = slog.LevelInfo })
	if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(anon) || anon == anon2 {
		t.Errorf("unnamed replicas: got %q and %q, want two different random 8-hex-digit ids", anon, anon2)
	}
	for _, h := range []string{named, anon} {
		if host != "" && strings.Contains(h, host) || strings.Contains(h, pid) {
			t.Errorf("header %q names the host %q or the pid %s", h, host, pid)
		}
	}
	debug := header(func(m *app.Main) { m.Config.LogLevel, m.Config.ReplicaName = slog.LevelDebug, "blue-7" })
	if !strings.HasPrefix(debug, "blue-7; ") || !strings.Contains(debug, "host="+host) || !strings.Contains(debug, "pid="+pid) {
		t.Errorf("debug: got %q, want the name, then host and pid", debug)
	}
}

// TestReplicasSharingANameKeepPresence: two replicas configured with one
// name still keep separate presence entries, so a user connected to both
// stays online when one of its sockets closes.
func TestReplicasSharingANameKeepPresence(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		same := func(c *app.Config) { c.ReplicaName = "twin" }
		a, b := env.Start(t, same), env.Start(t, same)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		var body rest.CreateChatRequest
		_ = body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: bob.ID})
		cr, err := a.Client.CreateChatWithResponse(t.Context(), body, alice.Auth())
		if err != nil || cr.JSON201 == nil {
			t.Fatalf("create chat: %v %v", err, cr)
		}
		chatID := cr.JSON201.ID
		online := func() []int64 {
			r, err := a.Client.GetPresenceWithResponse(t.Context(), chatID, bob.Auth())
			if err != nil || r.JSON200 == nil {
				t.Fatalf("presence: %v %v", err, r)
			}
			return *r.JSON200
		}
		waitFor := func(want string) {
			deadline := time.Now().Add(5 * time.Second)
			for fmt.Sprint(online()) != want {
				if time.Now().After(deadline) {
					t.Fatalf("presence stayed %v, want %s", online(), want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		wa := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		wb := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		want := fmt.Sprint([]int64{alice.ID})
		waitFor(want)
		wa.Close()
		time.Sleep(300 * time.Millisecond) // let replica a record the leave
		if got := fmt.Sprint(online()); got != want {
			t.Errorf("after closing the socket on one of two replicas named alike: online %s, want %s", got, want)
		}
		wb.Close()
		waitFor("[]")
	})
}
