package realtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/repo"
)

// watcher is a light WebSocket client for tests that open hundreds of
// sockets: it keeps no frames, only whether one of them leaked a chat.
type watcher struct {
	conn   *client.Socket
	leaked atomic.Value // string: the first frame that mentioned the watched chat after the cut-off
	closed chan struct{}
}

// watch reads every frame of conn and records the first message.new (or
// any message frame) of chatID whose text is marker.
func watch(conn *client.Socket, chatID int64, marker string) *watcher {
	w := &watcher{conn: conn, closed: make(chan struct{})}
	go func() {
		defer close(w.closed)
		var buf []byte
		for {
			data, err := conn.ReadRaw(context.Background(), buf)
			if err != nil {
				return
			}
			if leakedFrame(data, chatID, marker) && w.leaked.Load() == nil {
				w.leaked.Store(string(data))
			}
			buf = data
		}
	}()
	return w
}

// leakedFrame reports whether data is a message frame of chatID carrying
// marker as its text.
func leakedFrame(data []byte, chatID int64, marker string) bool {
	var f struct {
		Type    string `json:"type"`
		Message struct {
			ChatID int64  `json:"chat_id"`
			Text   string `json:"text"`
		} `json:"message"`
	}
	if json.Unmarshal(data, &f) != nil {
		return false
	}
	return strings.HasPrefix(f.Type, "message.") && f.Message.ChatID == chatID && f.Message.Text == marker
}

// dialSocket opens path on s with token (in ?token=) as a raw Socket
// whose frames are checked against the spec; hc, when not nil, sends
// the handshake.
func dialSocket(ctx context.Context, s *apptest.Server, path, token string, hc *http.Client) (*client.Socket, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	sock, _, err := s.SDK.DialSocket(ctx, path+sep+"token="+token, client.SocketOptions{HTTPClient: hc, Trace: s.SpecTrace(path)})
	return sock, err
}

func restSend(t *testing.T, s *apptest.Server, u apptest.User, chatID int64, cmid, text string) {
	t.Helper()
	r, err := s.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: cmid, Text: text}, u.Auth())
	if err != nil || r.StatusCode() != 201 {
		t.Fatalf("send %s: %v %d %s", cmid, err, r.StatusCode(), r.Body)
	}
}

// TestRemovalDuringReconnectStorm reproduces a member that reconnects in a
// loop while the owner removes it: a socket whose upgrade passed the
// membership check just before the removal committed must still be cut
// off, so a message sent after the removal reaches none of its sockets, on
// any replica.
func TestRemovalDuringReconnectStorm(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		noCap := func(c *app.Config) { c.Limits.MaxConnsPerUser = 0 }
		a := env.Start(t, noCap)
		b := a
		if env.Shared() {
			b = env.Start(t, noCap)
		}
		const rounds, dialers = 12, 32
		leaks := 0
		for round := range rounds {
			owner, m := a.NewUser(t, "Owner"), a.NewUser(t, "Member")
			g := groupChat(t, a, owner, m.ID)
			marker := fmt.Sprintf("after-removal-%d", round)

			ctx, stop := context.WithCancel(bg)
			var mu sync.Mutex
			var socks []*watcher
			var wg sync.WaitGroup
			for i := range dialers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					srv := []*apptest.Server{a, b}[i%2]
					path := "/ws"
					if i%4 < 2 {
						path = fmt.Sprintf("/ws/%d", g)
					}
					for ctx.Err() == nil {
						dctx, cancel := context.WithTimeout(bg, 5*time.Second)
						c, err := dialSocket(dctx, srv, path, m.Token, nil)
						cancel()
						if err != nil {
							time.Sleep(2 * time.Millisecond) // 403 once removed
							continue
						}
						w := watch(c, g, marker)
						mu.Lock()
						socks = append(socks, w)
						mu.Unlock()
					}
				}()
			}
			time.Sleep(time.Duration(30+round*7) * time.Millisecond) // the storm is under way
			r, err := a.Client.RemoveGroupMemberWithResponse(bg, g, m.ID, owner.Auth())
			if err != nil || r.StatusCode() != 200 {
				t.Fatalf("remove: %v", err)
			}
			time.Sleep(40 * time.Millisecond) // dials still racing the removal
			stop()
			wg.Wait()

			restSend(t, a, owner, g, "m-"+marker, marker)
			time.Sleep(500 * time.Millisecond)
			mu.Lock()
			leakedHere := 0
			for _, w := range socks {
				if f := w.leaked.Load(); f != nil {
					leakedHere++
					if leakedHere == 1 {
						t.Errorf("round %d: a removed member's socket got a message sent after the removal: %s", round, f)
					}
				}
				_ = w.conn.CloseNow()
			}
			if leakedHere > 0 {
				leaks++
				t.Logf("round %d: %d of %d sockets leaked", round, leakedHere, len(socks))
			}
			mu.Unlock()
		}
		if leaks > 0 {
			t.Errorf("%d of %d rounds leaked the group to a removed member", leaks, rounds)
		}
	})
}

// slowDial opens path with a tiny socket receive buffer and returns the
// raw connection, which the caller reads only when it wants to.
func slowDial(t *testing.T, s *apptest.Server, path, token string) *client.Socket {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	c, err := dialSocket(bg, s, path, token, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// TestAddThenRemoveWhileBusy reproduces the join path: a user is added to
// a group and removed again while its /ws connection is busy (it asked for
// a big sync and reads slowly). Once it reads again it must get nothing
// the group sent after the removal, and must not follow the group.
func TestAddThenRemoveWhileBusy(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a := env.StartMain(t, func(m *app.Main) {
			m.Realtime.QueueSize, m.Realtime.WriteTimeout = 32, 30*time.Second
		})
		b := a
		if env.Shared() {
			b = env.StartMain(t, func(m *app.Main) {
				m.Realtime.QueueSize, m.Realtime.WriteTimeout = 32, 30*time.Second
			})
		}
		for round := range 3 {
			owner, m, friend := a.NewUser(t, "Owner"), a.NewUser(t, "Member"), a.NewUser(t, "Friend")
			big := privateChat(t, a, m, friend.ID)
			reqs := make([]repo.SendRequest, 1500)
			for i := range reqs {
				reqs[i] = repo.SendRequest{ChatID: big, SenderID: friend.ID, ClientMsgID: fmt.Sprintf("big-%d", i), Text: strings.Repeat("y", 4000)}
			}
			if _, err := a.Store.InsertMessages(bg, reqs, repo.InsertOptions{}); err != nil {
				t.Fatal(err)
			}
			g := groupChat(t, a, owner)
			marker := fmt.Sprintf("after-removal-%d", round)

			c := slowDial(t, b, "/ws", m.Token)
			time.Sleep(100 * time.Millisecond)
			sync, _ := json.Marshal(map[string]any{"type": "sync", "chat_id": big, "since_seq": 0})
			if err := c.WriteRaw(bg, sync); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // the replay fills the socket

			if r, err := a.Client.AddGroupMemberWithResponse(bg, g, m.ID, owner.Auth()); err != nil || r.StatusCode() != 200 {
				t.Fatalf("add: %v", err)
			}
			if r, err := a.Client.RemoveGroupMemberWithResponse(bg, g, m.ID, owner.Auth()); err != nil || r.StatusCode() != 200 {
				t.Fatalf("remove: %v", err)
			}
			restSend(t, a, owner, g, "m1-"+marker, marker)
			time.Sleep(300 * time.Millisecond)

			// Read everything: the replay, then whatever the group sent.
			w := watch(c, g, marker)
			time.Sleep(1500 * time.Millisecond) // drain the replay
			restSend(t, a, owner, g, "m2-"+marker, marker)
			time.Sleep(500 * time.Millisecond)
			if f := w.leaked.Load(); f != nil {
				t.Errorf("round %d: the removed member's busy /ws followed the group: %s", round, f)
			}
			_ = c.CloseNow()
		}
	})
}
