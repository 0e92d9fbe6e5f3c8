package realtime_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/repo"
)

// TestLostRemovalCutsOff: a removal whose event never went out (here the
// row is deleted behind the service's back) still cuts the member off, on
// the next periodic membership check: the per-chat connection closes with
// 4403, the all-chats one gets member.removed and nothing more of the chat.
func TestLostRemovalCutsOff(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.StartMain(t, func(m *app.Main) { m.Realtime.CheckEvery = 300 * time.Millisecond })
		owner, bob := s.NewUser(t, "Owner"), s.NewUser(t, "Bob")
		g := groupChat(t, s, owner, bob.ID)
		chatWS := s.DialWS(t, fmt.Sprintf("/ws/%d", g), bob.Token)
		allWS := s.DialWS(t, "/ws", bob.Token)
		settle(chatWS, allWS)

		if _, err := s.Store.RemoveMember(bg, g, bob.ID); err != nil { // no event
			t.Fatal(err)
		}
		if code := chatWS.WaitClosed(t, wait); code != 4403 {
			t.Errorf("per-chat connection closed with %d, want 4403", code)
		}
		if f, _ := allWS.Until(t, "member.removed", wait); f.ChatID != g || f.UserID != bob.ID {
			t.Errorf("got %s", f.Raw)
		}
		restSend(t, s, owner, g, "after-cut", "bob must not see this")
		for _, f := range allWS.Drain(500 * time.Millisecond) {
			if f.ChatID == g || f.Msg().ChatID == g {
				t.Errorf("cut-off member still receives the chat: %s", f.Raw)
			}
		}
	})
}

// TestConnectionCapsAreExact: 100 concurrent dials of one user against a
// cap of 5 open exactly 5; the replica-wide cap holds the same way, and
// says so with 503.
func TestConnectionCapsAreExact(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.StartMain(t, func(m *app.Main) { m.Realtime.MaxConnsPerUser, m.Realtime.MaxConns = 5, 12 })
	alice := s.NewUser(t, "Alice")
	dialAll := func(n int, token string) (ok int64, statuses map[int]int) {
		var mu sync.Mutex
		statuses = map[int]int{}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				w, resp, err := s.TryDialWS("/ws", token, nil)
				if err == nil {
					atomic.AddInt64(&ok, 1)
					t.Cleanup(w.Close)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if resp != nil {
					statuses[resp.StatusCode]++
				}
			})
		}
		wg.Wait()
		return ok, statuses
	}
	if ok, st := dialAll(100, alice.Token); ok != 5 || st[429] != 95 {
		t.Fatalf("per-user cap 5: %d opened, refusals %v; want 5 and 95×429", ok, st)
	}
	// Two more users: 7 more fit under the cap of 12, whoever dials.
	bob, carol := s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
	var got int64
	var refused503 int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, u := range []apptest.User{bob, carol} {
		wg.Go(func() {
			ok, st := dialAll(5, u.Token)
			atomic.AddInt64(&got, ok)
			mu.Lock()
			refused503 += st[503]
			mu.Unlock()
		})
	}
	wg.Wait()
	if got != 7 || refused503 != 3 {
		t.Fatalf("replica cap 12 with 5 open: %d more opened, %d refused with 503; want 7 and 3", got, refused503)
	}
}

// TestSyncFloodIsBounded: 100 sync frames on a 300-message chat must not
// replay it 100 times: syncs are rate-limited per connection and queued
// ones of one chat collapse into the latest.
func TestSyncFloodIsBounded(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
	chatID := privateChat(t, s, alice, bob.ID)
	reqs := make([]repo.SendRequest, 300)
	for i := range reqs {
		reqs[i] = repo.SendRequest{ChatID: chatID, SenderID: bob.ID, ClientMsgID: fmt.Sprint(i), Text: "x"}
	}
	if _, err := s.Store.InsertMessages(bg, reqs, repo.InsertOptions{}); err != nil {
		t.Fatal(err)
	}
	w := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
	settle(w)
	for range 100 {
		w.Send(t, map[string]any{"type": "sync", "since_seq": 0})
	}
	frames := w.Drain(3 * time.Second)
	msgs, limited := 0, 0
	for _, f := range frames {
		switch {
		case f.Type == "message.new":
			msgs++
		case f.Type == "error" && f.Code == "rate_limited":
			limited++
		}
	}
	if msgs < 300 || msgs > 11*300 {
		t.Errorf("100 syncs replayed %d messages; want at least one full replay (300) and far from 100 (30,000)", msgs)
	}
	if limited == 0 {
		t.Error("no sync was rate-limited")
	}
	t.Logf("100 sync frames: %d message.new frames, %d rate_limited errors", msgs, limited)
}

// TestSinceSeqPastTheEndIsClamped: a resume position past the chat's end
// is taken as its end, so live messages still arrive.
func TestSinceSeqPastTheEndIsClamped(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		chatID := privateChat(t, s, alice, bob.ID)
		restSend(t, s, bob, chatID, "m1", "one")
		w := s.DialWS(t, fmt.Sprintf("/ws/%d?since_seq=1000", chatID), alice.Token)
		settle(w)
		restSend(t, s, bob, chatID, "m2", "two")
		if f, _ := w.Until(t, "message.new", wait); f.Msg().Seq != 2 {
			t.Errorf("got %s, want seq 2", f.Raw)
		}
		// The same through a sync frame.
		w.Send(t, map[string]any{"type": "sync", "since_seq": 5000})
		restSend(t, s, bob, chatID, "m3", "three")
		if f, _ := w.Until(t, "message.new", wait); f.Msg().Seq != 3 {
			t.Errorf("after sync past the end: got %s, want seq 3", f.Raw)
		}
	})
}

// TestRefusedSyncAnswersInOrder: a sync the server refuses (here, of a
// chat that does not exist) is answered after the replays of the syncs
// sent before it, so a client can mark the end of its syncs with one (the
// fault tests' client does, to tell replayed frames from live ones).
func TestRefusedSyncAnswersInOrder(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		chatID := privateChat(t, s, alice, bob.ID)
		const n = 300
		reqs := make([]repo.SendRequest, n)
		for i := range reqs {
			reqs[i] = repo.SendRequest{ChatID: chatID, SenderID: bob.ID, ClientMsgID: fmt.Sprint(i), Text: "x"}
		}
		if _, err := s.Store.InsertMessages(bg, reqs, repo.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		w := s.DialWS(t, "/ws", alice.Token)
		settle(w)
		w.Send(t, map[string]any{"type": "sync", "chat_id": chatID, "since_seq": 0})
		w.Send(t, map[string]any{"type": "sync", "chat_id": 987654321, "since_seq": 0})
		f, before := w.Until(t, "error", 10*time.Second)
		msgs := 0
		for _, b := range before {
			if b.Type == "message.new" {
				msgs++
			}
		}
		if f.ChatID != 987654321 || msgs != n {
			t.Errorf("the refusal %s came after %d of the %d replayed messages, want after all of them", f.Raw, msgs, n)
		}
	})
}

// TestInvalidUTF8FrameCloses1007: a text frame that is not UTF-8 closes
// the connection with 1007 (RFC 6455 §8.1).
func TestInvalidUTF8FrameCloses1007(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	alice := s.NewUser(t, "Alice")
	w := s.DialWS(t, "/ws", alice.Token)
	settle(w)
	if err := w.TrySendRaw([]byte("{\"type\":\"sync\",\"x\":\"\xff\xfe\"}")); err != nil {
		t.Fatal(err)
	}
	if code := w.WaitClosed(t, wait); code != 1007 {
		t.Errorf("closed with %d, want 1007", code)
	}
}

// TestUpgradeRefusalsAreProblems: a request to /ws that is no WebSocket
// handshake, or that fails a check before the upgrade, is answered with
// an RFC 9457 problem.
func TestUpgradeRefusalsAreProblems(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	alice := s.NewUser(t, "Alice")
	check := func(name string, req *http.Request, want int) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p rest.Problem
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") ||
			json.Unmarshal(body, &p) != nil || p.Status != want || p.Code == "" {
			t.Errorf("%s: got %d %q %s, want a %d problem", name, resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
		}
	}
	plain, _ := http.NewRequest("GET", s.URL+"/ws?token="+alice.Token, nil)
	check("plain GET", plain, 400)
	badVersion, _ := http.NewRequest("GET", s.URL+"/ws?token="+alice.Token, nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		badVersion.Header.Set(k, v)
	}
	check("version 8", badVersion, 426)
	noToken, _ := http.NewRequest("GET", s.URL+"/ws", nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		noToken.Header.Set(k, v)
	}
	check("no token", noToken, 401)
}

// TestRemovedMemberRepeatIsForbidden: a removed member re-sending a
// client_msg_id it used while a member gets 403 / forbidden, not its old
// message, over REST and WebSocket.
func TestRemovedMemberRepeatIsForbidden(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		owner, bob := s.NewUser(t, "Owner"), s.NewUser(t, "Bob")
		g := groupChat(t, s, owner, bob.ID)
		restSend(t, s, bob, g, "old", "while a member")
		w := s.DialWS(t, "/ws", bob.Token)
		settle(w)
		if r, err := s.Client.RemoveGroupMemberWithResponse(bg, g, bob.ID, owner.Auth()); err != nil || r.StatusCode() != 200 {
			t.Fatalf("remove: %v", err)
		}
		r, err := s.Client.SendMessageWithResponse(bg, g, rest.SendMessageRequest{ClientMsgID: "old", Text: "while a member"}, bob.Auth())
		if err != nil || r.StatusCode() != 403 {
			t.Errorf("REST repeat after removal: got %d %s, want 403", r.StatusCode(), r.Body)
		}
		w.Send(t, sendFrame(g, "old", "while a member"))
		f, _ := w.Until(t, "error", wait)
		if f.Code != "forbidden" || f.ClientMsgID != "old" {
			t.Errorf("WebSocket repeat after removal: got %s, want forbidden", f.Raw)
		}
	})
}
