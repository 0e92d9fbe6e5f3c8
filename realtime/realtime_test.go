package realtime_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/gen"
)

const wait = 5 * time.Second

var bg = context.Background()

func ptr[T any](v T) *T { return &v }

// pair starts two servers ("replicas") on one database and broker.
func pair(t *testing.T, env *apptest.Env) (*apptest.Server, *apptest.Server) {
	t.Helper()
	return env.Start(t), env.Start(t)
}

func privateChat(t *testing.T, s *apptest.Server, a apptest.User, b int64) int64 {
	t.Helper()
	var body gen.CreateChatRequest
	_ = body.FromCreatePrivateChat(gen.CreatePrivateChat{Type: gen.CreatePrivateChatTypePrivate, UserID: b})
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
	var body gen.CreateChatRequest
	g := gen.CreateGroupChat{Type: gen.CreateGroupChatTypeGroup, Name: "g-" + apptest.RandomID()}
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
