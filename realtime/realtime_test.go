package realtime_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

const CloseSlowConsumer = 4008

const wait = 5 * time.Second

var bg = context.Background()

// pair starts two servers ("replicas") on one database and broker.
func pair(t *testing.T, env *apptest.Env) (*apptest.Server, *apptest.Server) {
	t.Helper()
	return env.Start(t), env.Start(t)
}

func privateChat(t *testing.T, s *apptest.Server, a apptest.User, b int64) int64 {
	t.Helper()
	var body rest.CreateChatRequest
	_ = body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: b})
	r, err := s.Client.CreateChatWithResponse(bg, body, a.Auth())
	if err != nil || (r.JSON201 == nil && r.JSON200 == nil) {
		t.Fatalf("create private chat: %v %d %s", err, r.StatusCode(), r.Body)
	}
	if r.JSON201 != nil {
		return r.JSON201.ID
	}
	return r.JSON200.ID
}

func groupChat(t *testing.T, s *apptest.Server, owner apptest.User, members ...int64) int64 {
	t.Helper()
	var body rest.CreateChatRequest
	g := rest.CreateGroupChat{Type: rest.CreateGroupChatTypeGroup, Name: "g-" + apptest.RandomID()}
	if len(members) > 0 {
		g.MemberIds = &members
	}
	_ = body.FromCreateGroupChat(g)
	r, err := s.Client.CreateChatWithResponse(bg, body, owner.Auth())
	if err != nil || r.JSON201 == nil {
		t.Fatalf("create group: %v %d %s", err, r.StatusCode(), r.Body)
	}
	return r.JSON201.ID
}

func sendFrame(chatID int64, cmid, text string) map[string]any {
	return map[string]any{"type": "message.send", "chat_id": chatID, "client_msg_id": cmid, "text": text}
}

func TestDeliveryAcrossReplicasAndDevices(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := pair(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)

		phone := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		laptop := b.DialWS(t, "/ws", alice.Token)
		bobWS := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		// Presence events for the connections just opened may arrive; skip them.
		time.Sleep(300 * time.Millisecond)
		phone.Drain(100 * time.Millisecond)
		laptop.Drain(0)
		bobWS.Drain(0)

		phone.Send(t, sendFrame(chatID, "c1", "hello"))
		ack := phone.Expect(t, "message.ack", wait)
		if ack.ClientMsgID != "c1" || ack.Duplicate || ack.Msg().Seq != 1 || ack.Msg().Text != "hello" {
			t.Fatalf("got ack %s", ack.Raw)
		}
		for name, w := range map[string]*apptest.WS{"laptop": laptop, "bob": bobWS} {
			f, _ := w.Until(t, "message.new", wait)
			if m := f.Msg(); m.Seq != 1 || m.SenderID != alice.ID || m.Text != "hello" || m.ChatID != chatID {
				t.Errorf("%s: got %s", name, f.Raw)
			}
		}
		// The sender's own connection gets no message.new for its send.
		for _, f := range phone.Drain(300 * time.Millisecond) {
			if f.Type == "message.new" {
				t.Errorf("sender got its own message.new: %s", f.Raw)
			}
		}
	})
}

// collect reads frames until it has n message frames (message.new or
// message.ack) for chatID or the timeout passes, and returns their seqs in
// arrival order along with how many were acks.
func collect(t *testing.T, w *apptest.WS, chatID int64, n int, timeout time.Duration) (seqs []int64, acks int) {
	t.Helper()
	deadline := time.After(timeout)
	for len(seqs) < n {
		select {
		case <-deadline:
			t.Fatalf("got %d of %d messages within %v: %v", len(seqs), n, timeout, seqs)
		default:
		}
		f := w.Next(t, timeout)
		if (f.Type == "message.new" || f.Type == "message.ack") && f.Msg().ChatID == chatID {
			seqs = append(seqs, f.Msg().Seq)
			if f.Type == "message.ack" {
				acks++
			}
		}
	}
	return seqs, acks
}

func wantSeqs(t *testing.T, name string, got []int64, from, to int64) {
	t.Helper()
	if int64(len(got)) != to-from+1 {
		t.Fatalf("%s: got %d messages %v, want seqs %d..%d", name, len(got), got, from, to)
	}
	for i, s := range got {
		if s != from+int64(i) {
			t.Fatalf("%s: message %d has seq %d, want %d (in order, no gaps, no repeats): %v", name, i, s, from+int64(i), got)
		}
	}
}

// settle waits for presence and membership events of freshly opened
// connections to pass, then drops them.
func settle(ws ...*apptest.WS) {
	time.Sleep(200 * time.Millisecond)
	for _, w := range ws {
		w.Drain(50 * time.Millisecond)
	}
}

// servers returns two replicas for postgres and cluster (Redis between
// them) and the one embedded instance twice for sqlite, so each scenario
// runs every way.
func servers(t *testing.T, env *apptest.Env) (*apptest.Server, *apptest.Server) {
	t.Helper()
	if !env.Shared() {
		s := env.Start(t)
		return s, s
	}
	return pair(t, env)
}

func TestGroupOrderingWithConcurrentSenders(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		const senders, each = 4, 25
		users := make([]apptest.User, senders)
		ids := make([]int64, senders)
		for i := range users {
			users[i] = a.NewUser(t, fmt.Sprintf("U%d", i))
			ids[i] = users[i].ID
		}
		chatID := groupChat(t, a, users[0], ids[1:]...)
		// Every user has a device on each replica; half on /ws, half per chat.
		var sendWS, watchWS []*apptest.WS
		for i, u := range users {
			srvSend, srvWatch := a, b
			if i%2 == 1 {
				srvSend, srvWatch = b, a
			}
			sendWS = append(sendWS, srvSend.DialWS(t, fmt.Sprintf("/ws/%d", chatID), u.Token))
			watchWS = append(watchWS, srvWatch.DialWS(t, "/ws", u.Token))
		}
		settle(append(sendWS, watchWS...)...)

		done := make(chan struct{})
		for i, w := range sendWS {
			go func() {
				defer func() { done <- struct{}{} }()
				for k := range each {
					w.Send(t, sendFrame(chatID, fmt.Sprintf("u%d-%d", i, k), fmt.Sprintf("from %d #%d", i, k)))
				}
			}()
		}
		for range sendWS {
			<-done
		}
		total := int64(senders * each)
		for i, w := range watchWS {
			seqs, acks := collect(t, w, chatID, int(total), 20*time.Second)
			wantSeqs(t, fmt.Sprintf("watcher %d", i), seqs, 1, total)
			if acks != 0 {
				t.Errorf("watcher %d got %d acks, want none", i, acks)
			}
		}
		for i, w := range sendWS {
			seqs, acks := collect(t, w, chatID, int(total), 20*time.Second)
			wantSeqs(t, fmt.Sprintf("sender %d", i), seqs, 1, total)
			if acks != each {
				t.Errorf("sender %d got %d acks, want %d", i, acks, each)
			}
		}
		for _, w := range append(sendWS, watchWS...) {
			for _, f := range w.Drain(200 * time.Millisecond) {
				if f.Type == "message.new" || f.Type == "message.ack" {
					t.Errorf("extra frame after all messages: %s", f.Raw)
				}
			}
		}
	})
}

func TestConcurrentDuplicateSendsOnBothReplicas(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		dev1 := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		dev2 := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		bob1 := a.DialWS(t, "/ws", bob.Token)
		bob2 := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		settle(dev1, dev2, bob1, bob2)

		for round := range 5 {
			cmid := fmt.Sprintf("dup-%d", round)
			go dev1.Send(t, sendFrame(chatID, cmid, "once"))
			go dev2.Send(t, sendFrame(chatID, cmid, "once"))
			time.Sleep(400 * time.Millisecond)
			frames := map[string][]apptest.Frame{"dev1": dev1.Drain(100 * time.Millisecond), "dev2": dev2.Drain(0),
				"bob1": bob1.Drain(0), "bob2": bob2.Drain(0)}
			count := func(fs []apptest.Frame, typ string, dup bool) (n int, ids map[int64]bool) {
				ids = map[int64]bool{}
				for _, f := range fs {
					if f.Type == typ && (typ != "message.ack" || f.Duplicate == dup) {
						n++
						ids[f.Msg().ID] = true
					}
				}
				return n, ids
			}
			fresh1, _ := count(frames["dev1"], "message.ack", false)
			fresh2, _ := count(frames["dev2"], "message.ack", false)
			dup1, _ := count(frames["dev1"], "message.ack", true)
			dup2, _ := count(frames["dev2"], "message.ack", true)
			if fresh1+fresh2 != 1 || dup1+dup2 != 1 || fresh1+dup1 != 1 || fresh2+dup2 != 1 {
				t.Fatalf("round %d: got acks fresh %d/%d dup %d/%d, want one fresh and one duplicate, one per device\n%v", round, fresh1, fresh2, dup1, dup2, frames)
			}
			// The device whose send was the original gets no message.new;
			// the other device and both of Bob's get exactly one.
			wantNew := map[string]int{"dev1": dup1, "dev2": dup2, "bob1": 1, "bob2": 1}
			for name, want := range wantNew {
				if n, _ := count(frames[name], "message.new", false); n != want {
					t.Errorf("round %d: %s got %d message.new, want %d: %v", round, name, n, want, frames[name])
				}
			}
		}
		h, _ := a.Client.GetHistoryWithResponse(bg, chatID, nil, bob.Auth())
		if len(*h.JSON200) != 5 {
			t.Errorf("got %d stored messages, want 5 (one per round)", len(*h.JSON200))
		}
	})
}

func TestRecoveryWithSinceSeqAndSync(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		sender := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		for i := 1; i <= 5; i++ {
			sender.Send(t, sendFrame(chatID, fmt.Sprintf("m%d", i), "x"))
			sender.Until(t, "message.ack", wait)
		}
		// Bob reconnects having seen seq 2: he gets 3..5 replayed, then live.
		bobWS := b.DialWS(t, fmt.Sprintf("/ws/%d?since_seq=2", chatID), bob.Token)
		seqs, _ := collect(t, bobWS, chatID, 3, wait)
		wantSeqs(t, "replay", seqs, 3, 5)
		for i := 6; i <= 8; i++ {
			sender.Send(t, sendFrame(chatID, fmt.Sprintf("m%d", i), "x"))
		}
		seqs, _ = collect(t, bobWS, chatID, 3, wait)
		wantSeqs(t, "live after replay", seqs, 6, 8)

		// Without since_seq a connection starts at the chat's last seq.
		fresh := b.DialWS(t, "/ws", bob.Token)
		settle(fresh)
		fresh.Quiet(t, 200*time.Millisecond)
		// A sync frame replays from its since_seq on the same connection.
		fresh.Send(t, map[string]any{"type": "sync", "chat_id": chatID, "since_seq": 6})
		seqs, _ = collect(t, fresh, chatID, 2, wait)
		wantSeqs(t, "sync", seqs, 7, 8)
		sender.Send(t, sendFrame(chatID, "m9", "x"))
		seqs, _ = collect(t, fresh, chatID, 1, wait)
		wantSeqs(t, "live after sync", seqs, 9, 9)
		seqs, _ = collect(t, bobWS, chatID, 1, wait)
		wantSeqs(t, "bob live", seqs, 9, 9)

		// REST sends reach WebSocket connections too, the sender's included.
		r, err := a.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: "rest-1", Text: "via REST"}, alice.Auth())
		if err != nil || r.StatusCode() != 201 {
			t.Fatalf("REST send: %v %d", err, r.StatusCode())
		}
		for name, w := range map[string]*apptest.WS{"sender": sender, "bob": bobWS, "fresh": fresh} {
			f, _ := w.Until(t, "message.new", wait)
			if f.Msg().Seq != 10 || f.Msg().Text != "via REST" {
				t.Errorf("%s: got %s", name, f.Raw)
			}
		}
	})
}

func TestReadReceipts(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob, carol := a.NewUser(t, "Alice"), a.NewUser(t, "Bob"), a.NewUser(t, "Carol")
		chatID := groupChat(t, a, alice, bob.ID, carol.ID)
		aw := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		bw := b.DialWS(t, "/ws", bob.Token)
		cw := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), carol.Token)
		settle(aw, bw, cw)
		for i := 1; i <= 3; i++ {
			aw.Send(t, sendFrame(chatID, fmt.Sprintf("m%d", i), "hi"))
			aw.Until(t, "message.ack", wait)
		}
		settle(aw, bw, cw)

		// Bob reads up to 2 over WebSocket: everyone hears it; the lowest
		// watermark is still Carol's 0, so no chat.read yet.
		bw.Send(t, map[string]any{"type": "message.read", "chat_id": chatID, "seq": 2})
		for name, w := range map[string]*apptest.WS{"alice": aw, "bob": bw, "carol": cw} {
			f := w.Expect(t, "message.read", wait)
			if f.UserID != bob.ID || f.Seq != 2 || f.ChatID != chatID {
				t.Errorf("%s: got %s", name, f.Raw)
			}
		}
		aw.Quiet(t, 200*time.Millisecond)
		// A lower seq changes nothing and sends nothing.
		bw.Send(t, map[string]any{"type": "message.read", "chat_id": chatID, "seq": 1})
		aw.Quiet(t, 300*time.Millisecond)

		// Carol reads past the end over REST: clamped to 3; the lowest
		// watermark becomes 2 (Bob's), so chat.read 2 goes to everyone.
		r, err := b.Client.MarkReadWithResponse(bg, chatID, rest.ReadRequest{Seq: 99}, carol.Auth())
		if err != nil || r.StatusCode() != 204 {
			t.Fatalf("mark read: %v %d", err, r.StatusCode())
		}
		for name, w := range map[string]*apptest.WS{"alice": aw, "bob": bw, "carol": cw} {
			f := w.Expect(t, "message.read", wait)
			if f.UserID != carol.ID || f.Seq != 3 {
				t.Errorf("%s: got %s, want carol read 3 (clamped)", name, f.Raw)
			}
			cr := w.Expect(t, "chat.read", wait)
			if cr.Seq != 2 || cr.ChatID != chatID {
				t.Errorf("%s: got %s, want chat.read 2", name, cr.Raw)
			}
		}
		// Bob catches up: chat.read 3, and Alice's messages all read.
		bw.Send(t, map[string]any{"type": "message.read", "chat_id": chatID, "seq": 3})
		aw.Expect(t, "message.read", wait)
		if f := aw.Expect(t, "chat.read", wait); f.Seq != 3 {
			t.Errorf("got %s, want chat.read 3", f.Raw)
		}
		h, _ := a.Client.GetHistoryWithResponse(bg, chatID, nil, alice.Auth())
		for _, m := range *h.JSON200 {
			if !m.Read {
				t.Errorf("seq %d not read after everyone read it", m.Seq)
			}
		}
	})
}

func TestPresenceAcrossReplicas(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		bw := b.DialWS(t, "/ws", bob.Token)
		settle(bw)

		online := func(s *apptest.Server) []int64 {
			r, err := s.Client.GetPresenceWithResponse(bg, chatID, bob.Auth())
			if err != nil || r.JSON200 == nil {
				t.Fatalf("presence: %v", err)
			}
			return *r.JSON200
		}
		if got := online(a); len(got) != 1 || got[0] != bob.ID {
			t.Errorf("got online %v, want [bob]", got)
		}
		phone := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		f := bw.Expect(t, "presence", wait)
		if f.UserID != alice.ID || !f.Online || f.ChatID != chatID {
			t.Errorf("got %s, want alice online", f.Raw)
		}
		// A second device is not a new presence event.
		laptop := b.DialWS(t, "/ws", alice.Token)
		bw.Quiet(t, 300*time.Millisecond)
		if got := online(b); len(got) != 2 {
			t.Errorf("got online %v, want alice and bob", got)
		}
		phone.Close()
		bw.Quiet(t, 300*time.Millisecond)
		laptop.Close()
		f = bw.Expect(t, "presence", wait)
		if f.UserID != alice.ID || f.Online {
			t.Errorf("got %s, want alice offline after her last device", f.Raw)
		}
		if got := online(a); len(got) != 1 || got[0] != bob.ID {
			t.Errorf("got online %v, want [bob]", got)
		}
	})
}

func TestDeadReplicaPresenceExpires(t *testing.T) {
	for _, d := range apptest.Dialects {
		t.Run(d, func(t *testing.T) {
			env := apptest.NewEnv(t, d)
			env.PresenceTTL = 1500 * time.Millisecond
			a, b := env.Start(t), env.Start(t)
			alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
			chatID := privateChat(t, a, alice, bob.ID)
			w := a.DialWS(t, "/ws", alice.Token)
			settle(w)
			online := func() []int64 {
				r, _ := b.Client.GetPresenceWithResponse(bg, chatID, bob.Auth())
				return *r.JSON200
			}
			// Kept alive by the heartbeat well past the TTL.
			time.Sleep(2 * env.PresenceTTL)
			if got := online(); len(got) != 1 || got[0] != alice.ID {
				t.Fatalf("got online %v, want [alice] while her replica lives", got)
			}
			// Replica a dies: its broker connection goes without a goodbye.
			_ = a.Broker.Close()
			w.CloseNow()
			deadline := time.Now().Add(env.PresenceTTL + 3*time.Second)
			for len(online()) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("alice still online %v after her replica died", online())
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

func TestMembershipChanges(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		owner, bob, carol := a.NewUser(t, "Owner"), a.NewUser(t, "Bob"), a.NewUser(t, "Carol")
		chatID := groupChat(t, a, owner, bob.ID)
		ow := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), owner.Token)
		bobChat := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		bobAll := a.DialWS(t, "/ws", bob.Token)
		carolAll := b.DialWS(t, "/ws", carol.Token)
		settle(ow, bobChat, bobAll, carolAll)

		// Carol is added: her open /ws starts receiving the group.
		r, err := a.Client.AddGroupMemberWithResponse(bg, chatID, carol.ID, owner.Auth())
		if err != nil || r.StatusCode() != 200 {
			t.Fatalf("add: %v", err)
		}
		for name, w := range map[string]*apptest.WS{"owner": ow, "bobChat": bobChat, "bobAll": bobAll, "carol": carolAll} {
			f, _ := w.Until(t, "member.added", wait)
			if f.UserID != carol.ID || f.ChatID != chatID {
				t.Errorf("%s: got %s", name, f.Raw)
			}
		}
		time.Sleep(100 * time.Millisecond)
		ow.Send(t, sendFrame(chatID, "after-add", "welcome carol"))
		ow.Until(t, "message.ack", wait)
		if f, _ := carolAll.Until(t, "message.new", wait); f.Msg().Text != "welcome carol" {
			t.Errorf("carol got %s", f.Raw)
		}

		// Bob is removed: his per-chat connection gets member.removed and
		// closes with 4403; his /ws stops receiving the chat.
		rr, err := a.Client.RemoveGroupMemberWithResponse(bg, chatID, bob.ID, owner.Auth())
		if err != nil || rr.StatusCode() != 200 {
			t.Fatalf("remove: %v", err)
		}
		if f, _ := bobChat.Until(t, "member.removed", wait); f.UserID != bob.ID {
			t.Errorf("got %s", f.Raw)
		}
		if code := bobChat.WaitClosed(t, wait); code != 4403 {
			t.Errorf("got close code %d, want 4403", code)
		}
		if f, _ := bobAll.Until(t, "member.removed", wait); f.UserID != bob.ID {
			t.Errorf("got %s", f.Raw)
		}
		ow.Until(t, "member.removed", wait)
		time.Sleep(100 * time.Millisecond)
		ow.Send(t, sendFrame(chatID, "after-remove", "bob is gone"))
		ow.Until(t, "message.ack", wait)
		carolAll.Until(t, "message.new", wait)
		for _, f := range bobAll.Drain(400 * time.Millisecond) {
			if f.ChatID == chatID || f.Msg().ChatID == chatID {
				t.Errorf("removed member still receives the chat: %s", f.Raw)
			}
		}
		// A removed member cannot reconnect to the chat.
		if _, resp, err := b.TryDialWS(fmt.Sprintf("/ws/%d", chatID), bob.Token, nil); err == nil || resp == nil || resp.StatusCode != 403 {
			t.Errorf("reconnect after removal: got %v, want 403", err)
		}
	})
}

func TestBadFrames(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob, mallory := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Mallory")
		chatID := privateChat(t, s, alice, bob.ID)
		foreign := privateChat(t, s, bob, mallory.ID)
		for _, path := range []string{fmt.Sprintf("/ws/%d", chatID), "/ws"} {
			t.Run(path, func(t *testing.T) {
				w := s.DialWS(t, path, alice.Token)
				settle(w)
				cases := []struct {
					frame string
					code  string
					cmid  string
				}{
					{`{"type":`, "bad_request", ""},
					{`[1,2]`, "bad_request", ""},
					{`{"type":"message.explode"}`, "bad_request", ""},
					{`{"chat_id":1}`, "bad_request", ""},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"text":"no id"}`, chatID), "bad_request", ""},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"client_msg_id":"x1"}`, chatID), "bad_request", "x1"},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"client_msg_id":"x2","text":"   "}`, chatID), "bad_request", "x2"},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"client_msg_id":"x3","text":"%s"}`, chatID, strings.Repeat("a", 4097)), "too_large", "x3"},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"client_msg_id":"%s","text":"hi"}`, chatID, strings.Repeat("i", 65)), "bad_request", strings.Repeat("i", 65)},
					{fmt.Sprintf(`{"type":"message.send","chat_id":%d,"client_msg_id":"x4","text":"let me in"}`, foreign), "forbidden", "x4"},
					{`{"type":"message.send","chat_id":99999,"client_msg_id":"x5","text":"anyone?"}`, "not_found", "x5"},
					{fmt.Sprintf(`{"type":"message.read","chat_id":%d}`, chatID), "bad_request", ""},
					{fmt.Sprintf(`{"type":"message.read","chat_id":%d,"seq":-1}`, chatID), "bad_request", ""},
					{fmt.Sprintf(`{"type":"message.read","chat_id":%d,"seq":1}`, foreign), "forbidden", ""},
					{fmt.Sprintf(`{"type":"sync","chat_id":%d}`, chatID), "bad_request", ""},
					{fmt.Sprintf(`{"type":"sync","chat_id":%d,"since_seq":0}`, foreign), "forbidden", ""},
				}
				if path == "/ws" {
					cases = append(cases, struct {
						frame string
						code  string
						cmid  string
					}{`{"type":"message.send","client_msg_id":"x6","text":"which chat?"}`, "bad_request", "x6"})
				}
				for _, tc := range cases {
					w.SendRaw(t, []byte(tc.frame))
					f := w.Expect(t, "error", wait)
					if f.Code != tc.code || f.ClientMsgID != tc.cmid {
						t.Errorf("frame %.80s: got %s, want code %s client_msg_id %q", tc.frame, f.Raw, tc.code, tc.cmid)
					}
				}
				// Still usable after every error.
				cmid := "ok-" + apptest.RandomID()
				w.Send(t, sendFrame(chatID, cmid, "still here"))
				if f := w.Expect(t, "message.ack", wait); f.ClientMsgID != cmid {
					t.Errorf("got %s", f.Raw)
				}
				// Nothing of the failed sends was stored.
				h, _ := s.Client.GetHistoryWithResponse(bg, foreign, nil, bob.Auth())
				if len(*h.JSON200) != 0 {
					t.Errorf("foreign chat has %d messages, want 0", len(*h.JSON200))
				}
				// A frame over 64 KiB closes the connection with 1009.
				_ = w.TrySendRaw([]byte(`{"type":"message.send","text":"` + strings.Repeat("x", 70<<10) + `"}`)) // the server may stop reading mid-frame
				if code := w.WaitClosed(t, wait); code != 1009 {
					t.Errorf("got close code %d, want 1009", code)
				}
			})
		}
	})
}

func TestHandshakeErrors(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	alice, bob, mallory := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Mallory")
	chatID := privateChat(t, s, alice, bob.ID)
	expired, _, _ := s.Service.Tokens().IssueAt(alice.ID, 1, time.Now().Add(-2*time.Hour), time.Hour)
	for name, tc := range map[string]struct {
		path, token string
		header      http.Header
		want        int
	}{
		"no token":        {"/ws", "", nil, 401},
		"bad token":       {"/ws", "garbage", nil, 401},
		"expired token":   {"/ws", expired, nil, 401},
		"not a member":    {fmt.Sprintf("/ws/%d", chatID), mallory.Token, nil, 403},
		"no such chat":    {"/ws/99999", alice.Token, nil, 404},
		"bad since_seq":   {fmt.Sprintf("/ws/%d?since_seq=-1", chatID), alice.Token, nil, 400},
		"foreign origin":  {"/ws", alice.Token, http.Header{"Origin": {"https://evil.example"}}, 403},
		"header token ok": {"/ws", "", http.Header{"Authorization": {"Bearer " + alice.Token}}, 101},
		"same origin ok":  {"/ws", alice.Token, http.Header{"Origin": {s.URL}}, 101},
		"member chat ok":  {fmt.Sprintf("/ws/%d", chatID), bob.Token, nil, 101},
	} {
		t.Run(name, func(t *testing.T) {
			w, resp, err := s.TryDialWS(tc.path, tc.token, tc.header)
			got := 0
			if resp != nil {
				got = resp.StatusCode
			}
			if got != tc.want {
				t.Errorf("got status %d (%v), want %d", got, err, tc.want)
			}
			if w != nil {
				w.Close()
			}
		})
	}
}

func TestShutdownClosesWith1001(t *testing.T) {
	env := apptest.NewEnv(t, "postgres")
	a, b := env.Start(t), env.Start(t)
	alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
	chatID := privateChat(t, a, alice, bob.ID)
	onA := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
	onB := b.DialWS(t, "/ws", bob.Token)
	settle(onA, onB)
	go a.Stop()
	if code := onA.WaitClosed(t, wait); code != 1001 {
		t.Errorf("got close code %d, want 1001", code)
	}
	// The client moves to the surviving replica and resumes with since_seq.
	r, _ := b.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: "during", Text: "while you moved"}, bob.Auth())
	if r.StatusCode() != 201 {
		t.Fatalf("send: %d", r.StatusCode())
	}
	moved := b.DialWS(t, fmt.Sprintf("/ws/%d?since_seq=0", chatID), alice.Token)
	if f, _ := moved.Until(t, "message.new", wait); f.Msg().Text != "while you moved" {
		t.Errorf("got %s", f.Raw)
	}
}

func TestSlowConsumerIsClosed(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.StartMain(t, func(m *app.Main) {
			m.Realtime.QueueSize, m.Realtime.WriteTimeout = 32, 2*time.Second
		})
		alice, bob, carol := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
		chatID := groupChat(t, s, alice, bob.ID, carol.ID)
		healthy := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), carol.Token)

		// Bob's client never reads, and its socket buffer is tiny.
		dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
		}}
		hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		path := fmt.Sprintf("/ws/%d?token=%s", chatID, bob.Token)
		slow, _, err := s.SDK.DialSocket(bg, path, client.SocketOptions{HTTPClient: hc, Trace: s.SpecTrace("slow")})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.CloseNow()
		settle(healthy)

		text := strings.Repeat("x", 4000)
		bobDropped := func() bool {
			for _, line := range strings.Split(s.Logs.String(), "\n") {
				if strings.Contains(line, `"ws.dropped"`) && strings.Contains(line, fmt.Sprintf(`"user_id":%d,`, bob.ID)) &&
					strings.Contains(line, `"code":4008`) {
					return true
				}
			}
			return false
		}
		sent := 0
		for ; sent < 3000 && !bobDropped(); sent++ {
			r, err := s.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("m%d", sent), Text: text}, alice.Auth())
			if err != nil || r.StatusCode() != 201 {
				t.Fatalf("send %d: %v", sent, err)
			}
		}
		if !bobDropped() {
			for _, line := range strings.Split(s.Logs.String(), "\n") {
				if strings.Contains(line, `"ws.`) || strings.Contains(line, "broker") {
					t.Log(line)
				}
			}
			t.Fatalf("the slow connection was not dropped with 4008 after %d messages", sent)
		}
		// Everyone else got every message, in order, without waiting on Bob.
		seqs, _ := collect(t, healthy, chatID, sent, 20*time.Second)
		wantSeqs(t, "healthy", seqs, 1, int64(sent))
		// Bob's client, once it reads, finds the connection closed; if the
		// close frame made it through the full socket, it says 4008.
		for {
			// A frame that does not decode comes with its bytes (and the
			// spec check reports it); only the end of the connection has none.
			if f, err := slow.Read(bg); err != nil && f.Raw == nil {
				if code := client.CloseStatus(err); code != -1 && code != CloseSlowConsumer {
					t.Errorf("got close code %d, want %d", code, CloseSlowConsumer)
				}
				break
			}
		}
	})
}

func TestSendRateLimitAndConnectionCap(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.StartMain(t, func(m *app.Main) {
		m.Realtime.SendRate, m.Realtime.SendBurst, m.Realtime.MaxConnsPerUser = 1, 3, 2
	})
	alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
	chatID := privateChat(t, s, alice, bob.ID)
	w := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
	settle(w)
	for i := range 5 {
		w.Send(t, sendFrame(chatID, fmt.Sprintf("burst-%d", i), "hi"))
	}
	acks, limited := 0, 0
	for range 5 {
		f := w.Next(t, wait)
		switch {
		case f.Type == "message.ack":
			acks++
		case f.Type == "error" && f.Code == "rate_limited":
			limited++
			if f.ClientMsgID == "" {
				t.Errorf("rate_limited error without client_msg_id: %s", f.Raw)
			}
		default:
			t.Errorf("unexpected frame %s", f.Raw)
		}
	}
	if acks != 3 || limited != 2 {
		t.Errorf("got %d acks and %d rate_limited, want 3 and 2 (burst 3)", acks, limited)
	}
	// Changes share the budget; a refused one is named by chat and seq,
	// like its other errors. (Three at once: the bucket refills one a
	// second, so at most one of them passes.)
	for range 3 {
		w.Send(t, map[string]any{"type": "reaction.add", "chat_id": chatID, "seq": 1, "emoji": "👍"})
	}
	limited = 0
	for range 3 {
		f := w.Next(t, wait)
		switch {
		case f.Type == "message.updated":
		case f.Type == "error" && f.Code == "rate_limited":
			limited++
			if f.ChatID != chatID || f.Seq != 1 {
				t.Errorf("rate_limited change without its chat and seq: %s", f.Raw)
			}
		default:
			t.Errorf("unexpected frame %s", f.Raw)
		}
	}
	if limited < 2 {
		t.Errorf("%d of 3 changes refused, want at least 2", limited)
	}
	// A second connection is allowed, a third is refused before the upgrade.
	s.DialWS(t, "/ws", alice.Token)
	if _, resp, err := s.TryDialWS("/ws", alice.Token, nil); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Errorf("third connection: got %v, want 429", err)
	}
	s.DialWS(t, "/ws", bob.Token) // other users are not affected
}
