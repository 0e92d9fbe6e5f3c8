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
// update, insert, watermark update, inside BEGIN and COMMIT. On Postgres
// they travel in two round trips (see insertMessagesPG): the reads with
// BEGIN, then the writes with COMMIT. When the transaction fails, nothing
// is stored and the error is returned for the whole batch.
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
	var chatIDs []int64
	for _, r := range reqs {
		if !slices.Contains(chatIDs, r.ChatID) {
			chatIDs = append(chatIDs, r.ChatID)
		}
	}
	slices.Sort(chatIDs)
	if s.dialect == DialectPostgres {
		return s.insertMessagesPG(ctx, reqs, chatIDs, assumeNew)
	}
	var out []SendResult
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var heads []ChatHead
		if err := lockQuery(tx, chatIDs, false).Scan(ctx, &heads); err != nil {
			return err
		}
		var existing []Message
		if !assumeNew {
			if err := existingQuery(tx, reqs, &existing).Scan(ctx); err != nil {
				return err
			}
		}
		var marks []markRow
		if err := marksQuery(tx, reqs).Scan(ctx, &marks); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		p := planSends(reqs, heads, existing, marks)
		out = p.out
		if len(p.fresh) == 0 {
			return nil
		}
		if _, err := countersQuery(tx, p).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&p.msgs).Returning("id").Exec(ctx); err != nil {
			return err
		}
		if _, err := watermarksQuery(tx, p).Exec(ctx); err != nil {
			return err
		}
		p.inserted(idsOf(p.msgs))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func idsOf(ms []Message) []int64 {
	ids := make([]int64, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// sendPlan is what one batch writes, decided from what the transaction
// read under the chats' locks; both dialects' transactions run it.
type sendPlan struct {
	out   []SendResult
	fresh []int     // indexes of out that are new messages, in order
	msgs  []Message // the new messages, as fresh orders them
	top   map[int64]int64
	tops  map[member]int64 // each sender's newest new message per chat
	marks watermarks
}

// planSends allocates seqs in request order, per chat from its last_seq;
// repeats of stored messages and of earlier requests of the batch point at
// their original (filled in by inserted), and refused sends carry their
// error.
func planSends(reqs []SendRequest, heads []ChatHead, existing []Message, rows []markRow) *sendPlan {
	last := make(map[int64]int64, len(heads))
	for _, h := range heads {
		last[h.ChatID] = h.LastSeq
	}
	stored := make(map[sendKey]Message, len(existing))
	for _, m := range existing {
		stored[sendKey{m.ChatID, m.SenderID, m.ClientMsgID}] = m
	}
	p := &sendPlan{out: make([]SendResult, len(reqs)), top: map[int64]int64{}, tops: map[member]int64{}, marks: newWatermarks(rows)}
	now := now()
	first := map[sendKey]int{}
	for i, r := range reqs {
		k := r.key()
		if _, ok := last[r.ChatID]; !ok {
			p.out[i].Err = fmt.Errorf("repo: insert messages: chat %d: %w", r.ChatID, ErrNotFound)
			continue
		}
		if _, ok := p.marks.own[member{r.ChatID, r.SenderID}]; !ok {
			p.out[i].Err = fmt.Errorf("repo: insert messages: user %d in chat %d: %w", r.SenderID, r.ChatID, ErrNotMember)
			continue
		}
		if m, ok := stored[k]; ok {
			p.out[i].Message, p.out[i].Duplicate = m, true
			continue
		}
		if j, ok := first[k]; ok {
			p.out[i].Duplicate = true
			p.out[i].Message.ID = -int64(j) - 1 // filled in by inserted
			continue
		}
		first[k] = i
		last[r.ChatID]++
		m := Message{ChatID: r.ChatID, Seq: last[r.ChatID], SenderID: r.SenderID, Text: r.Text, ClientMsgID: r.ClientMsgID, CreatedAt: now}
		p.out[i].Message = m
		p.fresh = append(p.fresh, i)
		p.msgs = append(p.msgs, m)
		p.top[m.ChatID] = m.Seq
		p.tops[member{m.ChatID, m.SenderID}] = m.Seq
	}
	return p
}

// inserted records the new messages' ids, in msgs order, and completes the
// results: repeats inside the batch, and the watermarks.
func (p *sendPlan) inserted(ids []int64) {
	for j, i := range p.fresh {
		p.out[i].Message.ID = ids[j]
		p.msgs[j].ID = ids[j]
	}
	for i := range p.out {
		if p.out[i].Duplicate && p.out[i].Message.ID < 0 {
			p.out[i].Message = p.out[-p.out[i].Message.ID-1].Message
		}
	}
	p.fillWatermarks()
}

// lockQuery selects the chats' heads, locking their rows in ascending id
// order on Postgres (NO KEY UPDATE conflicts with itself: other senders,
// MarkRead, removals; not with the KEY SHARE locks foreign keys take).
func lockQuery(db bun.IDB, chatIDs []int64, postgres bool) *bun.SelectQuery {
	q := db.NewSelect().Model((*Chat)(nil)).ColumnExpr("c.id AS chat_id, c.last_seq AS last_seq").
		Where("c.id IN (?)", bun.List(chatIDs)).OrderExpr("c.id ASC")
	if postgres {
		q = q.For("NO KEY UPDATE")
	}
	return q
}

// existingQuery selects the stored messages that reqs repeat, into ms.
func existingQuery(db bun.IDB, reqs []SendRequest, ms *[]Message) *bun.SelectQuery {
	rows := make([][]any, len(reqs))
	for i, r := range reqs {
		rows[i] = []any{r.ChatID, r.SenderID, r.ClientMsgID}
	}
	where, args := tuplesIn("(m.chat_id, m.sender_id, m.client_msg_id)", rows)
	return db.NewSelect().Model(ms).
		Column("m.id", "m.chat_id", "m.seq", "m.sender_id", "m.text", "m.client_msg_id", "m.created_at").
		Where(where, args...)
}

type member struct{ chat, user int64 }

// watermarks are what a batch needs to know about read positions: the
// senders' own (which also proves their membership) and, per chat, the
// lowest among the members who are not senders of the batch.
type watermarks struct {
	own    map[member]int64
	others map[int64]int64 // absent: every member is a sender
}

// markRow is one row of marksQuery.
type markRow struct {
	ChatID int64 `bun:"chat_id"`
	UserID int64 `bun:"user_id"`
	Mark   int64 `bun:"mark"`
}

// marksQuery selects the senders' memberships and the other members'
// lowest watermark per chat in one query: the aggregate rows carry user_id
// 0, which no user has.
func marksQuery(db bun.IDB, reqs []SendRequest) *bun.RawQuery {
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
	return db.NewRaw(
		"SELECT chat_id, user_id, last_read_seq AS mark FROM chat_members WHERE "+in+
			" UNION ALL SELECT chat_id, 0 AS user_id, MIN(last_read_seq) AS mark FROM chat_members"+
			" WHERE chat_id IN (?) AND NOT "+in+" GROUP BY chat_id", args...)
}

func newWatermarks(rows []markRow) watermarks {
	w := watermarks{own: map[member]int64{}, others: map[int64]int64{}}
	for _, r := range rows {
		if r.UserID == 0 {
			w.others[r.ChatID] = r.Mark
		} else {
			w.own[member{r.ChatID, r.UserID}] = r.Mark
		}
	}
	return w
}

// countersQuery sets each chat's last_seq to its newest message of the
// batch, in one statement.
func countersQuery(db bun.IDB, p *sendPlan) *bun.RawQuery {
	ids := make([]int64, 0, len(p.top))
	for id := range p.top {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var sb strings.Builder
	args := make([]any, 0, 2*len(ids)+1)
	sb.WriteString("UPDATE chats SET last_seq = CASE id")
	for _, id := range ids {
		sb.WriteString(" WHEN ? THEN ?")
		args = append(args, id, p.top[id])
	}
	sb.WriteString(" END WHERE id IN (?)")
	args = append(args, bun.List(ids))
	return db.NewRaw(sb.String(), args...)
}

// watermarksQuery moves each sender's watermark to its newest message.
func watermarksQuery(db bun.IDB, p *sendPlan) *bun.RawQuery {
	keys := make([]member, 0, len(p.tops))
	for k := range p.tops {
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
		top := p.tops[k]
		sb.WriteString(" WHEN chat_id = ? AND user_id = ? AND last_read_seq < ? THEN ?")
		args = append(args, k.chat, k.user, top, top)
		pairs[i] = []any{k.chat, k.user}
	}
	in, inArgs := tuplesIn("(chat_id, user_id)", pairs)
	sb.WriteString(" ELSE last_read_seq END WHERE " + in)
	return db.NewRaw(sb.String(), append(args, inArgs...)...)
}

// fillWatermarks fills in the results' MinBefore and MinAfter: the chat's
// lowest watermark is the lowest of the other members' and of every
// member of the chat who is a sender of the batch (whether or not it sent
// a new message), at its old or its new mark.
func (p *sendPlan) fillWatermarks() {
	before, after := map[int64]int64{}, map[int64]int64{}
	low := func(m map[int64]int64, chat, v int64) {
		if cur, ok := m[chat]; !ok || v < cur {
			m[chat] = v
		}
	}
	for chat, v := range p.marks.others {
		low(before, chat, v)
		low(after, chat, v)
	}
	for k, v := range p.marks.own {
		low(before, k.chat, v)
		low(after, k.chat, max(v, p.tops[k]))
	}
	lastOf := map[int64]int{}
	for _, i := range p.fresh {
		chat := p.out[i].Message.ChatID
		lastOf[chat] = i
		p.out[i].MinBefore, p.out[i].MinAfter = after[chat], after[chat]
	}
	for chat, i := range lastOf {
		p.out[i].MinBefore = before[chat]
	}
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
