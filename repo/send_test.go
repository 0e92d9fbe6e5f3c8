package repo_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/windi-chat/windi/repo"
)

func TestInsertMessagesBatch(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
		ab, _, _ := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		g, err := s.CreateGroup(ctx, "g", a.ID, []int64{b.ID, c.ID})
		if err != nil {
			t.Fatal(err)
		}
		old := mustSend(t, s, g.ID, c.ID, "old", "stored before") // g: seq 1, c at 1

		res, err := s.InsertMessages(ctx, []repo.SendRequest{
			{ChatID: g.ID, SenderID: a.ID, ClientMsgID: "1", Text: "g1"},
			{ChatID: ab.ID, SenderID: b.ID, ClientMsgID: "1", Text: "ab1"},
			{ChatID: g.ID, SenderID: c.ID, ClientMsgID: "old", Text: "repeat of stored"},
			{ChatID: g.ID, SenderID: b.ID, ClientMsgID: "1", Text: "g2"},
			{ChatID: g.ID, SenderID: a.ID, ClientMsgID: "1", Text: "repeat in batch"},
			{ChatID: 99999, SenderID: a.ID, ClientMsgID: "x", Text: "no such chat"},
			{ChatID: ab.ID, SenderID: a.ID, ClientMsgID: "2", Text: "ab2"},
		}, repo.InsertOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			seq  int64
			dup  bool
			text string
		}{{2, false, "g1"}, {1, false, "ab1"}, {1, true, "stored before"}, {3, false, "g2"}, {2, true, "g1"}, {0, false, ""}, {2, false, "ab2"}}
		for i, w := range want {
			r := res[i]
			if i == 5 {
				if r.Err == nil {
					t.Errorf("request 5: got no error for a missing chat")
				}
				continue
			}
			if r.Err != nil || r.Message.Seq != w.seq || r.Duplicate != w.dup || r.Message.Text != w.text || r.Message.ID == 0 {
				t.Errorf("request %d: got %+v, want seq %d dup %v text %q", i, r, w.seq, w.dup, w.text)
			}
		}
		if res[2].Message.ID != old.ID || res[4].Message.ID != res[0].Message.ID {
			t.Error("duplicates do not point at their originals")
		}
		for id, want := range map[int64]int64{g.ID: 3, ab.ID: 2} {
			ch, _ := s.ChatByID(ctx, id)
			if ch.LastSeq != want {
				t.Errorf("chat %d: last_seq %d, want %d", id, ch.LastSeq, want)
			}
		}
		// Watermarks: a=2, b=3, c=1 in the group; the lowest moved 0 -> 1.
		ms, _ := s.Members(ctx, g.ID)
		got := map[int64]int64{}
		for _, m := range ms {
			got[m.UserID] = m.LastReadSeq
		}
		if got[a.ID] != 2 || got[b.ID] != 3 || got[c.ID] != 1 {
			t.Errorf("got watermarks %v, want a:2 b:3 c:1", got)
		}
		if res[3].MinBefore != 0 || res[3].MinAfter != 1 {
			t.Errorf("group: got min %d -> %d on its last new message, want 0 -> 1", res[3].MinBefore, res[3].MinAfter)
		}
		h, _ := s.History(ctx, g.ID, repo.HistoryQuery{Limit: 10})
		if len(h) != 3 {
			t.Errorf("group history has %d messages, want 3", len(h))
		}
	})
}

// TestInsertMessagesConcurrentBatches runs many batches at once over two
// chats, with repeats inside and across batches: per chat, seqs stay
// gapless and every repeated send is stored once, whatever the
// interleaving (the chat row lock serializes batches).
func TestInsertMessagesConcurrentBatches(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner := mustUser(t, s, "o")
		g1, _ := s.CreateGroup(ctx, "g1", owner.ID, nil)
		g2, _ := s.CreateGroup(ctx, "g2", owner.ID, nil)

		const batches, size = 40, 5
		var wg sync.WaitGroup
		results := make([][]repo.SendResult, batches)
		errs := make([]error, batches)
		for b := range batches {
			wg.Go(func() {
				reqs := make([]repo.SendRequest, size)
				for i := range reqs {
					n := b*size + i
					chat := g1.ID
					if n%2 == 1 {
						chat = g2.ID
					}
					cmid := fmt.Sprintf("c%d", n)
					if n%10 < 2 {
						cmid = "same" // repeated in each chat: one row per chat
					}
					reqs[i] = repo.SendRequest{ChatID: chat, SenderID: owner.ID, ClientMsgID: cmid, Text: "hi"}
				}
				results[b], errs[b] = s.InsertMessages(ctx, reqs, repo.InsertOptions{AssumeNew: b%2 == 0})
			})
		}
		wg.Wait()
		fresh := map[int64]int{}
		sameIDs := map[int64]map[int64]bool{g1.ID: {}, g2.ID: {}}
		for b, rs := range results {
			if errs[b] != nil {
				t.Fatalf("batch %d: %v", b, errs[b])
			}
			for _, r := range rs {
				if r.Err != nil {
					t.Fatalf("batch %d: %v", b, r.Err)
				}
				if !r.Duplicate {
					fresh[r.Message.ChatID]++
				}
				if r.Message.ClientMsgID == "same" {
					sameIDs[r.Message.ChatID][r.Message.ID] = true
				}
			}
		}
		for _, chat := range []int64{g1.ID, g2.ID} {
			h, _ := s.History(ctx, chat, repo.HistoryQuery{Limit: 100})
			if len(h) != fresh[chat] || len(sameIDs[chat]) != 1 {
				t.Errorf("chat %d: %d rows, %d fresh results, %d ids for the repeated send; want equal rows and results, one id", chat, len(h), fresh[chat], len(sameIDs[chat]))
			}
			for i, m := range h {
				if m.Seq != int64(i+1) {
					t.Fatalf("chat %d: message %d has seq %d, want %d", chat, i, m.Seq, i+1)
				}
			}
		}
		if want := batches*size - batches*size/5 + 2; fresh[g1.ID]+fresh[g2.ID] != want {
			t.Errorf("got %d fresh sends, want %d", fresh[g1.ID]+fresh[g2.ID], want)
		}
	})
}

// TestInsertMessagesAssumeNewStillDeduplicates: when the caller's fast
// guard wrongly says every send is new (its key expired, Redis restarted),
// the unique key catches the repeat and the batch is stored as if the
// look-up had run: the repeat answers with the original, no seq is used.
func TestInsertMessagesAssumeNewStillDeduplicates(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a := mustUser(t, s, "a")
		g, _ := s.CreateGroup(ctx, "g", a.ID, nil)
		orig := mustSend(t, s, g.ID, a.ID, "k1", "first")
		res, err := s.InsertMessages(ctx, []repo.SendRequest{
			{ChatID: g.ID, SenderID: a.ID, ClientMsgID: "k2", Text: "second"},
			{ChatID: g.ID, SenderID: a.ID, ClientMsgID: "k1", Text: "first, again"},
		}, repo.InsertOptions{AssumeNew: true})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Duplicate || res[0].Message.Seq != 2 || !res[1].Duplicate || res[1].Message.ID != orig.ID {
			t.Fatalf("got %+v, want k2 new at seq 2 and k1 the original", res)
		}
		if ch, _ := s.ChatByID(ctx, g.ID); ch.LastSeq != 2 {
			t.Errorf("last_seq %d, want 2", ch.LastSeq)
		}
	})
}

// TestRemovedMemberRepeatIsRefused: a user that left the chat repeating a
// client_msg_id it sent while a member gets ErrNotMember, not its old
// message, from the transaction and from the fast path's look-up.
func TestRemovedMemberRepeatIsRefused(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		g, _ := s.CreateGroup(ctx, "g", a.ID, []int64{b.ID})
		mustSend(t, s, g.ID, b.ID, "old", "while a member")
		req := repo.SendRequest{ChatID: g.ID, SenderID: b.ID, ClientMsgID: "old", Text: "while a member"}
		if got, err := s.StoredSends(ctx, []repo.SendRequest{req}); err != nil || len(got) != 1 {
			t.Fatalf("stored sends of a member: %v %v, want the original", got, err)
		}
		if _, err := s.RemoveMember(ctx, g.ID, b.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := s.StoredSends(ctx, []repo.SendRequest{req}); err != nil || len(got) != 0 {
			t.Errorf("stored sends after removal: %v %v, want none", got, err)
		}
		if _, err := insertOne(ctx, s, g.ID, b.ID, "old", "while a member"); !errors.Is(err, repo.ErrNotMember) {
			t.Errorf("repeat after removal: got %v, want ErrNotMember", err)
		}
	})
}

func BenchmarkInsertMessages(b *testing.B) {
	for _, size := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("postgres/batch=%d", size), func(b *testing.B) {
			s := openBench(b)
			ctx := context.Background()
			u, _ := s.CreateUser(ctx, "b", fmt.Sprintf("b-%d@x.io", size), "h")
			g, _ := s.CreateGroup(ctx, "g", u.ID, nil)
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				reqs := make([]repo.SendRequest, size)
				for i := range reqs {
					n++
					reqs[i] = repo.SendRequest{ChatID: g.ID, SenderID: u.ID, ClientMsgID: fmt.Sprint(n), Text: "benchmark message"}
				}
				if _, err := s.InsertMessages(ctx, reqs, repo.InsertOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func TestInsertChecksMembership(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, out := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "out")
		ab, _, _ := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if _, err := insertOne(ctx, s, ab.ID, out.ID, "x", "let me in"); !errors.Is(err, repo.ErrNotMember) {
			t.Errorf("single: got %v, want ErrNotMember", err)
		}
		if _, err := insertOne(ctx, s, 99999, a.ID, "x", "nowhere"); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("single, no chat: got %v, want ErrNotFound", err)
		}
		res, err := s.InsertMessages(ctx, []repo.SendRequest{
			{ChatID: ab.ID, SenderID: out.ID, ClientMsgID: "y", Text: "let me in"},
			{ChatID: ab.ID, SenderID: a.ID, ClientMsgID: "y", Text: "hi"},
		}, repo.InsertOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, repo.ErrNotMember) || res[1].Err != nil || res[1].Message.Seq != 1 {
			t.Errorf("batch: got %+v, want the outsider refused and the member's message at seq 1", res)
		}
		if ch, _ := s.ChatByID(ctx, ab.ID); ch.LastSeq != 1 {
			t.Errorf("last_seq %d, want 1: a refused send must not use a seq", ch.LastSeq)
		}
	})
}
