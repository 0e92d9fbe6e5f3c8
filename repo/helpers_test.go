package repo_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// forEachDialect runs fn against a fresh store of each dialect.
func forEachDialect(t *testing.T, fn func(t *testing.T, s *repo.Store)) {
	t.Helper()
	repotest.ForEachDialect(t, fn)
}

// mustUser creates a user named name with email <name>@example.com.
func mustUser(t *testing.T, s *repo.Store, name string) repo.User {
	t.Helper()
	u, err := s.CreateUser(context.Background(), name, fmt.Sprintf("%s@example.com", name), "hash")
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

// mustGroup creates a group owned by creator with the members.
func mustGroup(t *testing.T, s *repo.Store, name string, creator int64, members ...int64) repo.Chat {
	t.Helper()
	c, err := s.CreateGroup(context.Background(), name, creator, members)
	if err != nil {
		t.Fatalf("create group %s: %v", name, err)
	}
	return c
}

// mustSend inserts a message that must not be a duplicate.
func mustSend(t *testing.T, s *repo.Store, chatID, senderID int64, clientMsgID, text string) repo.Message {
	t.Helper()
	r, err := insertOne(context.Background(), s, chatID, senderID, clientMsgID, text)
	if err != nil {
		t.Fatalf("insert message %s: %v", clientMsgID, err)
	}
	m := r.Message
	if r.Duplicate {
		t.Fatalf("insert message %s: got duplicate, want new", clientMsgID)
	}
	return m
}

func ptr[T any](v T) *T { return &v }

func seqs(msgs []repo.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// openBench opens a Postgres store for a benchmark.
func openBench(b *testing.B) *repo.Store {
	b.Helper()
	return repotest.OpenPostgres(b)
}

// insertOne stores one message through the batch transaction and returns
// its result, with the request's own error as the error.
func insertOne(ctx context.Context, s *repo.Store, chatID, senderID int64, clientMsgID, text string) (repo.SendResult, error) {
	res, err := s.InsertMessages(ctx, []repo.SendRequest{{ChatID: chatID, SenderID: senderID, ClientMsgID: clientMsgID, Text: text}}, repo.InsertOptions{})
	if err != nil {
		return repo.SendResult{}, err
	}
	return res[0], res[0].Err
}
