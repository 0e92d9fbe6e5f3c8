package chat

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
)

// Outcome is the result of a timeline operation: the message as it left
// it (for a send that repeated one, the original: Duplicate), whether it
// changed anything (Changed), or an error (CodeForbidden, CodeNotFound,
// CodeMessageDeleted, CodeUnavailable, …).
type Outcome struct {
	Message   Message
	Duplicate bool
	Changed   bool
	Err       error
}

// SendOutcome is the Outcome of a send.
type SendOutcome = Outcome

// SequencerConfig tunes the per-chat sequencer. Zero values take the
// defaults noted.
type SequencerConfig struct {
	// Shards is how many workers commit sends on this replica; a chat
	// always goes to the same one (by id), so one chat's sends are
	// committed and published by one goroutine, in order. Default 1: where
	// commits wait for an fsync, one transaction at a time carrying every
	// queued send stores more messages per second than several small ones
	// (measured in BENCHMARKS.md), and SQLite has one writer anyway.
	Shards int
	// MaxBatch caps the sends of one transaction; default 256.
	MaxBatch int
	// QueueSize is each shard's queue; a full queue makes senders wait
	// (backpressure on their sockets). Default 1024.
	QueueSize int
	// DedupTTL is how long the broker's fast duplicate guard remembers a
	// send; default 1h. The database's unique key remembers for ever.
	DedupTTL time.Duration
}

func (c SequencerConfig) withDefaults() SequencerConfig {
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 256
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.DedupTTL <= 0 {
		c.DedupTTL = time.Hour
	}
	return c
}

// commitTimeout bounds one batch's transaction. A database that does not
// answer (a link that drops packets: each pooled connection then fails
// only after repo's TCP_USER_TIMEOUT, and database/sql may try more than
// one) would otherwise hold the shard's sends for as long as the pool
// keeps finding dead connections; past this they are answered
// unavailable, with nothing stored (the transaction never committed).
// Healthy commits take milliseconds; publishing and answering have the
// batch's own 30 s.
const commitTimeout = 10 * time.Second

// sequencer commits a chat's timeline operations (sends, edits, deletes,
// reactions) and publishes them, each chat's in rev order.
//
// On each replica a chat belongs to one shard (chat id modulo the number
// of shards) and each shard has one worker goroutine, so one chat's sends
// are committed and published by one goroutine at a time. The worker takes
// everything queued on its shard (up to MaxBatch) and, for that batch:
//
//  1. claims the sends' dedup keys in the broker (one round trip); sends
//     seen before whose original is stored answer as duplicates at once;
//  2. stores the rest in one transaction (repo.InsertMessages), which
//     takes the chats' row locks: across replicas, that lock orders
//     batches of one chat;
//  3. publishes each chat's new messages in seq order, one envelope per
//     chat, all in one broker round trip, while the next batch is already
//     being claimed and stored (the shard's publications are chained, so
//     they still leave in commit order);
//  4. answers every send (message.ack follows the publish).
//
// A replica never publishes a chat out of order. Two replicas' batches of
// one chat may reach a third replica in either order; its connections
// hold the later one back until the earlier arrives, or read the gap from
// the database.
type sequencer struct {
	svc *Service
	cfg SequencerConfig
	// apply is the store's Apply (a test stands in for it to lose a
	// commit's answer); inDoubtWait bounds how long resolve asks the
	// database about a batch whose commit answer was lost.
	apply       func(context.Context, []repo.Op, repo.ApplyOptions) ([]repo.OpResult, error)
	inDoubtWait time.Duration
	shards      []chan *pending
	wg          sync.WaitGroup
	mu          sync.RWMutex // guards closed against submits racing close
	closed      bool
}

// pending is one operation waiting for its turn.
type pending struct {
	ctx  context.Context
	op   repo.Op
	done func(Outcome) // called exactly once, on the sequencer's goroutines
}

func newSequencer(svc *Service, cfg SequencerConfig) *sequencer {
	q := &sequencer{svc: svc, cfg: cfg, shards: make([]chan *pending, cfg.Shards), apply: svc.store.Apply, inDoubtWait: inDoubtWait}
	for i := range q.shards {
		q.shards[i] = make(chan *pending, cfg.QueueSize)
		q.wg.Add(1)
		go q.work(q.shards[i])
	}
	return q
}

// submit queues p on its chat's shard, waiting while the shard is full.
func (q *sequencer) submit(p *pending) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return &Error{Code: CodeUnavailable, Message: "server shutting down; nothing was stored, retry"}
	}
	shard := q.shards[uint64(p.op.ChatID)%uint64(len(q.shards))]
	select {
	case shard <- p:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// close stops accepting sends, lets the workers finish what is queued, and
// waits for them.
func (q *sequencer) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		for _, s := range q.shards {
			close(s)
		}
	}
	q.mu.Unlock()
	q.wg.Wait()
}

// work is one shard's worker; it lives until close.
func (q *sequencer) work(shard chan *pending) {
	defer q.wg.Done()
	batch := make([]*pending, 0, q.cfg.MaxBatch)
	// published is closed once the shard's latest batch is published and
	// answered; the next batch's publication waits for it, so the shard's
	// chats are published in seq order while the next transaction already
	// runs.
	published := make(chan struct{})
	close(published)
	for p := range shard {
		batch = append(batch[:0], p)
	fill:
		for len(batch) < q.cfg.MaxBatch {
			select {
			case p, ok := <-shard:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		published = q.commit(batch, published)
	}
	<-published
}

// commit runs one batch through claim and store, then hands it to a
// goroutine that publishes and answers it once the shard's previous batch
// (prev) is published. It returns the channel closed when this batch is.
// A batch's publication thus overlaps the next batch's claim and
// transaction, and a shard's batches still leave in commit order.
func (q *sequencer) commit(batch []*pending, prev chan struct{}) chan struct{} {
	s := q.svc
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done(SendOutcome{Err: err}) // the sender gave up before its turn: nothing stored
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return prev
	}
	// The batch's work outlives any one sender's request: a sender that
	// gives up must not fail the others.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)

	live, assumeNew := q.answerRepeats(ctx, live)
	if len(live) == 0 {
		cancel()
		return prev
	}
	ops := make([]repo.Op, len(live))
	for i, p := range live {
		ops[i] = p.op
	}
	actx, cancelApply := context.WithTimeout(ctx, commitTimeout)
	res, err := q.apply(actx, ops, repo.ApplyOptions{AssumeNew: assumeNew})
	if err != nil && actx.Err() != nil {
		// The driver reports the deadline as whatever it was doing then
		// ("conn closed"): say it was the deadline, which is unavailable.
		err = fmt.Errorf("%w (%w)", err, actx.Err())
	}
	cancelApply()
	if err != nil {
		cancel()
		if errorIs(err, repo.ErrInDoubt) {
			s.log.Warn("send batch outcome unknown; asking the database", "event", "message.in_doubt", "sends", len(live), "err", err)
			q.wg.Add(1)
			go func() {
				defer q.wg.Done()
				q.resolve(live, classify(err))
			}()
			return prev
		}
		err = classify(err)
		s.log.Warn("send batch failed", "event", "message.error", "sends", len(live), "err", err)
		for _, p := range live {
			p.done(SendOutcome{Err: err})
		}
		return prev
	}
	done := make(chan struct{})
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer close(done)
		defer cancel()
		<-prev
		q.publish(ctx, res)
		for i, p := range live {
			p.done(s.outcome(ctx, p.op, res[i]))
		}
	}()
	return done
}

// inDoubtWait is how long resolve keeps asking a database that does not
// answer: past it, the sends of a batch whose commit answer was lost are
// answered unavailable after all (their outcome unknown: a client that
// sends again with the same client_msg_id gets the stored one, if any,
// as a duplicate).
const inDoubtWait = 20 * time.Second

// resolve answers a batch whose transaction may have committed (its
// connection broke after COMMIT was sent: repo.ErrInDoubt). It asks the
// database, as soon as it answers again, which of the batch's sends are
// stored: those are published and acknowledged as stored, for they are;
// the others, and every other operation of the batch (edits, deletes,
// reactions: idempotent, so the client may simply send them again; their
// messages are published as they now are), are answered err
// (unavailable). So unavailable keeps its meaning, nothing
// was stored, even when Postgres goes away under a commit. It runs on its
// own goroutine: the shard goes on with later batches meanwhile, and a
// resolved message published after later ones of its chat is one their
// connections have read from the database already (they fill gaps) or
// take in its place.
func (q *sequencer) resolve(batch []*pending, err error) {
	s := q.svc
	var reqs []repo.SendRequest
	var at []int
	var changed []int64 // chats of the batch's edits, deletes and reactions
	for i, p := range batch {
		if p.op.Kind == repo.OpSend {
			reqs = append(reqs, repo.SendRequest{ChatID: p.op.ChatID, SenderID: p.op.UserID, ClientMsgID: p.op.ClientMsgID})
			at = append(at, i)
		} else {
			changed = append(changed, p.op.ChatID)
		}
	}
	var stored map[int]repo.Message
	settled := false
	deadline := time.Now().Add(q.inDoubtWait)
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var serr error
		stored, serr = s.store.SettledSends(ctx, reqs, changed...)
		cancel()
		if serr == nil {
			settled = true
			break
		}
		if time.Now().Add(wait).After(deadline) {
			s.log.Warn("send batch outcome still unknown; answered unavailable", "event", "message.in_doubt", "sends", len(reqs), "err", serr)
			stored = nil
			break
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res []repo.OpResult
	found := map[int]repo.Message{}
	for j, m := range stored {
		found[at[j]] = m
		res = append(res, repo.OpResult{Message: m, Changed: true})
	}
	// The batch's edits, deletes and reactions may have committed too:
	// publish their messages as they are now, so every connection has the
	// latest state (a connection drops a rev it has delivered already). They
	// are still answered unavailable: the client writes them again, and
	// each is idempotent.
	if settled {
		for _, p := range batch {
			if p.op.Kind == repo.OpSend {
				continue
			}
			if m, err := s.store.MessageBySeq(ctx, p.op.ChatID, p.op.Seq); err == nil && m.Rev != m.CreatedRev {
				res = append(res, repo.OpResult{Message: m, Changed: true})
			}
		}
	}
	slices.SortFunc(res, func(a, b repo.OpResult) int { return cmp.Compare(a.Message.Rev, b.Message.Rev) })
	q.publish(ctx, res)
	s.log.Info("send batch outcome known", "event", "message.in_doubt", "sends", len(reqs), "stored", len(found))
	for i, p := range batch {
		if m, ok := found[i]; ok {
			p.done(s.outcome(ctx, p.op, repo.OpResult{Message: m, Changed: true}))
			continue
		}
		p.done(Outcome{Err: err})
	}
}

// answerRepeats claims the dedup keys of the batch's sends in the broker,
// the fast guard shared by replicas, in one round trip. A send whose key
// was claimed before and whose original is stored (and whose sender is
// still a member) is answered as a duplicate here, without a write. It
// returns the operations left to apply, and whether every key was fresh,
// in which case the transaction need not look for stored repeats.
func (q *sequencer) answerRepeats(ctx context.Context, batch []*pending) ([]*pending, bool) {
	s := q.svc
	var keys []string
	var at []int
	for i, p := range batch {
		if p.op.Kind == repo.OpSend {
			keys = append(keys, dedupKey(p.op))
			at = append(at, i)
		}
	}
	if len(keys) == 0 {
		return batch, true
	}
	fresh, err := s.broker.ClaimMany(ctx, keys, q.cfg.DedupTTL)
	if err != nil {
		s.metrics.BrokerError("claim")
		s.log.Warn("dedup guard failed; relying on the database key", "event", "dedup.error", "sends", len(keys), "err", err)
		return batch, false
	}
	var seen []repo.SendRequest
	var seenAt []int
	for j, ok := range fresh {
		if !ok {
			o := batch[at[j]].op
			seen = append(seen, repo.SendRequest{ChatID: o.ChatID, SenderID: o.UserID, ClientMsgID: o.ClientMsgID})
			seenAt = append(seenAt, at[j])
		}
	}
	if len(seen) == 0 {
		return batch, true
	}
	stored, err := s.store.StoredSends(ctx, seen)
	if err != nil {
		return batch, false // the transaction settles them
	}
	answered := make(map[int]bool, len(stored))
	for j, m := range stored {
		i := seenAt[j]
		answered[i] = true
		p := batch[i]
		out, err := s.withRead(ctx, m.ChatID, []repo.Message{m})
		if err != nil {
			p.done(Outcome{Err: err})
			continue
		}
		s.logDuplicate(ctx, p.op.UserID, m)
		p.done(Outcome{Message: out[0], Duplicate: true})
	}
	rest := batch[:0:0]
	for i, p := range batch {
		if !answered[i] {
			rest = append(rest, p)
		}
	}
	return rest, false
}

// dedupKey is a send's key in the broker's fast guard.
func dedupKey(o repo.Op) string {
	return fmt.Sprintf("dedup:%d:%d:%s", o.ChatID, o.UserID, o.ClientMsgID)
}

// publish announces a committed batch: per chat, one envelope with its
// changes in rev order (new messages and changed ones) and, when the
// batch's sends raised the chat's lowest watermark, the chat.read frame
// after them; every chat's envelope goes out in one broker round trip.
// Receivers drop what they have already delivered, so a retry after a
// failed round trip repeats nothing.
func (q *sequencer) publish(ctx context.Context, res []repo.OpResult) {
	s := q.svc
	byChat := map[int64]*event.Envelope{}
	var order []int64
	sentAt := time.Now().UnixNano()
	for _, r := range res {
		if r.Err != nil || !r.Changed {
			continue
		}
		m := r.Message
		env := byChat[m.ChatID]
		if env == nil {
			env = &event.Envelope{Kind: event.Messages, ChatID: m.ChatID, SentAt: sentAt}
			byChat[m.ChatID] = env
			order = append(order, m.ChatID)
		}
		msg := Message{Message: m, Read: r.MinAfter >= m.Seq}
		env.Items = append(env.Items, event.Item{Rev: m.Rev, CreatedRev: m.CreatedRev, Seq: m.Seq, Sender: m.SenderID, CMID: m.ClientMsgID, Msg: mustJSON(msg.API())})
		if m.Rev != m.CreatedRev {
			s.log.Info("message changed", "event", "message.changed", "chat_id", m.ChatID, "message_id", m.ID, "seq", m.Seq, "rev", m.Rev)
			continue
		}
		if r.MinAfter > r.MinBefore {
			env.Frames = append(env.Frames, mustJSON(gen.ChatReadFrame{Type: gen.ChatRead, ChatID: m.ChatID, Seq: r.MinAfter}))
		}
		s.log.Info("message stored", "event", "message.stored", "chat_id", m.ChatID, "user_id", m.SenderID, "message_id", m.ID, "seq", m.Seq)
		s.metrics.MessageStored()
	}
	if len(order) == 0 {
		return
	}
	pubs := make([]broker.Publication, len(order))
	for i, id := range order {
		pubs[i] = broker.Publication{Channel: event.ChatChannel(id), Payload: byChat[id].Encode()}
	}
	s.publishMany(ctx, pubs)
}

// outcome turns one operation's stored result into its answer.
func (s *Service) outcome(ctx context.Context, op repo.Op, r repo.OpResult) Outcome {
	switch {
	case errorIs(r.Err, repo.ErrNotMember):
		return Outcome{Err: errorf(CodeForbidden, "not a member of chat %d", op.ChatID)}
	case errorIs(r.Err, repo.ErrNotFound) && op.Kind == repo.OpSend:
		return Outcome{Err: errorf(CodeNotFound, "chat %d not found", op.ChatID)}
	case errorIs(r.Err, repo.ErrNotFound):
		return Outcome{Err: errorf(CodeNotFound, "message %d of chat %d not found", op.Seq, op.ChatID)}
	case errorIs(r.Err, repo.ErrForbidden) && op.Kind == repo.OpEdit:
		return Outcome{Err: errorf(CodeForbidden, "only the sender edits a message")}
	case errorIs(r.Err, repo.ErrForbidden):
		return Outcome{Err: errorf(CodeForbidden, "only the sender or the group's owner deletes a message")}
	case errorIs(r.Err, repo.ErrDeleted):
		return Outcome{Err: errorf(CodeMessageDeleted, "message %d is deleted", op.Seq)}
	case errorIs(r.Err, repo.ErrTooManyReactions):
		return Outcome{Err: &Error{Code: CodeTooManyReactions, Field: "emoji", Message: fmt.Sprintf("a message takes at most %d distinct emoji", repo.MaxReactions)}}
	case errorIs(r.Err, repo.ErrBadReply):
		return Outcome{Err: invalid("reply_to_seq", "reply_to_seq must name a message of chat %d", op.ChatID)}
	case r.Err != nil:
		return Outcome{Err: classify(r.Err)}
	case r.Duplicate:
		out, err := s.withRead(ctx, r.Message.ChatID, []repo.Message{r.Message})
		if err != nil {
			return Outcome{Err: err}
		}
		s.logDuplicate(ctx, op.UserID, r.Message)
		return Outcome{Message: out[0], Duplicate: true}
	case op.Kind == repo.OpSend:
		// The send raised the sender's own watermark; the message is read
		// when every other member's has reached it too.
		return Outcome{Message: Message{Message: r.Message, Read: r.MinAfter >= r.Message.Seq}, Changed: true}
	}
	out, err := s.withRead(ctx, r.Message.ChatID, []repo.Message{r.Message})
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Message: out[0], Changed: r.Changed}
}

func (s *Service) logDuplicate(ctx context.Context, userID int64, orig repo.Message) {
	s.log.InfoContext(ctx, "duplicate dropped", "event", "message.duplicate", "chat_id", orig.ChatID, "user_id", userID, "message_id", orig.ID)
	s.metrics.Duplicate()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("chat: encode %T: %v", v, err)) // only the generated wire types get here
	}
	return b
}
