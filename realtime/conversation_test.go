package realtime_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// msgOf decodes a frame's message with every field.
func msgOf(t *testing.T, f apptest.Frame) rest.Message {
	t.Helper()
	var m rest.Message
	if err := json.Unmarshal(f.Message, &m); err != nil {
		t.Fatalf("frame %s: %v", f.Raw, err)
	}
	return m
}

// changes reads frames until it has n message frames (new, ack, updated)
// of chatID and returns them with their types.
func changes(t *testing.T, w *apptest.WS, chatID int64, n int) ([]string, []rest.Message) {
	t.Helper()
	var types []string
	var msgs []rest.Message
	deadline := time.After(wait)
	for len(msgs) < n {
		select {
		case <-deadline:
			t.Fatalf("got %d of %d changes: %v", len(msgs), n, types)
		default:
		}
		f := w.Next(t, wait)
		if f.Type != "message.new" && f.Type != "message.ack" && f.Type != "message.updated" {
			continue
		}
		m := msgOf(t, f)
		if m.ChatID != chatID {
			continue
		}
		types = append(types, f.Type)
		msgs = append(msgs, m)
	}
	return types, msgs
}

func revsOf(ms []rest.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Rev
	}
	return out
}

func wantRevs(t *testing.T, name string, ms []rest.Message, from, to int64) {
	t.Helper()
	got := revsOf(ms)
	if int64(len(got)) != to-from+1 {
		t.Fatalf("%s: revs %v, want %d..%d", name, got, from, to)
	}
	for i, r := range got {
		if r != from+int64(i) {
			t.Fatalf("%s: revs %v, want %d..%d in order, no gaps, no repeats", name, got, from, to)
		}
	}
}

// TestEditDeleteReactReachEveryone: edits, deletes and reaction changes,
// over REST and WebSocket, reach every connection of every member on every
// replica as message.updated, in rev order with new messages, exactly once;
// the acting connection too. Errors name the message.
func TestEditDeleteReactReachEveryone(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		owner, bob := a.NewUser(t, "Owner"), a.NewUser(t, "Bob")
		g := groupChat(t, a, owner, bob.ID)
		ownerWS := a.DialWS(t, fmt.Sprintf("/ws/%d", g), owner.Token)
		bobAll := b.DialWS(t, "/ws", bob.Token)
		bobChat := a.DialWS(t, fmt.Sprintf("/ws/%d", g), bob.Token)
		settle(ownerWS, bobAll, bobChat)

		// Each change waits for the one before: frames of different
		// connections are applied in no defined order.
		restSend(t, a, bob, g, "b1", "hello") // seq 1, rev 1
		bobChat.Send(t, map[string]any{"type": "message.edit", "seq": 1, "text": "hello, edited"})
		waitRev(t, a, owner, g, 2)
		ownerWS.Send(t, map[string]any{"type": "reaction.add", "seq": 1, "emoji": "👍"})
		waitRev(t, a, owner, g, 3)
		if r, err := b.Client.AddReactionWithResponse(bg, g, 1, "🎉", bob.Auth()); err != nil || r.StatusCode() != 200 { // rev 4
			t.Fatalf("react over REST: %v %d", err, r.StatusCode())
		}
		ownerWS.Send(t, sendFrame(g, "o1", "second"))
		waitRev(t, a, owner, g, 5)
		r, err := a.Client.DeleteMessageWithResponse(bg, g, 1, owner.Auth()) // rev 6
		if err != nil || r.StatusCode() != 200 || !r.JSON200.Deleted {
			t.Fatalf("owner deletes over REST: %v %d", err, r.StatusCode())
		}

		wantTypes := []string{"message.new", "message.updated", "message.updated", "message.updated", "message.new", "message.updated"}
		for name, w := range map[string]*apptest.WS{"owner": ownerWS, "bob /ws": bobAll, "bob /ws/g": bobChat} {
			types, ms := changes(t, w, g, 6)
			wantRevs(t, name, ms, 1, 6)
			want := slices.Clone(wantTypes)
			if name == "owner" {
				want[4] = "message.ack" // its own send
			}
			if !slices.Equal(types, want) {
				t.Errorf("%s: frame types %v, want %v", name, types, want)
			}
			if m := ms[1]; m.Text != "hello, edited" || m.EditedAt == nil {
				t.Errorf("%s: the edit arrived as %+v", name, m)
			}
			if m := ms[3]; len(m.Reactions) != 2 || m.Reactions[0].Emoji != "👍" || m.Reactions[1].Emoji != "🎉" || m.Reactions[0].Count != 1 {
				t.Errorf("%s: reactions %+v, want 👍 then 🎉", name, m.Reactions)
			}
			if m := ms[5]; !m.Deleted || m.Text != "" || len(m.Reactions) != 0 || m.Seq != 1 {
				t.Errorf("%s: the tombstone arrived as %+v", name, m)
			}
		}
		// Refusals name the message and change nothing.
		bobChat.Send(t, map[string]any{"type": "message.edit", "seq": 2, "text": "not mine"})
		if f, _ := bobChat.Until(t, "error", wait); f.Code != "forbidden" || !frameHasSeq(f, 2) {
			t.Errorf("editing another's message: %s", f.Raw)
		}
		bobChat.Send(t, map[string]any{"type": "reaction.add", "seq": 1, "emoji": "👍"})
		if f, _ := bobChat.Until(t, "error", wait); f.Code != "bad_request" || !frameHasSeq(f, 1) {
			t.Errorf("reacting to a deleted message: %s", f.Raw)
		}
		bobChat.Send(t, map[string]any{"type": "message.edit", "seq": 99, "text": "nowhere"})
		if f, _ := bobChat.Until(t, "error", wait); f.Code != "not_found" || !frameHasSeq(f, 99) {
			t.Errorf("editing seq 99: %s", f.Raw)
		}
		for _, f := range ownerWS.Drain(300 * time.Millisecond) {
			if f.Type == "message.updated" {
				t.Errorf("a refused change was announced: %s", f.Raw)
			}
		}
	})
}

// waitRev waits until chat's newest change has reached rev, as u sees it.
func waitRev(t *testing.T, s *apptest.Server, u apptest.User, chatID, rev int64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		h, err := s.Client.GetHistoryWithResponse(bg, chatID, &rest.GetHistoryParams{AfterRev: ptr64(rev - 1)}, u.Auth())
		if err == nil && h.JSON200 != nil && len(*h.JSON200) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("chat %d did not reach rev %d", chatID, rev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func frameHasSeq(f apptest.Frame, seq int64) bool {
	var e struct {
		Seq *int64 `json:"seq"`
	}
	_ = json.Unmarshal(f.Raw, &e)
	return e.Seq != nil && *e.Seq == seq
}

// TestConcurrentEditsConverge: two replicas edit one message at once, many
// times; every connection on both ends with the same final state, the one
// stored, having seen every rev once, in order.
func TestConcurrentEditsConverge(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		restSend(t, a, alice, chatID, "m", "v0") // rev 1
		w1 := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		w2 := b.DialWS(t, "/ws", bob.Token)
		e1 := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		e2 := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		settle(w1, w2, e1, e2)
		const n = 20
		for i := range n {
			e1.Send(t, map[string]any{"type": "message.edit", "seq": 1, "text": fmt.Sprintf("from a %d", i)})
			e2.Send(t, map[string]any{"type": "message.edit", "seq": 1, "text": fmt.Sprintf("from b %d", i)})
		}
		var finals []string
		for name, w := range map[string]*apptest.WS{"bob a": w1, "bob b": w2, "alice a": e1, "alice b": e2} {
			_, ms := changes(t, w, chatID, 2*n)
			wantRevs(t, name, ms, 2, 2*n+1)
			finals = append(finals, ms[len(ms)-1].Text)
		}
		h, err := a.Client.GetHistoryWithResponse(bg, chatID, nil, bob.Auth())
		if err != nil || h.JSON200 == nil || len(*h.JSON200) != 1 {
			t.Fatalf("history: %v", err)
		}
		stored := (*h.JSON200)[0]
		for _, f := range finals {
			if f != stored.Text {
				t.Errorf("final states %v, stored %q: want all equal", finals, stored.Text)
				break
			}
		}
		if stored.Rev != 2*n+1 {
			t.Errorf("stored rev %d, want %d", stored.Rev, 2*n+1)
		}
	})
}

// TestChangesRacingAReconnect: a client away while a message is edited and
// reacted to, and another is sent and edited, resumes with since_rev and
// gets the current state of each changed message once, in rev order (the
// intermediate states collapsed), created ones as message.new, then live.
func TestChangesRacingAReconnect(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		restSend(t, a, alice, chatID, "m1", "one") // rev 1
		restSend(t, a, alice, chatID, "m2", "two") // rev 2
		w := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		settle(w)
		// Bob has seen up to rev 2; he drops while the chat changes, from
		// both replicas.
		w.CloseNow()
		if _, err := a.Service.Edit(bg, alice.ID, chatID, 1, "one, edited"); err != nil { // rev 3
			t.Fatal(err)
		}
		if _, err := b.Service.React(bg, bob.ID, chatID, 1, "👍", true); err != nil { // rev 4
			t.Fatal(err)
		}
		restSend(t, b, alice, chatID, "m3", "three")                                        // rev 5
		if _, err := a.Service.Edit(bg, alice.ID, chatID, 3, "three, edited"); err != nil { // rev 6
			t.Fatal(err)
		}
		// He comes back on the other replica, and more happens at once.
		w2 := a.DialWS(t, fmt.Sprintf("/ws/%d?since_rev=2", chatID), bob.Token)
		go func() {
			_, _ = b.Service.React(bg, alice.ID, chatID, 2, "❤️", true) // rev 7, live
		}()
		types, ms := changes(t, w2, chatID, 3)
		if got := revsOf(ms); !slices.Equal(got, []int64{4, 6, 7}) {
			t.Fatalf("resumed revs %v, want [4 6 7]: message 1 at its last change, message 3 at its, then live", got)
		}
		if !slices.Equal(types, []string{"message.updated", "message.new", "message.updated"}) {
			t.Errorf("types %v: message 1 changed (updated), message 3 created while away (new), message 2 live (updated)", types)
		}
		if ms[0].Text != "one, edited" || len(ms[0].Reactions) != 1 || ms[1].Text != "three, edited" || ms[1].Seq != 3 {
			t.Errorf("states: %+v", ms)
		}
		w2.QuietBut(t, 300*time.Millisecond, "presence") // his old connection's offline may still cross replicas

		// since_seq keeps its meaning: new messages only.
		w3 := b.DialWS(t, fmt.Sprintf("/ws/%d?since_seq=2", chatID), bob.Token)
		types, ms = changes(t, w3, chatID, 1)
		if types[0] != "message.new" || ms[0].Seq != 3 || ms[0].Text != "three, edited" {
			t.Errorf("since_seq=2: %v %+v, want message 3 as message.new", types, ms)
		}
		w3.QuietBut(t, 300*time.Millisecond, "presence")

		// On /ws, since_rev lists positions per chat; a sync frame does the same.
		all := a.DialWS(t, fmt.Sprintf("/ws?since_rev=%s", url.QueryEscape(fmt.Sprintf("%d:5", chatID))), bob.Token)
		_, ms = changes(t, all, chatID, 2)
		if got := revsOf(ms); !slices.Equal(got, []int64{6, 7}) {
			t.Errorf("/ws since_rev %d:5: revs %v, want [6 7]", chatID, got)
		}
		all.Send(t, map[string]any{"type": "sync", "chat_id": chatID, "since_rev": 3})
		_, ms = changes(t, all, chatID, 3)
		if got := revsOf(ms); !slices.Equal(got, []int64{4, 6, 7}) {
			t.Errorf("sync since_rev 3: revs %v, want [4 6 7]", got)
		}
		// GET /history?after_rev: the same current states.
		h, err := a.Client.GetHistoryWithResponse(bg, chatID, &rest.GetHistoryParams{AfterRev: ptr64(3)}, bob.Auth())
		if err != nil || h.JSON200 == nil || !slices.Equal(revsOf(*h.JSON200), []int64{4, 6, 7}) {
			t.Errorf("history after_rev 3: %v %s, want revs [4 6 7]", err, h.Body)
		}
	})
}

func ptr64(v int64) *int64 { return &v }

// TestRemovedMemberGetsNoUpdates: after a removal, edits and reactions of
// the group reach none of the removed member's connections.
func TestRemovedMemberGetsNoUpdates(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		owner, bob := a.NewUser(t, "Owner"), a.NewUser(t, "Bob")
		g := groupChat(t, a, owner, bob.ID)
		restSend(t, a, owner, g, "m1", "one")
		bobAll := b.DialWS(t, "/ws", bob.Token)
		settle(bobAll)
		if r, err := a.Client.RemoveGroupMemberWithResponse(bg, g, bob.ID, owner.Auth()); err != nil || r.StatusCode() != 200 {
			t.Fatalf("remove: %v", err)
		}
		bobAll.Until(t, "member.removed", wait)
		if _, err := a.Service.Edit(bg, owner.ID, g, 1, "one, edited"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Service.React(bg, owner.ID, g, 1, "👍", true); err != nil {
			t.Fatal(err)
		}
		for _, f := range bobAll.Drain(500 * time.Millisecond) {
			if f.ChatID == g || f.Msg().ChatID == g {
				t.Errorf("removed member got %s", f.Raw)
			}
		}
		if _, err := b.Service.React(bg, bob.ID, g, 1, "👀", true); err == nil {
			t.Error("a removed member reacted")
		}
	})
}

// TestTyping: typing reaches the other members' connections on every
// replica and none of the typist's own; a user's typing in a chat is
// relayed at most once per 2 s, whichever replica its frames go to.
func TestTyping(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := servers(t, env)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		chatID := privateChat(t, a, alice, bob.ID)
		typist1 := a.DialWS(t, fmt.Sprintf("/ws/%d", chatID), alice.Token)
		typist2 := b.DialWS(t, "/ws", alice.Token)
		bob1 := a.DialWS(t, "/ws", bob.Token)
		bob2 := b.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		settle(typist1, typist2, bob1, bob2)
		for range 5 { // a burst, over both of the typist's connections
			typist1.Send(t, map[string]any{"type": "typing"})
			typist2.Send(t, map[string]any{"type": "typing", "chat_id": chatID})
		}
		for name, w := range map[string]*apptest.WS{"bob on a": bob1, "bob on b": bob2} {
			var got []apptest.Frame
			for _, f := range w.Drain(800 * time.Millisecond) {
				if f.Type == "typing" {
					got = append(got, f)
				}
			}
			if len(got) != 1 || got[0].ChatID != chatID || got[0].UserID != alice.ID {
				t.Errorf("%s: typing frames %d (%v), want exactly one from alice within the 2 s throttle", name, len(got), got)
			}
		}
		for name, w := range map[string]*apptest.WS{"typist a": typist1, "typist b": typist2} {
			for _, f := range w.Drain(0) {
				if f.Type == "typing" || f.Type == "error" {
					t.Errorf("%s got %s", name, f.Raw)
				}
			}
		}
		// Nothing stored.
		h, err := a.Client.GetHistoryWithResponse(bg, chatID, nil, bob.Auth())
		if err != nil || h.JSON200 == nil || len(*h.JSON200) != 0 {
			t.Errorf("typing stored something: %v %s", err, h.Body)
		}
	})
}

// TestReplies: a send may answer a message of its chat (deleted ones too);
// anything else is refused.
func TestReplies(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		chatID := privateChat(t, s, alice, bob.ID)
		restSend(t, s, alice, chatID, "m1", "question")
		if _, err := s.Service.Delete(bg, alice.ID, chatID, 1); err != nil {
			t.Fatal(err)
		}
		w := s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), bob.Token)
		settle(w)
		w.Send(t, map[string]any{"type": "message.send", "client_msg_id": "r1", "text": "answer", "reply_to_seq": 1})
		ack, _ := w.Until(t, "message.ack", wait)
		if m := msgOf(t, ack); m.ReplyToSeq == nil || *m.ReplyToSeq != 1 {
			t.Errorf("reply: %s", ack.Raw)
		}
		w.Send(t, map[string]any{"type": "message.send", "client_msg_id": "r2", "text": "answer", "reply_to_seq": 9})
		if f, _ := w.Until(t, "error", wait); f.Code != "bad_request" || f.ClientMsgID != "r2" {
			t.Errorf("reply to seq 9: %s", f.Raw)
		}
		seq := int64(7)
		r, err := s.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: "r3", Text: "x", ReplyToSeq: &seq}, bob.Auth())
		if err != nil || r.StatusCode() != 422 {
			t.Errorf("REST reply to seq 7: %v %d %s, want 422", err, r.StatusCode(), r.Body)
		}
	})
}
