package repo_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// TestSettledSendsWaitsForTheTransaction: a batch whose answer was lost
// may still be committing; SettledSends waits for its chat locks, so it
// reads the outcome, where StoredSends, read at once, misses the message.
func TestSettledSendsWaitsForTheTransaction(t *testing.T) {
	s := repotest.OpenPostgres(t)
	ctx := context.Background()
	alice := mustUser(t, s, "alice")
	g := mustGroup(t, s, "g", alice.ID)
	req := []repo.SendRequest{{ChatID: g.ID, SenderID: alice.ID, ClientMsgID: "in-doubt"}}

	// The "in-doubt" batch: holds the chat's row as Apply does, stores the
	// message, and commits a moment later.
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.NewSelect().Model((*repo.Chat)(nil)).Column("c.id").Where("c.id = ?", g.ID).For("NO KEY UPDATE").Exec(ctx); err != nil {
		t.Fatal(err)
	}
	m := &repo.Message{ChatID: g.ID, Seq: 1, SenderID: alice.ID, Text: "hi", ClientMsgID: "in-doubt", CreatedAt: time.Now(), Rev: 1, CreatedRev: 1}
	if _, err := tx.NewInsert().Model(m).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func(tx bun.Tx) {
		time.Sleep(300 * time.Millisecond)
		committed <- tx.Commit()
	}(tx)

	if got, err := s.StoredSends(ctx, req); err != nil || len(got) != 0 {
		t.Fatalf("StoredSends while the batch runs: %v, %v; want nothing yet (the check this test makes needs it)", got, err)
	}
	got, err := s.SettledSends(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ClientMsgID != "in-doubt" {
		t.Fatalf("SettledSends: got %v, want the message the batch committed", got)
	}
}
