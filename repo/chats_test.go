package repo_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/windi-chat/windi/repo"
)

func TestGetOrCreatePrivateChat(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")

		chat, created, err := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if !created {
			t.Error("first call: got created=false, want true")
		}
		if chat.Type != repo.ChatPrivate || chat.Name != nil || chat.LastSeq != 0 {
			t.Errorf("got chat %+v, want private, unnamed, last_seq 0", chat)
		}

		again, created, err := s.GetOrCreatePrivateChat(ctx, b.ID, a.ID)
		if err != nil {
			t.Fatalf("get reversed: %v", err)
		}
		if created || again != chat {
			t.Errorf("reversed pair: got %+v created=%v, want %+v created=false", again, created, chat)
		}

		members, err := s.Members(ctx, chat.ID)
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		if got := userIDs(members); !sameIDs(got, []int64{a.ID, b.ID}) {
			t.Errorf("got members %v, want %v", got, []int64{a.ID, b.ID})
		}
		for _, m := range members {
			if m.Role != repo.RoleMember || m.LastReadSeq != 0 {
				t.Errorf("got member %+v, want role member, last_read_seq 0", m)
			}
		}

		other, created, err := s.GetOrCreatePrivateChat(ctx, a.ID, c.ID)
		if err != nil || !created || other.ID == chat.ID {
			t.Errorf("other pair: got %+v created=%v err=%v, want a new chat", other, created, err)
		}

		if _, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, 99999); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("missing user: got %v, want ErrNotFound", err)
		}
		if _, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, a.ID); err == nil {
			t.Error("same user twice: got nil error, want one")
		}
	})
}

func TestGetOrCreatePrivateChatConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		const n = 20
		var wg sync.WaitGroup
		ids := make([]int64, n)
		created := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, y := a.ID, b.ID
				if i%2 == 1 {
					x, y = y, x
				}
				var c repo.Chat
				c, created[i], errs[i] = s.GetOrCreatePrivateChat(ctx, x, y)
				ids[i] = c.ID
			}()
		}
		wg.Wait()
		var nCreated int
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("call %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Errorf("call %d: got chat %d, want %d", i, ids[i], ids[0])
			}
			if created[i] {
				nCreated++
			}
		}
		if nCreated != 1 {
			t.Errorf("got %d calls reporting created, want 1", nCreated)
		}
		var chats int
		if err := s.DB().NewSelect().Table("chats").ColumnExpr("count(*)").Scan(ctx, &chats); err != nil {
			t.Fatalf("count chats: %v", err)
		}
		if chats != 1 {
			t.Errorf("got %d chats, want 1", chats)
		}
		if n, err := s.MemberCount(ctx, ids[0]); err != nil || n != 2 {
			t.Errorf("got %d members (err %v), want 2", n, err)
		}
	})
}

func TestCreateGroup(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner, b, c := mustUser(t, s, "owner"), mustUser(t, s, "b"), mustUser(t, s, "c")

		g := mustGroup(t, s, "Team", owner.ID, b.ID, owner.ID, c.ID, b.ID)
		if g.Type != repo.ChatGroup || g.Name == nil || *g.Name != "Team" {
			t.Errorf("got chat %+v, want group named Team", g)
		}
		got, err := s.ChatByID(ctx, g.ID)
		if err != nil {
			t.Fatalf("chat by id: %v", err)
		}
		if got.ID != g.ID || *got.Name != "Team" || !got.CreatedAt.Equal(g.CreatedAt) || got.CreatedAt != g.CreatedAt {
			t.Errorf("chat by id: got %+v, want %+v", got, g)
		}

		creator, err := s.GroupCreator(ctx, g.ID)
		if err != nil || creator != owner.ID {
			t.Errorf("group creator: got %d, %v, want %d", creator, err, owner.ID)
		}

		members, err := s.Members(ctx, g.ID)
		if err != nil {
			t.Fatalf("members: %v", err)
		}
		if len(members) != 3 {
			t.Fatalf("got %d members, want 3: %+v", len(members), members)
		}
		roles := map[int64]string{}
		for _, m := range members {
			roles[m.UserID] = m.Role
		}
		want := map[int64]string{owner.ID: repo.RoleOwner, b.ID: repo.RoleMember, c.ID: repo.RoleMember}
		for id, role := range want {
			if roles[id] != role {
				t.Errorf("user %d: got role %q, want %q", id, roles[id], role)
			}
		}
		if n, err := s.MemberCount(ctx, g.ID); err != nil || n != 3 {
			t.Errorf("member count: got %d, %v, want 3", n, err)
		}

		// A missing member rolls the whole group back.
		if _, err := s.CreateGroup(ctx, "Broken", owner.ID, []int64{b.ID, 4242}); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("missing member: got %v, want ErrNotFound", err)
		}
		ids, err := s.MemberChatIDs(ctx, owner.ID)
		if err != nil || !slices.Equal(ids, []int64{g.ID}) {
			t.Errorf("owner chats: got %v, %v, want [%d]", ids, err, g.ID)
		}

		solo := mustGroup(t, s, "Solo", owner.ID)
		if n, err := s.MemberCount(ctx, solo.ID); err != nil || n != 1 {
			t.Errorf("solo member count: got %d, %v, want 1", n, err)
		}
	})
}

func TestLookupsNotFound(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		private, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatalf("private chat: %v", err)
		}
		checks := []struct {
			name string
			err  error
		}{
			{"chat by id", second(s.ChatByID(ctx, 777))},
			{"group creator of private chat", second(s.GroupCreator(ctx, private.ID))},
			{"group creator of missing chat", second(s.GroupCreator(ctx, 777))},
			{"member of missing chat", second(s.Member(ctx, 777, a.ID))},
			{"non-member", second(s.Member(ctx, private.ID, 777))},
			{"message by seq", second(s.MessageBySeq(ctx, private.ID, 1))},
			{"mark read non-member", second(s.MarkRead(ctx, private.ID, 777, 1))},
			{"mark read missing chat", second(s.MarkRead(ctx, 777, a.ID, 1))},
		}
		for _, c := range checks {
			if !errors.Is(c.err, repo.ErrNotFound) {
				t.Errorf("%s: got %v, want ErrNotFound", c.name, c.err)
			}
		}
		_, err = insertOne(ctx, s, 777, a.ID, "x", "hi")
		if !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("insert into missing chat: got %v, want ErrNotFound", err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

func TestAddRemoveMember(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner, b := mustUser(t, s, "owner"), mustUser(t, s, "b")
		g := mustGroup(t, s, "G", owner.ID)

		added, err := s.AddMember(ctx, g.ID, b.ID)
		if err != nil || !added {
			t.Fatalf("add: got %v, %v, want true", added, err)
		}
		added, err = s.AddMember(ctx, g.ID, b.ID)
		if err != nil || added {
			t.Errorf("add again: got %v, %v, want false, nil", added, err)
		}
		m, err := s.Member(ctx, g.ID, b.ID)
		if err != nil {
			t.Fatalf("member: %v", err)
		}
		if m.Role != repo.RoleMember || m.LastReadSeq != 0 || m.ChatID != g.ID || m.UserID != b.ID {
			t.Errorf("got member %+v, want role member, last_read_seq 0", m)
		}
		if _, err := s.AddMember(ctx, g.ID, 9999); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("add missing user: got %v, want ErrNotFound", err)
		}
		if _, err := s.AddMember(ctx, 9999, b.ID); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("add to missing chat: got %v, want ErrNotFound", err)
		}

		removed, err := s.RemoveMember(ctx, g.ID, b.ID)
		if err != nil || !removed {
			t.Errorf("remove: got %v, %v, want true", removed, err)
		}
		removed, err = s.RemoveMember(ctx, g.ID, b.ID)
		if err != nil || removed {
			t.Errorf("remove again: got %v, %v, want false, nil", removed, err)
		}
		if _, err := s.Member(ctx, g.ID, b.ID); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("member after remove: got %v, want ErrNotFound", err)
		}
		if n, err := s.MemberCount(ctx, g.ID); err != nil || n != 1 {
			t.Errorf("member count: got %d, %v, want 1", n, err)
		}
	})
}

func TestChatsForUser(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")

		empty, err := s.ChatsForUser(ctx, a.ID)
		if err != nil || len(empty) != 0 {
			t.Fatalf("no chats: got %v, %v, want none", empty, err)
		}

		ab, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatalf("private: %v", err)
		}
		g := mustGroup(t, s, "G", c.ID, a.ID, b.ID)
		other := mustGroup(t, s, "Not mine", b.ID, c.ID)
		_ = other

		mustSend(t, s, ab.ID, b.ID, "m1", "hello")
		last := mustSend(t, s, ab.ID, a.ID, "m2", "hi back")
		// The group has no messages and was created after the private chat,
		// but the private chat's last message is newer still.
		list, err := s.ChatsForUser(ctx, a.ID)
		if err != nil {
			t.Fatalf("chats for user: %v", err)
		}
		if got := summaryIDs(list); !slices.Equal(got, []int64{ab.ID, g.ID}) {
			t.Fatalf("got chats %v, want %v", got, []int64{ab.ID, g.ID})
		}
		p := list[0]
		if p.LastMessage == nil || !reflect.DeepEqual(*p.LastMessage, last) {
			t.Errorf("got last message %+v, want %+v", p.LastMessage, last)
		}
		if p.MyLastReadSeq != 2 {
			t.Errorf("got my last read seq %d, want 2", p.MyLastReadSeq)
		}
		if p.Chat.LastSeq != 2 {
			t.Errorf("got last_seq %d, want 2", p.Chat.LastSeq)
		}
		if got := userIDs(p.Members); !sameIDs(got, []int64{a.ID, b.ID}) {
			t.Errorf("private members: got %v, want %v", got, []int64{a.ID, b.ID})
		}
		grp := list[1]
		if grp.LastMessage != nil {
			t.Errorf("group: got last message %+v, want nil", grp.LastMessage)
		}
		if got := userIDs(grp.Members); !sameIDs(got, []int64{a.ID, b.ID, c.ID}) {
			t.Errorf("group members: got %v, want %v", got, []int64{a.ID, b.ID, c.ID})
		}

		// A new message in the group moves it to the top.
		mustSend(t, s, g.ID, c.ID, "g1", "group news")
		list, err = s.ChatsForUser(ctx, a.ID)
		if err != nil {
			t.Fatalf("chats for user: %v", err)
		}
		if got := summaryIDs(list); !slices.Equal(got, []int64{g.ID, ab.ID}) {
			t.Errorf("after group message: got chats %v, want %v", got, []int64{g.ID, ab.ID})
		}
		if list[0].MyLastReadSeq != 0 || list[0].LastMessage == nil || list[0].LastMessage.Seq != 1 {
			t.Errorf("group summary: got %+v, want unread last message seq 1", list[0])
		}
	})
}

func summaryIDs(list []repo.ChatSummary) []int64 {
	out := make([]int64, len(list))
	for i, c := range list {
		out[i] = c.Chat.ID
	}
	return out
}

func userIDs(members []repo.Member) []int64 {
	out := make([]int64, len(members))
	for i, m := range members {
		out[i] = m.UserID
	}
	return out
}

func sameIDs(a, b []int64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestMemberChatHeads(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
		ab, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		g, err := s.CreateGroup(ctx, "g", a.ID, []int64{c.ID})
		if err != nil {
			t.Fatal(err)
		}
		mustSend(t, s, ab.ID, a.ID, "1", "x")
		mustSend(t, s, ab.ID, b.ID, "2", "y")
		heads, err := s.MemberChatHeads(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(heads) != 2 || heads[ab.ID] != 2 || heads[g.ID] != 0 {
			t.Errorf("got %v, want {%d:2 %d:0}", heads, ab.ID, g.ID)
		}
		heads, _ = s.MemberChatHeads(ctx, b.ID)
		if len(heads) != 1 || heads[ab.ID] != 2 {
			t.Errorf("got %v for b, want {%d:2}", heads, ab.ID)
		}
	})
}

func TestInsertMessageReportsLowestWatermark(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
		g, err := s.CreateGroup(ctx, "g", a.ID, []int64{b.ID, c.ID})
		if err != nil {
			t.Fatal(err)
		}
		r, err := insertOne(ctx, s, g.ID, a.ID, "1", "x") // a:1 b:0 c:0
		if err != nil || r.MinBefore != 0 || r.MinAfter != 0 {
			t.Fatalf("got %+v %v, want min 0 -> 0", r, err)
		}
		if _, err := s.MarkRead(ctx, g.ID, b.ID, 1); err != nil { // a:1 b:1 c:0
			t.Fatal(err)
		}
		r, err = insertOne(ctx, s, g.ID, c.ID, "2", "y") // c was lowest: a:1 b:1 c:2
		if err != nil || r.MinBefore != 0 || r.MinAfter != 1 {
			t.Errorf("got %+v %v, want min 0 -> 1", r, err)
		}
		r, err = insertOne(ctx, s, g.ID, c.ID, "2", "again")
		if err != nil || !r.Duplicate || r.MinBefore != 0 || r.MinAfter != 0 {
			t.Errorf("duplicate: got %+v %v, want no watermark report", r, err)
		}
	})
}
