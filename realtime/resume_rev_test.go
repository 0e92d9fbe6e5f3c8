package realtime_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// TestResumeCollapsedCreationIsNew: a message created after the resume
// position and edited since is replayed at its latest rev, after newer
// messages, as message.new (SPEC §11.1: created after N), on both
// WebSocket endpoints. (Found by the clients' resume tests.)
func TestResumeCollapsedCreationIsNew(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		owner, bob := s.NewUser(t, "Owner"), s.NewUser(t, "Bob")
		g := groupChat(t, s, owner, bob.ID)
		restSend(t, s, owner, g, "o1", "one") // seq 1, rev 1
		restSend(t, s, owner, g, "o2", "two") // seq 2, rev 2
		if r, err := s.Client.EditMessageWithResponse(bg, g, 1, rest.EditMessageJSONRequestBody{Text: "one, edited"}, owner.Auth()); err != nil || r.StatusCode() != 200 {
			t.Fatalf("edit: %v", err)
		}
		for _, path := range []string{fmt.Sprintf("/ws/%d?since_rev=0", g), fmt.Sprintf("/ws?since_rev=%d:0", g)} {
			w := s.DialWS(t, path, bob.Token)
			types, ms := changes(t, w, g, 2)
			if !slices.Equal(types, []string{"message.new", "message.new"}) || ms[0].Seq != 2 || ms[1].Seq != 1 || ms[1].Text != "one, edited" {
				t.Errorf("%s: got %v for seqs [%d %d], want message.new for both, seq 1 edited", path, types, ms[0].Seq, ms[1].Seq)
			}
		}
	})
}
