package repo

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// Errors of timeline operations, besides ErrNotFound (no such chat or
// message) and ErrNotMember.
var (
	// ErrForbidden: the user may not change that message (not its sender,
	// nor the group's owner for a delete).
	ErrForbidden = errors.New("forbidden")
	// ErrDeleted: the message is deleted; it takes no edit or reaction.
	ErrDeleted = errors.New("message deleted")
	// ErrTooManyReactions: the message has MaxReactions distinct emoji.
	ErrTooManyReactions = errors.New("too many reactions")
	// ErrBadReply: reply_to_seq names no message of the chat.
	ErrBadReply = errors.New("no such message to reply to")
)

// MaxReactions is how many distinct emoji one message takes (SPEC §11.3).
const MaxReactions = 20

// OpKind is what one operation of a batch does to a chat's timeline.
type OpKind uint8

// The operations.
const (
	OpSend        OpKind = iota // a new message
	OpEdit                      // replace a message's text (its sender)
	OpDelete                    // tombstone a message (its sender, or the group's owner)
	OpReactAdd                  // put an emoji on a message
	OpReactRemove               // take one's emoji off a message
)

// Op is one change to a chat's timeline, by UserID.
type Op struct {
	Kind   OpKind
	ChatID int64
	UserID int64
	// Send: the client's id of the message, its text and what it answers.
	ClientMsgID string
	Text        string // also the new text of an edit
	ReplyToSeq  *int64
	// Edit, delete, reactions: the message changed, and the emoji.
	Seq   int64
	Emoji string
}

// OpResult is the outcome of one operation.
type OpResult struct {
	// Message is the message as the operation left it (reactions
	// included): the new one, the changed one, the unchanged one, or for a
	// repeated send the original.
	Message Message
	// Duplicate: the send repeated a stored one (or an earlier one of the
	// batch) and stored nothing.
	Duplicate bool
	// Changed: the operation changed the timeline and took a rev (always
	// for a new message; an edit to the same text, a second delete, adding
	// an emoji twice or removing an absent one change nothing).
	Changed bool
	// MinBefore and MinAfter are, for new messages, the chat's lowest member
	// watermark before and after the batch raised its senders' own. Every
	// new message of a chat carries MinAfter; only the last one of each
	// chat carries the batch's MinBefore (the others carry MinAfter), so a
	// chat.read event is due once per chat, where MinAfter > MinBefore.
	MinBefore, MinAfter int64
	// Err is why the operation changed nothing: ErrNotFound, ErrNotMember,
	// ErrForbidden, ErrDeleted, ErrTooManyReactions, ErrBadReply.
	Err error
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// AssumeNew says that the caller's fast duplicate guard saw none of the
	// batch's sends before, so the transaction skips looking for stored
	// repeats. The database's unique key still holds: should a repeat reach
	// the insert after all (the guard forgot it), the transaction runs
	// again with the look-up.
	AssumeNew bool
}

// Apply runs a batch of timeline operations, for one chat or many, in one
// transaction: the only way the timeline is written. Per chat, in the
// order of ops, every change takes the next rev (chats.last_rev) and every
// new message also the next seq, so both run 1, 2, 3… without gaps; each
// sender's watermark rises to its newest message. A repeat of a stored
// send, or of an earlier one of the batch, consumes nothing and comes back
// as Duplicate with the original. Membership is checked first, so a user
// no longer in the chat gets ErrNotMember even for a message it sent
// earlier.
//
// The chats' rows are locked in ascending id order for the transaction
// (SQLite's IMMEDIATE transaction holds the database write lock instead),
// so concurrent batches, on this replica or others, serialize per chat and
// cannot deadlock; everything decided is read under those locks, so a
// removal, a concurrent repeat or a concurrent edit cannot slip in.
//
// Statements: the reads (lock, repeats unless AssumeNew, the actors'
// memberships with the chat's other lowest watermark, the changed messages
// and their reactions), then the writes (counters, new messages, changed
// messages, reactions, watermarks), inside BEGIN and COMMIT. On Postgres
// they travel in two round trips (applyPG): the reads with BEGIN, the writes
// with COMMIT. When the transaction fails, nothing is stored and the error
// is returned for the whole batch.
func (s *Store) Apply(ctx context.Context, ops []Op, opts ApplyOptions) ([]OpResult, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	out, err := s.apply(ctx, ops, opts.AssumeNew || !hasSends(ops))
	if err != nil && opts.AssumeNew && isUniqueViolation(err) {
		out, err = s.apply(ctx, ops, false)
	}
	if err != nil {
		return nil, wrap("apply", err)
	}
	return out, nil
}

func hasSends(ops []Op) bool {
	return slices.ContainsFunc(ops, func(o Op) bool { return o.Kind == OpSend })
}

// SendRequest is one message to store.
type SendRequest struct {
	ChatID, SenderID int64
	ClientMsgID      string
	Text             string
}

// SendResult is the outcome of a send.
type SendResult = OpResult

// InsertOptions tune InsertMessages.
type InsertOptions = ApplyOptions

// InsertMessages is Apply for a batch of sends.
func (s *Store) InsertMessages(ctx context.Context, reqs []SendRequest, opts InsertOptions) ([]SendResult, error) {
	ops := make([]Op, len(reqs))
	for i, r := range reqs {
		ops[i] = Op{Kind: OpSend, ChatID: r.ChatID, UserID: r.SenderID, ClientMsgID: r.ClientMsgID, Text: r.Text}
	}
	return s.Apply(ctx, ops, opts)
}

func (s *Store) apply(ctx context.Context, ops []Op, assumeNew bool) ([]OpResult, error) {
	r := newBatchReads(ops)
	if s.dialect == DialectPostgres {
		return s.applyPG(ctx, ops, r, assumeNew)
	}
	var out []OpResult
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var heads []chatLock
		if err := lockQuery(tx, r.chatIDs, false).Scan(ctx, &heads); err != nil {
			return err
		}
		var existing []Message
		if !assumeNew {
			if err := existingQuery(tx, ops, &existing).Scan(ctx); err != nil {
				return err
			}
		}
		var marks []markRow
		if err := marksQuery(tx, r).Scan(ctx, &marks); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var targets []Message
		var reactions []reactionRow
		if len(r.targets) > 0 {
			if err := targetsQuery(tx, r, &targets).Scan(ctx); err != nil {
				return err
			}
			if err := reactionsQuery(tx, r.targets, &reactions).Scan(ctx); err != nil {
				return err
			}
		}
		p := plan(ops, heads, existing, marks, targets, reactions)
		out = p.out
		for _, q := range p.writes(tx) {
			if q.returning {
				if _, err := q.insert.Exec(ctx); err != nil {
					return err
				}
				continue
			}
			if _, err := q.raw.Exec(ctx); err != nil {
				return err
			}
		}
		p.fill(idsOf(p.msgs))
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

// batchReads is what a batch must read under the locks, derived from its
// operations.
type batchReads struct {
	chatIDs []int64     // every chat of the batch, ascending
	sends   []int64     // chats with sends (their watermarks matter)
	actors  [][]any     // (chat, user) pairs whose membership is checked
	targets [][]any     // (chat, seq) pairs changed by edits, deletes, reactions
	seen    map[any]int // dedup of actors and targets
}

func newBatchReads(ops []Op) *batchReads {
	r := &batchReads{seen: map[any]int{}}
	for _, o := range ops {
		if !slices.Contains(r.chatIDs, o.ChatID) {
			r.chatIDs = append(r.chatIDs, o.ChatID)
		}
		if o.Kind == OpSend && !slices.Contains(r.sends, o.ChatID) {
			r.sends = append(r.sends, o.ChatID)
		}
		if k := (member{o.ChatID, o.UserID}); r.seen[k] == 0 {
			r.seen[k] = 1
			r.actors = append(r.actors, []any{o.ChatID, o.UserID})
		}
		if o.Kind != OpSend {
			if k := (msgKey{o.ChatID, o.Seq}); r.seen[k] == 0 {
				r.seen[k] = 1
				r.targets = append(r.targets, []any{o.ChatID, o.Seq})
			}
		}
	}
	slices.Sort(r.chatIDs)
	return r
}

type member struct{ chat, user int64 }

type msgKey struct{ chat, seq int64 }

// chatLock is one locked chat's counters and type.
type chatLock struct {
	ChatID  int64  `bun:"chat_id"`
	LastSeq int64  `bun:"last_seq"`
	LastRev int64  `bun:"last_rev"`
	Type    string `bun:"type"`
}

// lockQuery selects the chats' counters, locking their rows in ascending
// id order on Postgres (NO KEY UPDATE conflicts with itself: other batches,
// MarkRead, removals; not with the KEY SHARE locks foreign keys take).
func lockQuery(db bun.IDB, chatIDs []int64, postgres bool) *bun.SelectQuery {
	q := db.NewSelect().Model((*Chat)(nil)).
		ColumnExpr("c.id AS chat_id, c.last_seq AS last_seq, c.last_rev AS last_rev, c.type AS type").
		Where("c.id IN (?)", bun.List(chatIDs)).OrderExpr("c.id ASC")
	if postgres {
		q = q.For("NO KEY UPDATE")
	}
	return q
}

// messageColumns is the column order of the queries that read messages
// (the Postgres path scans by position).
var messageColumns = []string{"m.id", "m.chat_id", "m.seq", "m.sender_id", "m.text", "m.client_msg_id", "m.created_at",
	"m.rev", "m.created_rev", "m.edited_at", "m.deleted", "m.reply_to_seq"}

// existingQuery selects the stored messages that the batch's sends repeat.
func existingQuery(db bun.IDB, ops []Op, ms *[]Message) *bun.SelectQuery {
	var rows [][]any
	for _, o := range ops {
		if o.Kind == OpSend {
			rows = append(rows, []any{o.ChatID, o.UserID, o.ClientMsgID})
		}
	}
	if len(rows) == 0 {
		rows = [][]any{{0, 0, ""}} // no sends: a query that finds nothing
	}
	where, args := tuplesIn("(m.chat_id, m.sender_id, m.client_msg_id)", rows)
	return db.NewSelect().Model(ms).Column(messageColumns...).Where(where, args...)
}

// targetsQuery selects the messages the batch changes.
func targetsQuery(db bun.IDB, r *batchReads, ms *[]Message) *bun.SelectQuery {
	where, args := tuplesIn("(m.chat_id, m.seq)", r.targets)
	return db.NewSelect().Model(ms).Column(messageColumns...).Where(where, args...)
}

// reactionsQuery selects the reactions of (chat, seq) pairs in first-use
// order.
func reactionsQuery(db bun.IDB, keys [][]any, rows *[]reactionRow) *bun.SelectQuery {
	where, args := tuplesIn("(mr.chat_id, mr.seq)", keys)
	return db.NewSelect().Model(rows).Column("mr.chat_id", "mr.seq", "mr.emoji", "mr.user_id", "mr.added_rev").
		Where(where, args...).OrderExpr("mr.added_rev ASC, mr.user_id ASC")
}

// markRow is one row of marksQuery.
type markRow struct {
	ChatID int64  `bun:"chat_id"`
	UserID int64  `bun:"user_id"`
	Mark   int64  `bun:"mark"`
	Role   string `bun:"role"`
}

// marksQuery selects the actors' memberships (watermark and role) and, for
// chats with sends, the other members' lowest watermark, in one query: the
// aggregate rows carry user_id 0, which no user has.
func marksQuery(db bun.IDB, r *batchReads) *bun.RawQuery {
	in, inArgs := tuplesIn("(chat_id, user_id)", r.actors)
	sql := "SELECT chat_id, user_id, last_read_seq AS mark, role FROM chat_members WHERE " + in
	args := append([]any{}, inArgs...)
	if len(r.sends) > 0 {
		sql += " UNION ALL SELECT chat_id, 0 AS user_id, MIN(last_read_seq) AS mark, '' AS role FROM chat_members" +
			" WHERE chat_id IN (?) AND NOT " + in + " GROUP BY chat_id"
		args = append(append(args, bun.List(r.sends)), inArgs...)
	}
	return db.NewRaw(sql, args...)
}

// state is a message as the batch has left it so far.
type state struct {
	msg       Message
	reactions []reactionRow // in first-use order
	inserted  bool          // created by this batch
	dirty     bool          // a pre-existing message the batch changed
}

// batchPlan is what one batch writes, decided from what the transaction
// read under the chats' locks; both dialects' transactions run it.
type batchPlan struct {
	out     []OpResult
	fresh   []int     // indexes of out that are new messages, in order
	msgs    []Message // the new messages, as fresh orders them (final state)
	chats   map[int64]*chatLock
	touched map[int64]bool // chats whose counters moved
	states  map[msgKey]*state
	before  map[msgKey][]reactionRow // reactions as read, of changed messages
	tops    map[member]int64         // each sender's newest new message per chat
	own     map[member]markRow
	others  map[int64]int64 // other members' lowest watermark, chats with sends
}

// plan decides every operation in order.
func plan(ops []Op, heads []chatLock, existing []Message, marks []markRow, targets []Message, reactions []reactionRow) *batchPlan {
	p := &batchPlan{
		out: make([]OpResult, len(ops)), chats: map[int64]*chatLock{}, touched: map[int64]bool{},
		states: map[msgKey]*state{}, before: map[msgKey][]reactionRow{}, tops: map[member]int64{},
		own: map[member]markRow{}, others: map[int64]int64{},
	}
	for i := range heads {
		p.chats[heads[i].ChatID] = &heads[i]
	}
	for _, m := range marks {
		if m.UserID == 0 {
			p.others[m.ChatID] = m.Mark
		} else {
			p.own[member{m.ChatID, m.UserID}] = m
		}
	}
	for _, m := range targets {
		p.states[msgKey{m.ChatID, m.Seq}] = &state{msg: m}
	}
	for _, r := range reactions {
		st := p.states[msgKey{r.ChatID, r.Seq}]
		if st != nil {
			st.reactions = append(st.reactions, r)
		}
	}
	for k, st := range p.states {
		p.before[k] = slices.Clone(st.reactions)
	}
	stored := make(map[sendKey]Message, len(existing))
	for _, m := range existing {
		stored[sendKey{m.ChatID, m.SenderID, m.ClientMsgID}] = m
	}
	now := now()
	first := map[sendKey]int{}
	for i, o := range ops {
		c := p.chats[o.ChatID]
		if c == nil {
			p.out[i].Err = fmt.Errorf("repo: chat %d: %w", o.ChatID, ErrNotFound)
			continue
		}
		mark, isMember := p.own[member{o.ChatID, o.UserID}]
		if !isMember {
			p.out[i].Err = fmt.Errorf("repo: user %d in chat %d: %w", o.UserID, o.ChatID, ErrNotMember)
			continue
		}
		if o.Kind == OpSend {
			p.send(i, o, c, stored, first, now)
			continue
		}
		st := p.states[msgKey{o.ChatID, o.Seq}]
		if st == nil {
			p.out[i].Err = fmt.Errorf("repo: message %d of chat %d: %w", o.Seq, o.ChatID, ErrNotFound)
			continue
		}
		p.change(i, o, c, st, mark.Role, now)
	}
	return p
}

// send decides one send.
func (p *batchPlan) send(i int, o Op, c *chatLock, stored map[sendKey]Message, first map[sendKey]int, now time.Time) {
	k := sendKey{o.ChatID, o.UserID, o.ClientMsgID}
	if m, ok := stored[k]; ok {
		p.out[i].Message, p.out[i].Duplicate = m, true
		return
	}
	if j, ok := first[k]; ok {
		p.out[i].Duplicate = true
		p.out[i].Message.ID = -int64(j) - 1 // filled in by fill
		return
	}
	if o.ReplyToSeq != nil && (*o.ReplyToSeq < 1 || *o.ReplyToSeq > c.LastSeq) {
		p.out[i].Err = fmt.Errorf("repo: reply to %d in chat %d: %w", *o.ReplyToSeq, o.ChatID, ErrBadReply)
		return
	}
	first[k] = i
	c.LastSeq++
	c.LastRev++
	p.touched[o.ChatID] = true
	m := Message{ChatID: o.ChatID, Seq: c.LastSeq, SenderID: o.UserID, Text: o.Text, ClientMsgID: o.ClientMsgID, CreatedAt: now,
		Rev: c.LastRev, CreatedRev: c.LastRev, ReplyToSeq: o.ReplyToSeq}
	p.out[i].Message, p.out[i].Changed = m, true
	p.fresh = append(p.fresh, i)
	p.states[msgKey{m.ChatID, m.Seq}] = &state{msg: m, inserted: true}
	p.tops[member{m.ChatID, m.SenderID}] = m.Seq
}

// change decides one edit, delete or reaction change of st's message.
func (p *batchPlan) change(i int, o Op, c *chatLock, st *state, role string, now time.Time) {
	m := &st.msg
	res := &p.out[i]
	changed := false
	switch o.Kind {
	case OpEdit:
		switch {
		case m.SenderID != o.UserID:
			res.Err = fmt.Errorf("repo: edit of message %d: %w", o.Seq, ErrForbidden)
		case m.Deleted:
			res.Err = fmt.Errorf("repo: edit of message %d: %w", o.Seq, ErrDeleted)
		case m.Text != o.Text:
			m.Text, m.EditedAt, changed = o.Text, &now, true
		}
	case OpDelete:
		switch {
		case m.SenderID != o.UserID && !(c.Type == ChatGroup && role == RoleOwner):
			res.Err = fmt.Errorf("repo: delete of message %d: %w", o.Seq, ErrForbidden)
		case !m.Deleted:
			m.Text, m.Deleted, st.reactions, changed = "", true, nil, true
		}
	case OpReactAdd:
		has := slices.ContainsFunc(st.reactions, func(r reactionRow) bool { return r.Emoji == o.Emoji && r.UserID == o.UserID })
		switch {
		case m.Deleted:
			res.Err = fmt.Errorf("repo: reaction on message %d: %w", o.Seq, ErrDeleted)
		case has:
		case !slices.ContainsFunc(st.reactions, func(r reactionRow) bool { return r.Emoji == o.Emoji }) && distinctEmoji(st.reactions) >= MaxReactions:
			res.Err = fmt.Errorf("repo: reaction on message %d: %w", o.Seq, ErrTooManyReactions)
		default:
			st.reactions = append(st.reactions, reactionRow{ChatID: o.ChatID, Seq: o.Seq, Emoji: o.Emoji, UserID: o.UserID, AddedRev: c.LastRev + 1})
			changed = true
		}
	case OpReactRemove:
		j := slices.IndexFunc(st.reactions, func(r reactionRow) bool { return r.Emoji == o.Emoji && r.UserID == o.UserID })
		if j >= 0 {
			st.reactions = slices.Delete(slices.Clone(st.reactions), j, j+1)
			changed = true
		}
	}
	if changed {
		c.LastRev++
		m.Rev = c.LastRev
		p.touched[o.ChatID] = true
		if !st.inserted {
			st.dirty = true
		}
	}
	res.Changed = changed
	res.Message = *m
	res.Message.Reactions = groupReactions(st.reactions)
}

func distinctEmoji(rs []reactionRow) int {
	seen := map[string]bool{}
	for _, r := range rs {
		seen[r.Emoji] = true
	}
	return len(seen)
}

// groupReactions turns reaction rows in first-use order into the API's
// grouping: emoji in order of first use, users in the order they reacted.
func groupReactions(rs []reactionRow) []Reaction {
	out := []Reaction{}
	at := map[string]int{}
	for _, r := range rs {
		i, ok := at[r.Emoji]
		if !ok {
			i = len(out)
			at[r.Emoji] = i
			out = append(out, Reaction{Emoji: r.Emoji})
		}
		out[i].UserIDs = append(out[i].UserIDs, r.UserID)
	}
	return out
}

// write is one statement of the plan's writes.
type write struct {
	raw       *bun.RawQuery
	insert    *bun.InsertQuery // the new messages' insert, which returns their ids
	returning bool
}

// writes renders the plan's statements in order: counters, new messages,
// changed messages, reactions, watermarks.
func (p *batchPlan) writes(db bun.IDB) []write {
	var out []write
	if len(p.touched) == 0 {
		return nil
	}
	out = append(out, write{raw: p.countersQuery(db)})
	for _, i := range p.fresh {
		p.msgs = append(p.msgs, p.states[msgKey{p.out[i].Message.ChatID, p.out[i].Message.Seq}].msg)
	}
	if len(p.msgs) > 0 {
		out = append(out, write{insert: db.NewInsert().Model(&p.msgs).
			Column("chat_id", "seq", "sender_id", "text", "client_msg_id", "created_at", "rev", "created_rev", "edited_at", "deleted", "reply_to_seq").
			Returning("id"), returning: true})
	}
	keys := make([]msgKey, 0, len(p.states))
	for k := range p.states {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b msgKey) int { return cmp.Or(cmp.Compare(a.chat, b.chat), cmp.Compare(a.seq, b.seq)) })
	var gone, added [][]any
	for _, k := range keys {
		st := p.states[k]
		if st.dirty {
			m := st.msg
			out = append(out, write{raw: db.NewRaw("UPDATE messages SET text = ?, deleted = ?, edited_at = ?, rev = ? WHERE chat_id = ? AND seq = ?",
				m.Text, m.Deleted, m.EditedAt, m.Rev, m.ChatID, m.Seq)})
		}
		was := map[[2]any]int64{}
		for _, r := range p.before[k] {
			was[[2]any{r.Emoji, r.UserID}] = r.AddedRev
		}
		is := map[[2]any]bool{}
		for _, r := range st.reactions {
			is[[2]any{r.Emoji, r.UserID}] = true
			if rev, ok := was[[2]any{r.Emoji, r.UserID}]; !ok || rev != r.AddedRev {
				added = append(added, []any{r.ChatID, r.Seq, r.Emoji, r.UserID, r.AddedRev})
			}
		}
		for _, r := range p.before[k] {
			if !is[[2]any{r.Emoji, r.UserID}] {
				gone = append(gone, []any{r.ChatID, r.Seq, r.Emoji, r.UserID})
			}
		}
	}
	if len(gone) > 0 {
		in, args := tuplesIn("(chat_id, seq, emoji, user_id)", gone)
		out = append(out, write{raw: db.NewRaw("DELETE FROM message_reactions WHERE "+in, args...)})
	}
	if len(added) > 0 {
		var sb strings.Builder
		var args []any
		sb.WriteString("INSERT INTO message_reactions (chat_id, seq, emoji, user_id, added_rev) VALUES ")
		for i, a := range added {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString("(?, ?, ?, ?, ?)")
			args = append(args, a...)
		}
		out = append(out, write{raw: db.NewRaw(sb.String(), args...)})
	}
	if len(p.tops) > 0 {
		out = append(out, write{raw: p.watermarksQuery(db)})
	}
	return out
}

// countersQuery moves each changed chat's last_seq and last_rev, in one
// statement.
func (p *batchPlan) countersQuery(db bun.IDB) *bun.RawQuery {
	ids := make([]int64, 0, len(p.touched))
	for id := range p.touched {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var seqs, revs strings.Builder
	var seqArgs, revArgs []any
	for _, id := range ids {
		seqs.WriteString(" WHEN ? THEN ?")
		seqArgs = append(seqArgs, id, p.chats[id].LastSeq)
		revs.WriteString(" WHEN ? THEN ?")
		revArgs = append(revArgs, id, p.chats[id].LastRev)
	}
	args := append(append(seqArgs, revArgs...), bun.List(ids))
	return db.NewRaw("UPDATE chats SET last_seq = CASE id"+seqs.String()+" END, last_rev = CASE id"+revs.String()+" END WHERE id IN (?)", args...)
}

// watermarksQuery moves each sender's watermark to its newest message.
func (p *batchPlan) watermarksQuery(db bun.IDB) *bun.RawQuery {
	keys := make([]member, 0, len(p.tops))
	for k := range p.tops {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b member) int { return cmp.Or(cmp.Compare(a.chat, b.chat), cmp.Compare(a.user, b.user)) })
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

// fill records the new messages' ids, in msgs order, and completes the
// results: repeats inside the batch point at their originals, results of
// later changes to new messages carry their ids, and the watermarks.
func (p *batchPlan) fill(ids []int64) {
	id := map[msgKey]int64{}
	for j, i := range p.fresh {
		p.out[i].Message.ID = ids[j]
		p.msgs[j].ID = ids[j]
		id[msgKey{p.msgs[j].ChatID, p.msgs[j].Seq}] = ids[j]
	}
	for i := range p.out {
		r := &p.out[i]
		switch {
		case r.Duplicate && r.Message.ID < 0:
			r.Message = p.out[-r.Message.ID-1].Message
		case r.Message.ID == 0 && r.Err == nil:
			r.Message.ID = id[msgKey{r.Message.ChatID, r.Message.Seq}]
		}
		if r.Err == nil && r.Message.Reactions == nil {
			r.Message.Reactions = []Reaction{}
		}
	}
	p.fillWatermarks()
}

// fillWatermarks fills in the sends' MinBefore and MinAfter: the chat's
// lowest watermark is the lowest of the other members' and of every member
// of the chat who acts in the batch (whether or not it sent a new
// message), at its old or its new mark.
func (p *batchPlan) fillWatermarks() {
	before, after := map[int64]int64{}, map[int64]int64{}
	low := func(m map[int64]int64, chat, v int64) {
		if cur, ok := m[chat]; !ok || v < cur {
			m[chat] = v
		}
	}
	for chat, v := range p.others {
		low(before, chat, v)
		low(after, chat, v)
	}
	for k, v := range p.own {
		if _, sends := p.others[k.chat]; !sends && !p.hasSendsIn(k.chat) {
			continue
		}
		low(before, k.chat, v.Mark)
		low(after, k.chat, max(v.Mark, p.tops[k]))
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

func (p *batchPlan) hasSendsIn(chat int64) bool {
	for _, i := range p.fresh {
		if p.out[i].Message.ChatID == chat {
			return true
		}
	}
	return false
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

// SettledSends is StoredSends for sends whose transaction may still be
// running: one whose answer was lost (ErrInDoubt) can outlive its
// connection for a moment. On Postgres it first takes the chats' rows FOR
// SHARE, which waits for that transaction's NO KEY UPDATE locks, so what it
// then reads is the transaction's final outcome; otherChats are waited for
// too (the batch's edits, deletes and reactions). SQLite has no such
// transactions (nothing is in doubt there).
func (s *Store) SettledSends(ctx context.Context, reqs []SendRequest, otherChats ...int64) (map[int]Message, error) {
	ids := slices.Clone(otherChats)
	for _, r := range reqs {
		ids = append(ids, r.ChatID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if s.dialect == DialectPostgres && len(ids) > 0 {
		err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.NewSelect().Model((*Chat)(nil)).Column("c.id").
				Where("c.id IN (?)", bun.List(ids)).OrderExpr("c.id ASC").For("SHARE").Exec(ctx)
			return err
		})
		if err != nil {
			return nil, wrap("settled sends", err)
		}
	}
	return s.StoredSends(ctx, reqs)
}

// StoredSends returns the messages that repeat reqs and whose senders are
// still members of their chats, keyed by request index, reactions
// included. The send path asks for the sends its fast guard has seen
// before: those answer as duplicates without a write transaction. Repeats
// of a sender that has left are not returned, so the transaction refuses
// them.
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
	if err == nil {
		err = s.withReactions(ctx, ms)
	}
	if err != nil {
		return nil, wrap("stored sends", err)
	}
	byKey := make(map[sendKey]Message, len(ms))
	for _, m := range ms {
		byKey[sendKey{m.ChatID, m.SenderID, m.ClientMsgID}] = m
	}
	out := make(map[int]Message, len(ms))
	for i, r := range reqs {
		if m, ok := byKey[sendKey{r.ChatID, r.SenderID, r.ClientMsgID}]; ok {
			out[i] = m
		}
	}
	return out, nil
}

// sendKey identifies a send: the unique key of messages.
type sendKey struct {
	chat, sender int64
	cmid         string
}

// withReactions loads the reactions of ms (any chats) in one query.
func (s *Store) withReactions(ctx context.Context, ms []Message) error {
	if len(ms) == 0 {
		return nil
	}
	keys := make([][]any, len(ms))
	for i, m := range ms {
		keys[i] = []any{m.ChatID, m.Seq}
	}
	var rows []reactionRow
	if err := reactionsQuery(s.db, keys, &rows).Scan(ctx); err != nil {
		return err
	}
	by := map[msgKey][]reactionRow{}
	for _, r := range rows {
		k := msgKey{r.ChatID, r.Seq}
		by[k] = append(by[k], r)
	}
	for i := range ms {
		ms[i].Reactions = groupReactions(by[msgKey{ms[i].ChatID, ms[i].Seq}])
	}
	return nil
}
