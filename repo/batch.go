package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// SendRequest is one message to store.
type SendRequest struct {
	ChatID, SenderID int64
	ClientMsgID      string
	Text             string
}

type sendKey struct {
	chat, sender int64
	cmid         string
}

// BatchResult is the outcome of one request of a batch: a SendResult, or
// Err (ErrNotFound when its chat does not exist, ErrNotMember when its
// sender is not a member).
type BatchResult struct {
	SendResult
	Err error
}

// InsertMessages stores a batch of messages in one transaction, with the
// same guarantees as InsertMessage for each: per chat, seqs continue
// without gaps in the order of reqs; a repeat of a stored message, or of an
// earlier request of the batch, comes back as Duplicate with the original
// and consumes no seq; each sender's watermark rises to its newest message.
// Chats are locked in ascending id order, so concurrent batches cannot
// deadlock. MinAfter is the chat's lowest watermark after the batch on every
// new message; MinBefore is the one before the batch on the last new
// message of each chat and equals MinAfter on the others, so the batch
// reports each chat's watermark change once. When
// the transaction fails, nothing is stored and the error is returned.
func (s *Store) InsertMessages(ctx context.Context, reqs []SendRequest) ([]BatchResult, error) {
	out := make([]BatchResult, len(reqs))
	var chatIDs []int64
	for _, r := range reqs {
		if !slices.Contains(chatIDs, r.ChatID) {
			chatIDs = append(chatIDs, r.ChatID)
		}
	}
	slices.Sort(chatIDs)

	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// Lock the chats and read their counters.
		var heads []ChatHead
		q := tx.NewSelect().Model((*Chat)(nil)).ColumnExpr("c.id AS chat_id, c.last_seq AS last_seq").
			Where("c.id IN (?)", bun.List(chatIDs)).OrderExpr("c.id ASC")
		if s.dialect == DialectPostgres {
			q = q.For("NO KEY UPDATE")
		}
		if err := q.Scan(ctx, &heads); err != nil {
			return err
		}
		last := make(map[int64]int64, len(heads))
		for _, h := range heads {
			last[h.ChatID] = h.LastSeq
		}

		// Repeats of stored messages, read under the locks.
		existing, err := s.existingSends(ctx, tx, reqs)
		if err != nil {
			return err
		}
		// Membership, under the same locks: a removal cannot slip in.
		members, err := s.membersOf(ctx, tx, reqs)
		if err != nil {
			return err
		}

		// Allocate seqs in request order; repeats inside the batch point at
		// their first occurrence.
		now := now()
		first := map[sendKey]int{}
		var fresh []int
		grew := map[int64]int64{}
		for i, r := range reqs {
			k := sendKey{r.ChatID, r.SenderID, r.ClientMsgID}
			if _, ok := last[r.ChatID]; !ok {
				out[i].Err = fmt.Errorf("repo: insert messages: chat %d: %w", r.ChatID, ErrNotFound)
				continue
			}
			if m, ok := existing[k]; ok {
				out[i].Message, out[i].Duplicate = m, true
				continue
			}
			if !members[[2]int64{r.ChatID, r.SenderID}] {
				out[i].Err = fmt.Errorf("repo: insert messages: user %d in chat %d: %w", r.SenderID, r.ChatID, ErrNotMember)
				continue
			}
			if j, ok := first[k]; ok {
				out[i].Duplicate = true
				out[i].Message.ID = -int64(j) - 1 // filled after the insert
				continue
			}
			first[k] = i
			last[r.ChatID]++
			grew[r.ChatID] = last[r.ChatID]
			out[i].Message = Message{ChatID: r.ChatID, Seq: last[r.ChatID], SenderID: r.SenderID, Text: r.Text, ClientMsgID: r.ClientMsgID, CreatedAt: now}
			fresh = append(fresh, i)
		}
		if len(fresh) == 0 {
			return nil
		}
		touched := make([]int64, 0, len(grew))
		for id := range grew {
			touched = append(touched, id)
		}
		slices.Sort(touched)

		// Advance the counters: one statement for all chats.
		var sb strings.Builder
		args := make([]any, 0, 3*len(touched))
		sb.WriteString("UPDATE chats SET last_seq = CASE id")
		for _, id := range touched {
			sb.WriteString(" WHEN ? THEN ?")
			args = append(args, id, grew[id])
		}
		sb.WriteString(" END WHERE id IN (?)")
		args = append(args, bun.List(touched))
		if _, err := tx.NewRaw(sb.String(), args...).Exec(ctx); err != nil {
			return err
		}

		// Insert the new messages in one statement.
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

		// Watermarks: each sender's rises to its newest message.
		before, err := minWatermarks(ctx, tx, touched)
		if err != nil {
			return err
		}
		type member struct{ chat, user int64 }
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
		sb.Reset()
		args = args[:0]
		sb.WriteString("UPDATE chat_members SET last_read_seq = CASE")
		for _, k := range keys {
			sb.WriteString(" WHEN chat_id = ? AND user_id = ? AND last_read_seq < ? THEN ?")
			args = append(args, k.chat, k.user, top[k], top[k])
		}
		pairs := make([][]any, len(keys))
		for i, k := range keys {
			pairs[i] = []any{k.chat, k.user}
		}
		in, inArgs := tuplesIn("(chat_id, user_id)", pairs)
		sb.WriteString(" ELSE last_read_seq END WHERE " + in)
		args = append(args, inArgs...)
		if _, err := tx.NewRaw(sb.String(), args...).Exec(ctx); err != nil {
			return err
		}
		after, err := minWatermarks(ctx, tx, touched)
		if err != nil {
			return err
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
	})
	if err != nil {
		return nil, wrap("insert messages", err)
	}
	for i := range out {
		if out[i].Duplicate && out[i].Message.ID < 0 {
			out[i].Message = out[-out[i].Message.ID-1].Message
		}
	}
	return out, nil
}

// existingSends returns the stored messages that reqs repeat.
func (s *Store) existingSends(ctx context.Context, tx bun.Tx, reqs []SendRequest) (map[sendKey]Message, error) {
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

// membersOf reports which (chat, sender) pairs of reqs are memberships.
func (s *Store) membersOf(ctx context.Context, tx bun.Tx, reqs []SendRequest) (map[[2]int64]bool, error) {
	rows := make([][]any, len(reqs))
	for i, r := range reqs {
		rows[i] = []any{r.ChatID, r.SenderID}
	}
	where, args := tuplesIn("(cm.chat_id, cm.user_id)", rows)
	var ms []Member
	if err := tx.NewSelect().Model(&ms).Column("cm.chat_id", "cm.user_id").Where(where, args...).Scan(ctx); err != nil {
		return nil, err
	}
	out := make(map[[2]int64]bool, len(ms))
	for _, m := range ms {
		out[[2]int64{m.ChatID, m.UserID}] = true
	}
	return out, nil
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

func minWatermarks(ctx context.Context, db bun.IDB, chatIDs []int64) (map[int64]int64, error) {
	var rows []struct {
		ChatID int64 `bun:"chat_id"`
		Low    int64 `bun:"low"`
	}
	err := db.NewSelect().Model((*Member)(nil)).ColumnExpr("cm.chat_id AS chat_id, MIN(cm.last_read_seq) AS low").
		Where("cm.chat_id IN (?)", bun.List(chatIDs)).GroupExpr("cm.chat_id").Scan(ctx, &rows)
	out := make(map[int64]int64, len(rows))
	for _, r := range rows {
		out[r.ChatID] = r.Low
	}
	return out, err
}

// Committer batches concurrent sends into shared transactions (group
// commit). A batch starts as soon as a worker is free and takes whatever is
// queued at that moment, so a lone send is never delayed by a timer and a
// busy server writes many messages per commit. A send returns only after
// its transaction committed.
type Committer struct {
	s        *Store
	queue    chan *pendingSend
	maxBatch int
	done     chan struct{}
	stopped  chan struct{}
	onCommit func([]SendResult) // set before use; runs on the worker
}

type pendingSend struct {
	ctx   context.Context
	req   SendRequest
	reply chan BatchResult
}

// NewCommitter starts workers that commit batches of at most maxBatch
// messages. On SQLite one worker is enough: there is one writer anyway.
func (s *Store) NewCommitter(workers, maxBatch int) *Committer {
	if s.dialect == DialectSQLite {
		workers = 1
	}
	c := &Committer{s: s, queue: make(chan *pendingSend, 4*maxBatch), maxBatch: maxBatch,
		done: make(chan struct{}), stopped: make(chan struct{})}
	finished := make(chan struct{}, workers)
	for range workers {
		go func() {
			c.work()
			finished <- struct{}{}
		}()
	}
	go func() {
		for range workers {
			<-finished
		}
		close(c.stopped)
	}()
	return c
}

// ErrCommitterClosed is returned by Insert after Close.
var ErrCommitterClosed = errors.New("repo: committer closed")

// Insert queues one send and waits for its commit. It returns early with
// ctx's error when ctx ends first; the send may still be committed then,
// and a retry with the same client_msg_id finds it.
func (c *Committer) Insert(ctx context.Context, req SendRequest) (SendResult, error) {
	p := &pendingSend{ctx: ctx, req: req, reply: make(chan BatchResult, 1)}
	select {
	case c.queue <- p:
	case <-ctx.Done():
		return SendResult{}, ctx.Err()
	case <-c.done:
		return SendResult{}, ErrCommitterClosed
	}
	select {
	case r := <-p.reply:
		return r.SendResult, r.Err
	case <-ctx.Done():
		return SendResult{}, ctx.Err()
	}
}

// Close stops the workers after the sends already queued.
func (c *Committer) Close() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	<-c.stopped
}

func (c *Committer) work() {
	batch := make([]*pendingSend, 0, c.maxBatch)
	for {
		select {
		case p := <-c.queue:
			batch = append(batch[:0], p)
		case <-c.done:
			for { // finish what is queued
				select {
				case p := <-c.queue:
					c.commit([]*pendingSend{p})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < c.maxBatch {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		c.commit(batch)
	}
}

// commit stores a batch. A lone send takes the single-message path; a
// batch whose transaction fails is retried one send at a time, so one bad
// send cannot fail the others.
func (c *Committer) commit(batch []*pendingSend) {
	live := batch[:0:0]
	for _, p := range batch {
		if p.ctx.Err() == nil {
			live = append(live, p)
		} else {
			p.reply <- BatchResult{Err: p.ctx.Err()}
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if len(live) > 1 {
		reqs := make([]SendRequest, len(live))
		for i, p := range live {
			reqs[i] = p.req
		}
		if res, err := c.s.InsertMessages(ctx, reqs); err == nil {
			c.committed(res)
			for i, p := range live {
				p.reply <- res[i]
			}
			return
		}
	}
	for _, p := range live {
		r, err := c.s.InsertMessage(ctx, p.req.ChatID, p.req.SenderID, p.req.ClientMsgID, p.req.Text)
		res := BatchResult{SendResult: r, Err: err}
		c.committed([]BatchResult{res})
		p.reply <- res
	}
}

// committed hands the new messages of a commit to the OnCommit callback, in
// commit order: per chat that is seq order.
func (c *Committer) committed(res []BatchResult) {
	if c.onCommit == nil {
		return
	}
	fresh := make([]SendResult, 0, len(res))
	for _, r := range res {
		if r.Err == nil && !r.Duplicate {
			fresh = append(fresh, r.SendResult)
		}
	}
	if len(fresh) > 0 {
		c.onCommit(fresh)
	}
}

// OnCommit sets fn to run after each commit, before the senders hear of
// it, with the new (not duplicate) messages in seq order per chat. Publish
// from fn, and each chat's messages leave this replica in order even though
// their senders wake in any order. Call it before the first Insert.
func (c *Committer) OnCommit(fn func([]SendResult)) { c.onCommit = fn }
