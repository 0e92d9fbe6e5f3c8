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
	if err == nil {
		ms := []Message{m}
		err = s.withReactions(ctx, ms)
		m = ms[0]
	}
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
	ms := make([]Message, 1)
	err := s.db.NewSelect().Model(&ms[0]).Where("m.chat_id = ? AND m.seq = ?", chatID, seq).Scan(ctx)
	if err == nil {
		err = s.withReactions(ctx, ms)
	}
	if err != nil {
		return Message{}, wrap("message by seq", err)
	}
	return ms[0], nil
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
	// AfterRev, when set, selects the messages changed after that
	// revision (created, edited, deleted, reacted to), ascending by rev;
	// the seq cursors and Offset still apply.
	AfterRev *int64
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
	newestFirst := q.BeforeSeq != nil && q.AfterSeq == nil && q.AfterRev == nil
	switch {
	case q.AfterRev != nil:
		sel = sel.Where("m.rev > ?", *q.AfterRev).OrderExpr("m.rev ASC")
	case newestFirst:
		sel = sel.OrderExpr("m.seq DESC")
	default:
		sel = sel.OrderExpr("m.seq ASC")
	}
	err := sel.Scan(ctx)
	if err == nil {
		err = s.withReactions(ctx, msgs)
	}
	if err != nil {
		return nil, wrap("history", err)
	}
	if newestFirst {
		slices.Reverse(msgs)
	}
	return msgs, nil
}

// ChangesAfter returns the current state of chatID's messages whose
// latest change has a rev in (afterRev, head], ascending by rev, at most
// limit of them, where head is the chat's last_rev read first (returned).
// With minSeq above zero only messages with a greater seq count (a resume
// by seq: new messages only). A rev in that range that no message carries
// any more was superseded by a later change of the same message, so a
// reader that has taken every page may move its position to head: what
// comes after reaches it live. It serves replays and gap fills.
func (s *Store) ChangesAfter(ctx context.Context, chatID, afterRev, minSeq int64, limit int) ([]Message, int64, error) {
	var head int64
	if err := s.db.NewSelect().Model((*Chat)(nil)).Column("c.last_rev").Where("c.id = ?", chatID).Scan(ctx, &head); err != nil {
		return nil, 0, wrap("changes after", err)
	}
	msgs := []Message{}
	sel := s.db.NewSelect().Model(&msgs).Where("m.chat_id = ? AND m.rev > ? AND m.rev <= ?", chatID, afterRev, head).OrderExpr("m.rev ASC")
	if minSeq > 0 {
		sel = sel.Where("m.seq > ?", minSeq)
	}
	if limit > 0 {
		sel = sel.Limit(int64(limit))
	}
	err := sel.Scan(ctx)
	if err == nil {
		err = s.withReactions(ctx, msgs)
	}
	if err != nil {
		return nil, 0, wrap("changes after", err)
	}
	return msgs, head, nil
}

// RevAtSeq is the chat revision right after message seq was created: the
// position a resume "after seq" starts from (0 for seq 0).
func (s *Store) RevAtSeq(ctx context.Context, chatID, seq int64) (int64, error) {
	if seq <= 0 {
		return 0, nil
	}
	var rev int64
	err := s.db.NewSelect().Model((*Message)(nil)).Column("m.created_rev").Where("m.chat_id = ? AND m.seq = ?", chatID, seq).Scan(ctx, &rev)
	if err != nil {
		return 0, wrap("rev at seq", err)
	}
	return rev, nil
}
