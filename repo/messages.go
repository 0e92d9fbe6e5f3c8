package repo

import (
	"context"
	"database/sql"
	"errors"
	"slices"

	"github.com/uptrace/bun"
)

// defaultHistoryLimit applies when History gets a limit below one.
const defaultHistoryLimit = 50

// SendResult is the outcome of InsertMessage.
type SendResult struct {
	Message Message
	// Duplicate reports that the send was a repeat and Message the original.
	Duplicate bool
	// MinBefore and MinAfter are the chat's lowest member watermark before and
	// after the send raised the sender's own; a chat.read event is due when
	// MinAfter > MinBefore.
	MinBefore, MinAfter int64
}

// InsertMessage stores text as the next message of chatID from senderID and
// raises the sender's own watermark to it. The seq comes from the chat's
// last_seq, incremented in the same transaction, whose row lock serializes
// senders to one chat, so seqs run 1, 2, 3… without gaps.
//
// When the sender already sent clientMsgID to the chat, nothing changes
// (last_seq included) and InsertMessage returns the stored message with
// duplicate true. It returns ErrNotFound when the chat does not exist and
// ErrNotMember when the sender is not a member; both are checked under the
// chat's lock, so a concurrent removal cannot slip in between.
func (s *Store) InsertMessage(ctx context.Context, chatID, senderID int64, clientMsgID, text string) (SendResult, error) {
	var (
		msg Message
		res SendResult
	)
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var seq int64
		err := tx.NewRaw("UPDATE chats SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", chatID).
			Scan(ctx, &seq)
		if err != nil {
			return err
		}
		// Under the chat lock a committed duplicate is visible, so most
		// repeats end here, before the insert.
		existing, err := findByClientMsgID(ctx, tx, chatID, senderID, clientMsgID)
		if err == nil {
			msg = existing
			return errRollback
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		m := Message{ChatID: chatID, Seq: seq, SenderID: senderID, Text: text, ClientMsgID: clientMsgID, CreatedAt: now()}
		err = tx.NewRaw(
			"INSERT INTO messages (chat_id, seq, sender_id, text, client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?) "+
				"ON CONFLICT (chat_id, sender_id, client_msg_id) DO NOTHING RETURNING id",
			m.ChatID, m.Seq, m.SenderID, m.Text, m.ClientMsgID, m.CreatedAt,
		).Scan(ctx, &m.ID)
		if errors.Is(err, sql.ErrNoRows) {
			// The unique key is the durable guard; the row it kept is read
			// after the rollback.
			return errRollback
		}
		if err != nil {
			return err
		}
		// The watermarks before the sender's moves: the others' lowest and the
		// sender's own, read in one query.
		var others, own sql.NullInt64
		err = tx.NewSelect().Model((*Member)(nil)).
			ColumnExpr("MIN(CASE WHEN cm.user_id = ? THEN NULL ELSE cm.last_read_seq END)", senderID).
			ColumnExpr("MAX(CASE WHEN cm.user_id = ? THEN cm.last_read_seq END)", senderID).
			Where("cm.chat_id = ?", chatID).Scan(ctx, &others, &own)
		if err != nil {
			return err
		}
		if !own.Valid {
			return ErrNotMember // checked under the chat lock: a removal cannot slip in between
		}
		_, err = tx.NewUpdate().Model((*Member)(nil)).Set("last_read_seq = ?", seq).
			Where("chat_id = ? AND user_id = ? AND last_read_seq < ?", chatID, senderID, seq).Exec(ctx)
		if err != nil {
			return err
		}
		res.MinBefore, res.MinAfter = lowest(others, own, own.Int64), lowest(others, own, max(own.Int64, seq))
		msg = m
		return nil
	})
	switch {
	case err == nil:
		res.Message = msg
		return res, nil
	case errors.Is(err, errRollback):
		if msg.ID == 0 {
			msg, err = findByClientMsgID(ctx, s.db, chatID, senderID, clientMsgID)
			if err != nil {
				return SendResult{}, wrap("insert message: read duplicate", err)
			}
		}
		return SendResult{Message: msg, Duplicate: true}, nil
	default:
		return SendResult{}, wrap("insert message", err)
	}
}

// lowest is the chat's lowest watermark given the other members' lowest
// (others), whether the sender is a member (own.Valid), and the sender's
// watermark ownSeq.
func lowest(others, own sql.NullInt64, ownSeq int64) int64 {
	switch {
	case others.Valid && own.Valid:
		return min(others.Int64, ownSeq)
	case others.Valid:
		return others.Int64
	case own.Valid:
		return ownSeq
	}
	return 0
}

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
