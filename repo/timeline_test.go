package repo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/windi-chat/windi/repo"
)

func apply1(t *testing.T, s *repo.Store, op repo.Op) repo.OpResult {
	t.Helper()
	res, err := s.Apply(context.Background(), []repo.Op{op}, repo.ApplyOptions{})
	if err != nil {
		t.Fatalf("apply %+v: %v", op, err)
	}
	return res[0]
}

func emojiOf(m repo.Message) []string {
	var out []string
	for _, r := range m.Reactions {
		out = append(out, fmt.Sprintf("%s:%v", r.Emoji, r.UserIDs))
	}
	return out
}

// TestTimelineRevisions: sends, edits, deletes and reaction changes each
// take the next rev of the chat (seq only for sends); changes that change
// nothing take none; the authorization rules of SPEC §11.2-11.3 hold.
func TestTimelineRevisions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner, a, b := mustUser(t, s, "owner"), mustUser(t, s, "a"), mustUser(t, s, "b")
		g := mustGroup(t, s, "G", owner.ID, a.ID, b.ID)

		m1 := mustSend(t, s, g.ID, a.ID, "1", "hello") // rev 1
		if m1.Rev != 1 || m1.CreatedRev != 1 || m1.Deleted || m1.EditedAt != nil || len(m1.Reactions) != 0 {
			t.Fatalf("new message: %+v", m1)
		}
		two := int64(1)
		r := apply1(t, s, repo.Op{Kind: repo.OpSend, ChatID: g.ID, UserID: b.ID, ClientMsgID: "2", Text: "hi a", ReplyToSeq: &two}) // rev 2
		if r.Err != nil || r.Message.Seq != 2 || r.Message.Rev != 2 || r.Message.ReplyToSeq == nil || *r.Message.ReplyToSeq != 1 {
			t.Fatalf("reply: %+v", r)
		}
		bad := int64(9)
		if r := apply1(t, s, repo.Op{Kind: repo.OpSend, ChatID: g.ID, UserID: b.ID, ClientMsgID: "3", Text: "x", ReplyToSeq: &bad}); !errors.Is(r.Err, repo.ErrBadReply) {
			t.Errorf("reply to seq 9: got %v, want ErrBadReply", r.Err)
		}

		// Edit: the sender only; the same text changes nothing.
		if r := apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: b.ID, Seq: 1, Text: "mine now"}); !errors.Is(r.Err, repo.ErrForbidden) {
			t.Errorf("edit by another: got %v, want ErrForbidden", r.Err)
		}
		r = apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 1, Text: "hello, edited"}) // rev 3
		if r.Err != nil || !r.Changed || r.Message.Rev != 3 || r.Message.Text != "hello, edited" || r.Message.EditedAt == nil || r.Message.Seq != 1 {
			t.Fatalf("edit: %+v", r)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 1, Text: "hello, edited"}); r.Err != nil || r.Changed || r.Message.Rev != 3 {
			t.Errorf("edit to the same text: %+v, want no change", r)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 42, Text: "x"}); !errors.Is(r.Err, repo.ErrNotFound) {
			t.Errorf("edit of seq 42: got %v, want ErrNotFound", r.Err)
		}

		// Reactions: one per (user, emoji), in first-use order.
		for _, op := range []repo.Op{
			{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "👍"},     // rev 4
			{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: owner.ID, Seq: 1, Emoji: "🎉"}, // rev 5
			{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: owner.ID, Seq: 1, Emoji: "👍"}, // rev 6
		} {
			if r := apply1(t, s, op); r.Err != nil || !r.Changed {
				t.Fatalf("react %+v: %+v", op, r)
			}
		}
		r = apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "👍"})
		if r.Err != nil || r.Changed || r.Message.Rev != 6 {
			t.Errorf("adding twice: %+v, want no change", r)
		}
		if got, want := emojiOf(r.Message), []string{fmt.Sprintf("👍:[%d %d]", b.ID, owner.ID), fmt.Sprintf("🎉:[%d]", owner.ID)}; !slices.Equal(got, want) {
			t.Errorf("reactions %v, want %v", got, want)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpReactRemove, ChatID: g.ID, UserID: a.ID, Seq: 1, Emoji: "👍"}); r.Err != nil || r.Changed {
			t.Errorf("removing an absent reaction: %+v, want no change", r)
		}
		r = apply1(t, s, repo.Op{Kind: repo.OpReactRemove, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "👍"}) // rev 7
		if r.Err != nil || !r.Changed || r.Message.Rev != 7 {
			t.Fatalf("remove: %+v", r)
		}

		// Delete: the sender or the group's owner; a tombstone keeps the seq.
		if r := apply1(t, s, repo.Op{Kind: repo.OpDelete, ChatID: g.ID, UserID: b.ID, Seq: 1}); !errors.Is(r.Err, repo.ErrForbidden) {
			t.Errorf("delete by a member: got %v, want ErrForbidden", r.Err)
		}
		r = apply1(t, s, repo.Op{Kind: repo.OpDelete, ChatID: g.ID, UserID: owner.ID, Seq: 1}) // rev 8
		if r.Err != nil || !r.Changed || !r.Message.Deleted || r.Message.Text != "" || len(r.Message.Reactions) != 0 || r.Message.Rev != 8 {
			t.Fatalf("delete by the owner: %+v", r)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpDelete, ChatID: g.ID, UserID: a.ID, Seq: 1}); r.Err != nil || r.Changed {
			t.Errorf("second delete: %+v, want no change", r)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 1, Text: "back"}); !errors.Is(r.Err, repo.ErrDeleted) {
			t.Errorf("edit of a deleted message: got %v, want ErrDeleted", r.Err)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "👍"}); !errors.Is(r.Err, repo.ErrDeleted) {
			t.Errorf("reaction on a deleted message: got %v, want ErrDeleted", r.Err)
		}
		outsider := mustUser(t, s, "outsider")
		if r := apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: outsider.ID, Seq: 2, Emoji: "👀"}); !errors.Is(r.Err, repo.ErrNotMember) {
			t.Errorf("reaction by an outsider: got %v, want ErrNotMember", r.Err)
		}

		c, _ := s.ChatByID(ctx, g.ID)
		if c.LastSeq != 2 || c.LastRev != 8 {
			t.Errorf("chat counters seq %d rev %d, want 2 and 8", c.LastSeq, c.LastRev)
		}
		stored, _ := s.MessageBySeq(ctx, g.ID, 1)
		if !stored.Deleted || stored.Text != "" || stored.Rev != 8 || stored.CreatedRev != 1 || len(stored.Reactions) != 0 {
			t.Errorf("stored tombstone: %+v", stored)
		}

		// Changes after rev 2: the tombstone (rev 8) only; message 2 (rev 2)
		// did not change since. Revs 3..7 were message 1's earlier states,
		// superseded by rev 8.
		got, head, err := s.ChangesAfter(ctx, g.ID, 2, 0, 0)
		if err != nil || head != 8 || len(got) != 1 || got[0].Seq != 1 || got[0].Rev != 8 {
			t.Errorf("changes after rev 2: %v head %d err %v, want [seq 1 rev 8] head 8", got, head, err)
		}
		got, _, _ = s.ChangesAfter(ctx, g.ID, 0, 1, 0) // a resume after seq 1: new messages only
		if len(got) != 1 || got[0].Seq != 2 {
			t.Errorf("changes after rev 0 of seq > 1: %v, want [seq 2]", got)
		}
		if rev, err := s.RevAtSeq(ctx, g.ID, 2); err != nil || rev != 2 {
			t.Errorf("rev at seq 2: %d %v, want 2", rev, err)
		}
		h, _ := s.History(ctx, g.ID, repo.HistoryQuery{AfterRev: ptr(int64(0))})
		if len(h) != 2 || h[0].Seq != 2 || h[1].Seq != 1 {
			t.Errorf("history after rev 0 (by rev): %v, want seqs [2 1]", seqs(h))
		}
	})
}

// TestTimelineBatchMixesOperations: a batch applies its operations in
// order, each change with its own rev, and writes the final states.
func TestTimelineBatchMixesOperations(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		g := mustGroup(t, s, "G", a.ID, b.ID)
		mustSend(t, s, g.ID, a.ID, "old", "old") // rev 1
		res, err := s.Apply(ctx, []repo.Op{
			{Kind: repo.OpSend, ChatID: g.ID, UserID: a.ID, ClientMsgID: "n", Text: "new"}, // seq 2 rev 2
			{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 2, Text: "new, edited"},   // rev 3
			{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 2, Emoji: "👍"},        // rev 4
			{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "❤️"},       // rev 5
			{Kind: repo.OpReactRemove, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "❤️"},    // rev 6
			{Kind: repo.OpSend, ChatID: g.ID, UserID: a.ID, ClientMsgID: "n", Text: "new"}, // repeat of the first
		}, repo.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		revs := []int64{}
		for i, r := range res[:5] {
			if r.Err != nil || !r.Changed {
				t.Fatalf("op %d: %+v", i, r)
			}
			revs = append(revs, r.Message.Rev)
		}
		if !slices.Equal(revs, []int64{2, 3, 4, 5, 6}) {
			t.Errorf("revs %v, want 2..6", revs)
		}
		if !res[5].Duplicate || res[5].Message.ID != res[0].Message.ID || res[2].Message.ID != res[0].Message.ID {
			t.Errorf("repeat / ids: %+v", res)
		}
		m2, _ := s.MessageBySeq(ctx, g.ID, 2)
		if m2.Text != "new, edited" || m2.Rev != 4 || m2.CreatedRev != 2 || len(m2.Reactions) != 1 {
			t.Errorf("stored message 2: %+v", m2)
		}
		m1, _ := s.MessageBySeq(ctx, g.ID, 1)
		if m1.Rev != 6 || len(m1.Reactions) != 0 {
			t.Errorf("stored message 1: %+v", m1)
		}
	})
}

// TestTooManyReactions: the 21st distinct emoji is refused; more users on
// an emoji already there are not.
func TestTooManyReactions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		g := mustGroup(t, s, "G", a.ID, b.ID)
		mustSend(t, s, g.ID, a.ID, "1", "react to me")
		for i := range repo.MaxReactions {
			if r := apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: a.ID, Seq: 1, Emoji: fmt.Sprintf("e%d", i)}); r.Err != nil {
				t.Fatalf("emoji %d: %v", i, r.Err)
			}
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: a.ID, Seq: 1, Emoji: "one-more"}); !errors.Is(r.Err, repo.ErrTooManyReactions) {
			t.Errorf("21st emoji: got %v, want ErrTooManyReactions", r.Err)
		}
		if r := apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: b.ID, Seq: 1, Emoji: "e0"}); r.Err != nil || !r.Changed {
			t.Errorf("another user on an existing emoji: %+v", r)
		}
	})
}

// TestConcurrentEditsSerialize: concurrent edits of one message end in one
// of the edits, with revs gapless and the stored state the last one.
func TestConcurrentEditsSerialize(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a := mustUser(t, s, "a")
		g := mustGroup(t, s, "G", a.ID)
		mustSend(t, s, g.ID, a.ID, "1", "v0")
		const n = 20
		res := make([]repo.OpResult, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				out, err := s.Apply(ctx, []repo.Op{{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 1, Text: fmt.Sprintf("v%d", i+1)}}, repo.ApplyOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				res[i] = out[0]
			})
		}
		wg.Wait()
		revs := []int64{}
		last := repo.Message{}
		for _, r := range res {
			if r.Err != nil || !r.Changed {
				t.Fatalf("edit: %+v", r)
			}
			revs = append(revs, r.Message.Rev)
			if r.Message.Rev > last.Rev {
				last = r.Message
			}
		}
		slices.Sort(revs)
		for i, rev := range revs {
			if rev != int64(i+2) {
				t.Fatalf("revs %v, want 2..%d", revs, n+1)
			}
		}
		stored, _ := s.MessageBySeq(ctx, g.ID, 1)
		if stored.Text != last.Text || stored.Rev != last.Rev {
			t.Errorf("stored %q rev %d, want the last edit %q rev %d", stored.Text, stored.Rev, last.Text, last.Rev)
		}
	})
}

// TestSearchFollowsEditsAndDeletes: search sees a message's current text
// only; an edited message is found by its new words, not its old ones,
// and a deleted one is never found.
func TestSearchFollowsEditsAndDeletes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a := mustUser(t, s, "a")
		g := mustGroup(t, s, "G", a.ID)
		mustSend(t, s, g.ID, a.ID, "1", "breakfast plans")
		mustSend(t, s, g.ID, a.ID, "2", "lunch plans")
		find := func(q string) []int64 {
			t.Helper()
			ms, err := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: q})
			if err != nil {
				t.Fatal(err)
			}
			return seqs(ms)
		}
		apply1(t, s, repo.Op{Kind: repo.OpEdit, ChatID: g.ID, UserID: a.ID, Seq: 1, Text: "dinner plans"})
		if got := find("breakfast"); len(got) != 0 {
			t.Errorf("old words of an edited message found: %v", got)
		}
		if got := find("dinn"); !slices.Equal(got, []int64{1}) {
			t.Errorf("new words of an edited message: %v, want [1]", got)
		}
		apply1(t, s, repo.Op{Kind: repo.OpReactAdd, ChatID: g.ID, UserID: a.ID, Seq: 2, Emoji: "👍"})
		ms, _ := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: "lunch"})
		if len(ms) != 1 || len(ms[0].Reactions) != 1 {
			t.Errorf("search hit without its reactions: %+v", ms)
		}
		apply1(t, s, repo.Op{Kind: repo.OpDelete, ChatID: g.ID, UserID: a.ID, Seq: 2})
		if got := find("plans"); !slices.Equal(got, []int64{1}) {
			t.Errorf("after deleting message 2: %v, want [1]", got)
		}
	})
}
