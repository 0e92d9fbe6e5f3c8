package repo_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/windi-chat/windi/repo"
)

func TestInsertMessage(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		chat, _, err := s.GetOrCreatePrivateChat(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatalf("private chat: %v", err)
		}

		m1 := mustSend(t, s, chat.ID, a.ID, "c1", "one")
		if m1.Seq != 1 || m1.ChatID != chat.ID || m1.SenderID != a.ID || m1.Text != "one" || m1.ClientMsgID != "c1" || m1.ID == 0 {
			t.Errorf("got %+v, want seq 1 from a", m1)
		}
		stored, err := s.MessageBySeq(ctx, chat.ID, 1)
		if err != nil {
			t.Fatalf("message by seq: %v", err)
		}
		if !reflect.DeepEqual(stored, m1) {
			t.Errorf("stored: got %+v, want %+v", stored, m1)
		}

		// A repeat returns the original and consumes no seq.
		r, err := insertOne(ctx, s, chat.ID, a.ID, "c1", "one again")
		dup, isDup := r.Message, r.Duplicate
		if err != nil || !isDup || !reflect.DeepEqual(dup, m1) {
			t.Errorf("repeat: got %+v dup=%v err=%v, want %+v dup=true", dup, isDup, err, m1)
		}
		// The same client id from another sender is another message.
		m2 := mustSend(t, s, chat.ID, b.ID, "c1", "two")
		if m2.Seq != 2 {
			t.Errorf("after duplicate: got seq %d, want 2", m2.Seq)
		}
		c, err := s.ChatByID(ctx, chat.ID)
		if err != nil || c.LastSeq != 2 {
			t.Errorf("got last_seq %d (err %v), want 2", c.LastSeq, err)
		}

		// Sending moves the sender's own watermark, never the others'.
		ma, _ := s.Member(ctx, chat.ID, a.ID)
		mb, _ := s.Member(ctx, chat.ID, b.ID)
		if ma.LastReadSeq != 1 || mb.LastReadSeq != 2 {
			t.Errorf("got watermarks a=%d b=%d, want a=1 b=2", ma.LastReadSeq, mb.LastReadSeq)
		}
		// A watermark ahead of a new message is not moved back.
		if _, err := s.MarkRead(ctx, chat.ID, b.ID, 2); err != nil {
			t.Fatalf("mark read: %v", err)
		}
		mustSend(t, s, chat.ID, a.ID, "c3", "three")
		mb, _ = s.Member(ctx, chat.ID, b.ID)
		ma, _ = s.Member(ctx, chat.ID, a.ID)
		if ma.LastReadSeq != 3 || mb.LastReadSeq != 2 {
			t.Errorf("got watermarks a=%d b=%d, want a=3 b=2", ma.LastReadSeq, mb.LastReadSeq)
		}
	})
}

func TestInsertMessageConcurrentSeq(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner := mustUser(t, s, "owner")
		g := mustGroup(t, s, "G", owner.ID)
		const n = 50
		var wg sync.WaitGroup
		got := make([]int64, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := insertOne(ctx, s, g.ID, owner.ID, fmt.Sprintf("c%d", i), "hi")
				m, dup := r.Message, r.Duplicate
				if err == nil && dup {
					err = fmt.Errorf("got duplicate for unique client id c%d", i)
				}
				got[i], errs[i] = m.Seq, err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		slices.Sort(got)
		want := make([]int64, n)
		for i := range want {
			want[i] = int64(i + 1)
		}
		if !slices.Equal(got, want) {
			t.Errorf("got seqs %v, want 1..%d", got, n)
		}
		c, err := s.ChatByID(ctx, g.ID)
		if err != nil || c.LastSeq != n {
			t.Errorf("got last_seq %d (err %v), want %d", c.LastSeq, err, n)
		}
		msgs, _, err := s.ChangesAfter(ctx, g.ID, 0, 0, 0)
		if err != nil {
			t.Fatalf("messages after: %v", err)
		}
		if !slices.Equal(seqs(msgs), want) {
			t.Errorf("stored seqs: got %v, want 1..%d", seqs(msgs), n)
		}
		m, err := s.Member(ctx, g.ID, owner.ID)
		if err != nil || m.LastReadSeq != n {
			t.Errorf("sender watermark: got %d (err %v), want %d", m.LastReadSeq, err, n)
		}
	})
}

func TestInsertMessageConcurrentDuplicate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner := mustUser(t, s, "owner")
		g := mustGroup(t, s, "G", owner.ID)
		const n = 20
		var wg sync.WaitGroup
		msgs := make([]repo.Message, n)
		dups := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r repo.SendResult
				r, errs[i] = insertOne(ctx, s, g.ID, owner.ID, "same", fmt.Sprintf("try %d", i))
				msgs[i], dups[i] = r.Message, r.Duplicate
			}()
		}
		wg.Wait()
		var fresh int
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("send %d: %v", i, errs[i])
			}
			if !dups[i] {
				fresh++
			}
			if !reflect.DeepEqual(msgs[i], msgs[0]) {
				t.Errorf("send %d: got %+v, want %+v", i, msgs[i], msgs[0])
			}
		}
		if fresh != 1 {
			t.Errorf("got %d non-duplicates, want 1", fresh)
		}
		if msgs[0].Seq != 1 {
			t.Errorf("got seq %d, want 1", msgs[0].Seq)
		}
		all, _, err := s.ChangesAfter(ctx, g.ID, 0, 0, 0)
		if err != nil || len(all) != 1 {
			t.Errorf("got %d rows (err %v), want 1", len(all), err)
		}
		c, err := s.ChatByID(ctx, g.ID)
		if err != nil || c.LastSeq != 1 {
			t.Errorf("got last_seq %d (err %v), want 1: duplicates must not consume seqs", c.LastSeq, err)
		}
		next := mustSend(t, s, g.ID, owner.ID, "next", "after")
		if next.Seq != 2 {
			t.Errorf("next message: got seq %d, want 2", next.Seq)
		}
	})
}

func TestHistory(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		owner := mustUser(t, s, "owner")
		g := mustGroup(t, s, "G", owner.ID)
		other := mustGroup(t, s, "Other", owner.ID)
		for i := 1; i <= 10; i++ {
			mustSend(t, s, g.ID, owner.ID, fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i))
		}
		mustSend(t, s, other.ID, owner.ID, "x", "elsewhere")

		tests := []struct {
			name string
			q    repo.HistoryQuery
			want []int64
		}{
			{"first page", repo.HistoryQuery{Limit: 3}, []int64{1, 2, 3}},
			{"offset", repo.HistoryQuery{Limit: 3, Offset: 3}, []int64{4, 5, 6}},
			{"offset past end", repo.HistoryQuery{Limit: 3, Offset: 20}, []int64{}},
			{"default limit", repo.HistoryQuery{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
			{"after", repo.HistoryQuery{Limit: 3, AfterSeq: ptr[int64](7)}, []int64{8, 9, 10}},
			{"after with offset", repo.HistoryQuery{Limit: 2, Offset: 1, AfterSeq: ptr[int64](5)}, []int64{7, 8}},
			{"before newest first", repo.HistoryQuery{Limit: 3, BeforeSeq: ptr[int64](8)}, []int64{5, 6, 7}},
			{"before with offset", repo.HistoryQuery{Limit: 3, Offset: 2, BeforeSeq: ptr[int64](8)}, []int64{3, 4, 5}},
			{"before near start", repo.HistoryQuery{Limit: 5, BeforeSeq: ptr[int64](3)}, []int64{1, 2}},
			{"between", repo.HistoryQuery{Limit: 2, AfterSeq: ptr[int64](2), BeforeSeq: ptr[int64](9)}, []int64{3, 4}},
			{"empty range", repo.HistoryQuery{Limit: 5, AfterSeq: ptr[int64](4), BeforeSeq: ptr[int64](5)}, []int64{}},
		}
		for _, tt := range tests {
			msgs, err := s.History(ctx, g.ID, tt.q)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if got := seqs(msgs); !slices.Equal(got, tt.want) {
				t.Errorf("%s: got seqs %v, want %v", tt.name, got, tt.want)
			}
			for _, m := range msgs {
				if m.ChatID != g.ID {
					t.Errorf("%s: got message of chat %d, want %d", tt.name, m.ChatID, g.ID)
				}
			}
		}

		after, err := s.History(ctx, g.ID, repo.HistoryQuery{AfterSeq: ptr(int64(6)), Limit: 2})
		if err != nil {
			t.Fatalf("messages after: %v", err)
		}
		if got := seqs(after); !slices.Equal(got, []int64{7, 8}) {
			t.Errorf("messages after 6 limit 2: got %v, want [7 8]", got)
		}
		if after[0].Text != "m7" {
			t.Errorf("got text %q, want m7", after[0].Text)
		}
	})
}

func TestMarkRead(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b, c := mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
		g := mustGroup(t, s, "G", a.ID, b.ID, c.ID)
		for i := 1; i <= 5; i++ {
			mustSend(t, s, g.ID, a.ID, fmt.Sprintf("c%d", i), "hi")
		}
		// a's watermark is 5 from sending; b and c are at 0.
		steps := []struct {
			user int64
			seq  int64
			want repo.ReadResult
		}{
			{b.ID, 3, repo.ReadResult{Seq: 3, Moved: true, MinBefore: 0, MinAfter: 0}},
			{b.ID, 2, repo.ReadResult{Seq: 3, Moved: false, MinBefore: 0, MinAfter: 0}},
			{b.ID, 3, repo.ReadResult{Seq: 3, Moved: false, MinBefore: 0, MinAfter: 0}},
			{c.ID, 4, repo.ReadResult{Seq: 4, Moved: true, MinBefore: 0, MinAfter: 3}},
			{b.ID, 100, repo.ReadResult{Seq: 5, Moved: true, MinBefore: 3, MinAfter: 4}},
			{c.ID, 5, repo.ReadResult{Seq: 5, Moved: true, MinBefore: 4, MinAfter: 5}},
			{c.ID, 6, repo.ReadResult{Seq: 5, Moved: false, MinBefore: 5, MinAfter: 5}},
		}
		for i, st := range steps {
			got, err := s.MarkRead(ctx, g.ID, st.user, st.seq)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if got != st.want {
				t.Errorf("step %d (user %d seq %d): got %+v, want %+v", i, st.user, st.seq, got, st.want)
			}
		}
		if n, err := s.MinReadSeq(ctx, g.ID); err != nil || n != 5 {
			t.Errorf("min read seq: got %d, %v, want 5", n, err)
		}
		if n, err := s.MinReadSeq(ctx, 9999); err != nil || n != 0 {
			t.Errorf("min read seq of missing chat: got %d, %v, want 0", n, err)
		}
	})
}

func TestMarkReadConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		g := mustGroup(t, s, "G", a.ID, b.ID)
		for i := 1; i <= 20; i++ {
			mustSend(t, s, g.ID, a.ID, fmt.Sprintf("c%d", i), "hi")
		}
		var wg sync.WaitGroup
		results := make([]repo.ReadResult, 20)
		errs := make([]error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.MarkRead(ctx, g.ID, b.ID, int64(i+1))
			}()
		}
		wg.Wait()
		// Each advance of the minimum is reported by exactly one call, so
		// the reported steps chain from 0 to 20 without overlap.
		var advanced int64
		for i, r := range results {
			if errs[i] != nil {
				t.Fatalf("mark read %d: %v", i, errs[i])
			}
			advanced += r.MinAfter - r.MinBefore
		}
		if advanced != 20 {
			t.Errorf("got total min advance %d, want 20", advanced)
		}
		m, err := s.Member(ctx, g.ID, b.ID)
		if err != nil || m.LastReadSeq != 20 {
			t.Errorf("got watermark %d (err %v), want 20", m.LastReadSeq, err)
		}
	})
}
