package chat_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// received collects what a broker view receives.
type received struct {
	mu    sync.Mutex
	items []event.Item
}

func (r *received) Receive(_ string, payload []byte) {
	env, err := event.Decode(payload)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.items = append(r.items, env.Items...)
	r.mu.Unlock()
}

func (r *received) Resubscribed([]string) {}

func (r *received) seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int64
	for _, it := range r.items {
		s = append(s, it.Seq)
	}
	return s
}

// TestCommitAnswerLost: when the connection breaks after a batch's COMMIT
// was sent (repo.ErrInDoubt), the sender is not told "unavailable: nothing
// was stored" for a send that is stored. The sequencer asks the database:
// a committed send is acknowledged with its seq and published to the other
// replicas; a send that did not commit is answered unavailable and is not
// in the history.
func TestCommitAnswerLost(t *testing.T) {
	repotest.ForEachDialect(t, func(t *testing.T, store *repo.Store) {
		ctx := context.Background()
		c := &clock{t: time.Now().UTC().Truncate(time.Second)}
		b := broker.NewMemory(broker.Options{})
		svc := newService(t, store, c, func(cfg *chat.Config) { cfg.Broker = b })
		alice, err := svc.Register(ctx, "Alice", "alice@example.com", "password-123")
		if err != nil {
			t.Fatal(err)
		}
		bob, err := svc.Register(ctx, "Bob", "bob@example.com", "password-123")
		if err != nil {
			t.Fatal(err)
		}
		group, err := svc.CreateGroup(ctx, alice.ID, "g", []int64{bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		other := b.Replica()
		rec := &received{}
		other.Start(rec)
		if err := other.Subscribe(ctx, event.ChatChannel(group.Chat.ID)); err != nil {
			t.Fatal(err)
		}

		// Committed, its answer lost: acknowledged as stored, published.
		chat.LoseCommitAnswers(svc, true, 5*time.Second)
		m, dup, err := svc.Send(ctx, alice.ID, group.Chat.ID, "cmid-committed", "hello", nil)
		if err != nil {
			t.Fatalf("send whose commit landed: got error %v, want its message", err)
		}
		if dup || m.Seq != 1 || m.Text != "hello" {
			t.Fatalf("got seq %d text %q duplicate %v, want seq 1 %q not duplicate", m.Seq, m.Text, dup, "hello")
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(rec.seqs()) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := rec.seqs(); len(got) != 1 || got[0] != 1 {
			t.Fatalf("the other replica received seqs %v, want [1]", got)
		}

		// An edit whose commit landed, its answer lost: answered unavailable
		// (the client writes it again; it is idempotent), and its message
		// published as it now is, so the other replicas' connections have it.
		if _, err := svc.Edit(ctx, alice.ID, group.Chat.ID, 1, "hello, edited"); err == nil {
			t.Fatal("edit whose answer was lost: no error, want unavailable")
		}
		deadline = time.Now().Add(5 * time.Second)
		for len(rec.seqs()) < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := rec.seqs(); len(got) != 2 || got[1] != 1 {
			t.Fatalf("the other replica received seqs %v, want [1 1] (the message, then its edit)", got)
		}

		// Not committed: unavailable, and nothing stored.
		chat.LoseCommitAnswers(svc, false, 5*time.Second)
		_, _, err = svc.Send(ctx, alice.ID, group.Chat.ID, "cmid-lost", "lost", nil)
		var ce *chat.Error
		if !errors.As(err, &ce) || ce.Code != chat.CodeUnavailable {
			t.Fatalf("send that did not commit: got %v, want %s", err, chat.CodeUnavailable)
		}
		hist, err := svc.History(ctx, bob.ID, group.Chat.ID, chat.HistoryQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 1 || hist[0].ClientMsgID != "cmid-committed" || hist[0].Text != "hello, edited" {
			t.Fatalf("history holds %d messages (%v), want only cmid-committed", len(hist), hist)
		}
	})
}
