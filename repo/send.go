package repo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/uptrace/bun"
)

// SendRequest is one message to store.
type SendRequest struct {
	ChatID, SenderID int64
	ClientMsgID      string
	Text             string
}

// sendKey identifies a send: the unique key of messages.
type sendKey struct {
	chat, sender int64
	cmid         string
}

func (r SendRequest) key() sendKey { return sendKey{r.ChatID, r.SenderID, r.ClientMsgID} }

// SendResult is the outcome of one request of InsertMessages.
type SendResult struct {
	Message Message
	// Duplicate reports that the send was a repeat and Message the original.
	Duplicate bool
	// MinBefore and MinAfter are the chat's lowest member watermark before
	// and after the batch raised its senders' own. Every new message of a
	// chat carries MinAfter; only the last new message of each chat in the
	// batch carries the MinBefore of the batch (the others carry MinAfter),
	// so a chat.read event is due once per chat, where MinAfter > MinBefore.
	MinBefore, MinAfter int64
	// Err is ErrNotFound when the chat does not exist and ErrNotMember when
	// the sender is not a member; the request stored nothing.
	Err error
}

// InsertOptions tune InsertMessages.
type InsertOptions struct {
	// AssumeNew says that the caller's fast duplicate guard saw none of
	// the sends before, so the transaction skips looking for stored
	// repeats. The database's unique key still holds: should a repeat
	// reach the insert after all (the guard forgot it), the transaction is
	// run again with the look-up.
	AssumeNew bool
}

// InsertMessages stores a batch of sends, for one chat or many, in one
// transaction: the only way messages are written. Per chat, seqs continue
// the chat's last_seq without gaps in the order of reqs; each sender's
// watermark rises to its newest message. A repeat of a stored message, or
// of an earlier request of the batch, consumes no seq and comes back as
// Duplicate with the original (the batch's first occurrence for the
// latter). Membership is checked before repeats, so a user no longer in the
// chat gets ErrNotMember even for a message it sent earlier.
//
// The chats' rows are locked in ascending id order for the transaction
// (SQLite's IMMEDIATE transaction holds the database write lock instead),
// so concurrent batches, on this replica or others, serialize per chat and
// cannot deadlock; membership and repeats are read under those locks, so a
// removal or a concurrent repeat cannot slip in between.
//
// Statements per batch: lock, repeats (unless opts.AssumeNew), senders'
// memberships with the chat's other lowest watermark (one query), counter
// update, insert, watermark update: six round trips inside BEGIN and
// COMMIT. When the transaction fails, nothing is stored and the error is
// returned for the whole batch.
func (s *Store) InsertMessages(ctx context.Context, reqs []SendRequest, opts InsertOptions) ([]SendResult, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	out, err := s.insertMessages(ctx, reqs, opts.AssumeNew)
	if err != nil && opts.AssumeNew && isUniqueViolation(err) {
		out, err = s.insertMessages(ctx, reqs, false)
	}
	if err != nil {
		return nil, wrap("insert messages", err)
	}
	return out, nil
}

func (s *Store) insertMessages(ctx context.Context, reqs []SendRequest, assumeNew bool) ([]SendResult, error) {
	out := make([]SendResult, len(reqs))
	var chatIDs []int64
	for _, r := range reqs {
		if !slices.Contains(chatIDs, r.ChatID) {
			chatIDs = append(chatIDs, r.ChatID)
		}
	}
	slices.Sort(chatIDs)

	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		clear(out)
		last, err := s.lockChats(ctx, tx, chatIDs)
		if err != nil {
			return err
		}
		var existing map[sendKey]Message
		if !assumeNew {
			if existing, err = existingSends(ctx, tx, reqs); err != nil {
				return err
			}
		}
		marks, err := senderMarks(ctx, tx, reqs)
		if err != nil {
			return err
		}

		// Allocate seqs in request order; repeats inside the batch point at
		// their first occurrence.
		now := now()
		first := map[sendKey]int{}
		var fresh []int
		for i, r := range reqs {
			k := r.key()
			if _, ok := last[r.ChatID]; !ok {
				out[i].Err = fmt.Errorf("repo: insert messages: chat %d: %w", r.ChatID, ErrNotFound)
				continue
			}
			if _, ok := marks.own[member{r.ChatID, r.SenderID}]; !ok {
				out[i].Err = fmt.Errorf("repo: insert messages: user %d in chat %d: %w", r.SenderID, r.ChatID, ErrNotMember)
				continue
			}
			if m, ok := existing[k]; ok {
				out[i].Message, out[i].Duplicate = m, true
				continue
			}
			if j, ok := first[k]; ok {
				out[i].Duplicate = true
				out[i].Message.ID = -int64(j) - 1 // filled in after the insert
				continue
			}
			first[k] = i
			last[r.ChatID]++
			out[i].Message = Message{ChatID: r.ChatID, Seq: last[r.ChatID], SenderID: r.SenderID, Text: r.Text, ClientMsgID: r.ClientMsgID, CreatedAt: now}
			fresh = append(fresh, i)
		}
		if len(fresh) == 0 {
			return nil
		}
		if err := advanceCounters(ctx, tx, out, fresh); err != nil {
			return err
		}
		msgs := make([]Message, len(fresh))
		for j, i := range fresh {
			msgs[j] = out[i].Message
		}
		if _, err := tx.NewInsert().Model(&msgs).Returning("id").Exec(ctx); err != nil {
			return err
		}
		for j, i := range fresh {
			out[i].Message.ID = msgs[j].ID
		}
		return raiseWatermarks(ctx, tx, out, fresh, marks)
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Duplicate && out[i].Message.ID < 0 {
			out[i].Message = out[-out[i].Message.ID-1].Message
		}
	}
	return out, nil
}

// lockChats locks the chats' rows in ascending id order and returns their
// last_seq; chats that do not exist are missing from the map.
func (s *Store) lockChats(ctx context.Context, tx bun.Tx, chatIDs []int64) (map[int64]int64, error) {
	var heads []ChatHead
	q := tx.NewSelect().Model((*Chat)(nil)).ColumnExpr("c.id AS chat_id, c.last_seq AS last_seq").
		Where("c.id IN (?)", bun.List(chatIDs)).OrderExpr("c.id ASC")
	if s.dialect == DialectPostgres {
		// NO KEY UPDATE conflicts with itself (other senders, MarkRead,
		// removals) but not with the KEY SHARE locks foreign keys take.
		q = q.For("NO KEY UPDATE")
	}
	if err := q.Scan(ctx, &heads); err != nil {
		return nil, err
	}
	last := make(map[int64]int64, len(heads))
	for _, h := range heads {
		last[h.ChatID] = h.LastSeq
	}
	return last, nil
}

// existingSends returns the stored messages that reqs repeat.
func existingSends(ctx context.Context, tx bun.Tx, reqs []SendRequest) (map[sendKey]Message, error) {
	rows := make([][]any, len(reqs))
	for i, r := range reqs {
		rows[i] = []any{r.ChatID, r.SenderID, r.ClientMsgID}
	}
	where, args := tuplesIn("(m.chat_id, m.sender_id, m.client_msg_id)", rows)
	var ms []Message
	if err := tx.NewSelect().Model(&ms).Where(where, args...).Scan(ctx); err != nil {
		return nil, err
	}
	out := make(map[sendKey]Message, len(ms))
	for _, m := range ms {
		out[sendKey{m.ChatID, m.SenderID, m.ClientMsgID}] = m
	}
	return out, nil
}

type member struct{ chat, user int64 }

// watermarks are what a batch needs to know about read positions: the
// senders' own (which also proves their membership) and, per chat, the
// lowest among the members who are not senders of the batch.
type watermarks struct {
	own    map[member]int64
	others map[int64]int64 // absent: every member is a sender
}

// senderMarks reads the senders' memberships and the other members'
// lowest watermark per chat in one query: the aggregate rows carry user_id
// 0, which no user has.
func senderMarks(ctx context.Context, tx bun.Tx, reqs []SendRequest) (watermarks, error) {
	var pairs [][]any
	var chatIDs []int64
	seen := map[member]bool{}
	for _, r := range reqs {
		k := member{r.ChatID, r.SenderID}
		if !seen[k] {
			seen[k] = true
			pairs = append(pairs, []any{r.ChatID, r.SenderID})
		}
		if !slices.Contains(chatIDs, r.ChatID) {
			chatIDs = append(chatIDs, r.ChatID)
		}
	}
	in, inArgs := tuplesIn("(chat_id, user_id)", pairs)
	args := append(append([]any{}, inArgs...), bun.List(chatIDs))
	args = append(args, inArgs...)
	var rows []struct {
		ChatID int64 `bun:"chat_id"`
		UserID int64 `bun:"user_id"`
		Mark   int64 `bun:"mark"`
	}
	err := tx.NewRaw(
		"SELECT chat_id, user_id, last_read_seq AS mark FROM chat_members WHERE "+in+
			" UNION ALL SELECT chat_id, 0 AS user_id, MIN(last_read_seq) AS mark FROM chat_members"+
			" WHERE chat_id IN (?) AND NOT "+in+" GROUP BY chat_id", args...,
	).Scan(ctx, &rows)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return watermarks{}, err
	}
	w := watermarks{own: map[member]int64{}, others: map[int64]int64{}}
	for _, r := range rows {
		if r.UserID == 0 {
			w.others[r.ChatID] = r.Mark
		} else {
			w.own[member{r.ChatID, r.UserID}] = r.Mark
		}
	}
	return w, nil
}

// advanceCounters sets each chat's last_seq to its newest message of the
// batch, in one statement.
func advanceCounters(ctx context.Context, tx bun.Tx, out []SendResult, fresh []int) error {
	top := map[int64]int64{}
	for _, i := range fresh {
		m := out[i].Message
		top[m.ChatID] = max(top[m.ChatID], m.Seq)
	}
	ids := make([]int64, 0, len(top))
	for id := range top {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var sb strings.Builder
	args := make([]any, 0, 2*len(ids)+1)
	sb.WriteString("UPDATE chats SET last_seq = CASE id")
	for _, id := range ids {
		sb.WriteString(" WHEN ? THEN ?")
		args = append(args, id, top[id])
	}
	sb.WriteString(" END WHERE id IN (?)")
	args = append(args, bun.List(ids))
	_, err := tx.NewRaw(sb.String(), args...).Exec(ctx)
	return err
}

// raiseWatermarks moves each sender's watermark to its newest message and
// fills in the results' MinBefore and MinAfter.
func raiseWatermarks(ctx context.Context, tx bun.Tx, out []SendResult, fresh []int, w watermarks) error {
	top := map[member]int64{}
	for _, i := range fresh {
		m := out[i].Message
		k := member{m.ChatID, m.SenderID}
		top[k] = max(top[k], m.Seq)
	}
	keys := make([]member, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b member) int {
		if a.chat != b.chat {
			return int(a.chat - b.chat)
		}
		return int(a.user - b.user)
	})
	var sb strings.Builder
	args := make([]any, 0, 4*len(keys))
	pairs := make([][]any, len(keys))
	sb.WriteString("UPDATE chat_members SET last_read_seq = CASE")
	for i, k := range keys {
		sb.WriteString(" WHEN chat_id = ? AND user_id = ? AND last_read_seq < ? THEN ?")
		args = append(args, k.chat, k.user, top[k], top[k])
		pairs[i] = []any{k.chat, k.user}
	}
	in, inArgs := tuplesIn("(chat_id, user_id)", pairs)
	sb.WriteString(" ELSE last_read_seq END WHERE " + in)
	if _, err := tx.NewRaw(sb.String(), append(args, inArgs...)...).Exec(ctx); err != nil {
		return err
	}

	// The chat's lowest watermark before and after: the other members'
	// lowest, and every member of the chat who is a sender of the batch
	// (whether or not it sent a new message) at its old or new mark.
	before, after := map[int64]int64{}, map[int64]int64{}
	low := func(m map[int64]int64, chat, v int64) {
		if cur, ok := m[chat]; !ok || v < cur {
			m[chat] = v
		}
	}
	for chat, v := range w.others {
		low(before, chat, v)
		low(after, chat, v)
	}
	for k, v := range w.own {
		low(before, k.chat, v)
		low(after, k.chat, max(v, top[k]))
	}
	lastOf := map[int64]int{}
	for _, i := range fresh {
		chat := out[i].Message.ChatID
		lastOf[chat] = i
		out[i].MinBefore, out[i].MinAfter = after[chat], after[chat]
	}
	for chat, i := range lastOf {
		out[i].MinBefore = before[chat]
	}
	return nil
}

// tuplesIn renders "cols IN ((?, ?), …)" for rows of equal length, with
// the arguments in order.
func tuplesIn(cols string, rows [][]any) (string, []any) {
	var sb strings.Builder
	args := make([]any, 0, len(rows)*len(rows[0]))
	sb.WriteString(cols + " IN (")
	for i, row := range rows {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?" + strings.Repeat(", ?", len(row)-1) + ")")
		args = append(args, row...)
	}
	sb.WriteString(")")
	return sb.String(), args
}

// StoredSends returns the messages that repeat reqs and whose senders are
// still members of their chats, keyed by request index. The send path asks
// for the sends its fast guard has seen before: those answer as duplicates
// without a write transaction. Repeats of a sender that has left are not
// returned, so the transaction refuses them.
func (s *Store) StoredSends(ctx context.Context, reqs []SendRequest) (map[int]Message, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	rows := make([][]any, len(reqs))
	for i, r := range reqs {
		rows[i] = []any{r.ChatID, r.SenderID, r.ClientMsgID}
	}
	where, args := tuplesIn("(m.chat_id, m.sender_id, m.client_msg_id)", rows)
	var ms []Message
	err := s.db.NewSelect().Model(&ms).
		Join("JOIN chat_members AS cm ON cm.chat_id = m.chat_id AND cm.user_id = m.sender_id").
		Where(where, args...).Scan(ctx)
	if err != nil {
		return nil, wrap("stored sends", err)
	}
	byKey := make(map[sendKey]Message, len(ms))
	for _, m := range ms {
		byKey[sendKey{m.ChatID, m.SenderID, m.ClientMsgID}] = m
	}
	out := make(map[int]Message, len(ms))
	for i, r := range reqs {
		if m, ok := byKey[r.key()]; ok {
			out[i] = m
		}
	}
	return out, nil
}
