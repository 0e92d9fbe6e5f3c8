package repo

import (
	"context"
	"slices"

	"github.com/uptrace/bun"
)

// defaultHistoryLimit applies when History gets a limit below one.
const defaultHistoryLimit = 50

// MessageByClientID returns the message senderID sent to chatID as
// clientMsgID, or ErrNotFound.
func (s *Store) MessageByClientID(ctx context.Context, chatID, senderID int64, clientMsgID string) (Message, error) {
	m, err := findByClientMsgID(ctx, s.db, chatID, senderID, clientMsgID)
	if err != nil {
		return Message{}, wrap("message by client id", err)
	}
	return m, nil
}

func findByClientMsgID(ctx context.Context, db bun.IDB, chatID, senderID int64, clientMsgID string) (Message, error) {
	var m Message
	err := db.NewSelect().Model(&m).
		Where("m.chat_id = ? AND m.sender_id = ? AND m.client_msg_id = ?", chatID, senderID, clientMsgID).
		Scan(ctx)
	return m, err
}

// MessageBySeq returns message seq of chatID, or ErrNotFound.
func (s *Store) MessageBySeq(ctx context.Context, chatID, seq int64) (Message, error) {
	var m Message
	if err := s.db.NewSelect().Model(&m).Where("m.chat_id = ? AND m.seq = ?", chatID, seq).Scan(ctx); err != nil {
		return Message{}, wrap("message by seq", err)
	}
	return m, nil
}

// HistoryQuery selects a page of a chat's history.
type HistoryQuery struct {
	// Limit is the page size; below one means defaultHistoryLimit.
	Limit int
	// Offset skips that many matching messages: from the newest end when
	// only BeforeSeq is set, from the oldest otherwise.
	Offset int
	// AfterSeq, when set, keeps messages with a greater seq.
	AfterSeq *int64
	// BeforeSeq, when set, keeps messages with a smaller seq.
	BeforeSeq *int64
}

// History returns a page of chatID's messages in ascending seq. With only
// BeforeSeq set it returns the Limit newest messages below BeforeSeq
// (scrolling back); otherwise the Limit oldest matching ones.
func (s *Store) History(ctx context.Context, chatID int64, q HistoryQuery) ([]Message, error) {
	limit := q.Limit
	if limit < 1 {
		limit = defaultHistoryLimit
	}
	msgs := []Message{}
	sel := s.db.NewSelect().Model(&msgs).Where("m.chat_id = ?", chatID).Limit(int64(limit)).Offset(int64(max(q.Offset, 0)))
	if q.AfterSeq != nil {
		sel = sel.Where("m.seq > ?", *q.AfterSeq)
	}
	if q.BeforeSeq != nil {
		sel = sel.Where("m.seq < ?", *q.BeforeSeq)
	}
	newestFirst := q.BeforeSeq != nil && q.AfterSeq == nil
	if newestFirst {
		sel = sel.OrderExpr("m.seq DESC")
	} else {
		sel = sel.OrderExpr("m.seq ASC")
	}
	if err := sel.Scan(ctx); err != nil {
		return nil, wrap("history", err)
	}
	if newestFirst {
		slices.Reverse(msgs)
	}
	return msgs, nil
}

// MessagesAfter returns chatID's messages with seq greater than after,
// ascending, at most limit of them (all when limit is below one). It serves
// replay and gap filling.
func (s *Store) MessagesAfter(ctx context.Context, chatID, after int64, limit int) ([]Message, error) {
	msgs := []Message{}
	sel := s.db.NewSelect().Model(&msgs).Where("m.chat_id = ? AND m.seq > ?", chatID, after).OrderExpr("m.seq ASC")
	if limit > 0 {
		sel = sel.Limit(int64(limit))
	}
	if err := sel.Scan(ctx); err != nil {
		return nil, wrap("messages after", err)
	}
	return msgs, nil
}
