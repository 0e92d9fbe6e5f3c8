package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"

	"github.com/windi-chat/windi/client/rest"
)

// The mixed load (-mix): a share of each sender's operations edit or
// toggle a reaction on one of its own acknowledged messages instead of
// sending a new one. Every operation changes something (edits carry a new
// text, reactions alternate add and remove), so each is answered by one
// message.updated on the acting connection. At the end every connection's
// last view of each touched message, and the server's history, must equal
// the state the senders' operations imply.

// emojis are the reactions the mixed load toggles; a message's reactions
// are a bitmask over them.
var emojis = [...]string{"👍", "❤️", "😂", "🎉"}

func emojiIndex(e string) int { return slices.Index(emojis[:], e) }

// msgState is what a message looks like: its text (hashed) and which
// emojis its sender has on it. bad marks anything else (a reaction of
// another user, an unknown emoji, a count other than 1, a tombstone).
type msgState struct {
	text  uint64
	react uint8
	bad   bool
}

func hashText(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

// stateOf reads the state of a message as the server shows it.
func stateOf(text []byte, deleted bool, reactions []reactionBody, sender int64) msgState {
	s := msgState{text: hashText(text), bad: deleted}
	for _, r := range reactions {
		i := emojiIndex(r.Emoji)
		if i < 0 || r.Count != 1 || len(r.UserIDs) != 1 || r.UserIDs[0] != sender {
			s.bad = true
			continue
		}
		s.react |= 1 << i
	}
	return s
}

// reactionBody is one entry of a message's reactions.
type reactionBody struct {
	Emoji   string  `json:"emoji"`
	Count   int     `json:"count"`
	UserIDs []int64 `json:"user_ids"`
}

// ownMsgs is a sender's model of its own messages: the reader adds each
// acked one, the sender picks among the most recent to change and records
// the state each change leads to.
type ownMsgs struct {
	mu     sync.Mutex
	recent []int64 // seqs acked, the last ownRecent kept
	state  map[int64]*ownMsg
}

// ownRecent is how many of its latest messages a sender changes.
const ownRecent = 64

type ownMsg struct {
	first msgState // as sent
	want  msgState // after the changes sent so far
	ops   int      // changes sent
}

// expect is a touched message's state as sent and as it should end.
type expect struct{ first, want msgState }

// acked records a message of the sender's as stored, with its text.
func (o *ownMsgs) acked(seq int64, text uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == nil {
		o.state = map[int64]*ownMsg{}
	}
	if o.state[seq] != nil {
		return
	}
	o.state[seq] = &ownMsg{first: msgState{text: text}, want: msgState{text: text}}
	o.recent = append(o.recent, seq)
	if len(o.recent) > 2*ownRecent {
		o.recent = append(o.recent[:0], o.recent[len(o.recent)-ownRecent:]...)
	}
}

// pick chooses a recent message to change, or reports none yet.
func (o *ownMsgs) pick(r *rand.Rand) (int64, *ownMsg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(len(o.recent), ownRecent)
	if n == 0 {
		return 0, nil, false
	}
	seq := o.recent[len(o.recent)-1-r.IntN(n)]
	return seq, o.state[seq], true
}

// edit records an edit of m to text.
func (o *ownMsgs) edit(m *ownMsg, text []byte) {
	o.mu.Lock()
	m.want.text = hashText(text)
	m.ops++
	o.mu.Unlock()
}

// toggle flips reaction i on m and reports whether it is now on.
func (o *ownMsgs) toggle(m *ownMsg, i int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	m.want.react ^= 1 << i
	m.ops++
	return m.want.react&(1<<i) != 0
}

// touched returns every message the sender changed, by seq; call after
// the sender and the reader are done.
func (o *ownMsgs) touched() map[int64]expect {
	out := map[int64]expect{}
	for seq, m := range o.state {
		if m.ops > 0 {
			out[seq] = expect{m.first, m.want}
		}
	}
	return out
}

// mixOp builds the next mixed operation's frame into buf: an edit (its
// text stamped like a send's) or a reaction toggle of one of c's recent
// messages. It reports false when c has no acked message yet (the caller
// sends instead).
func (c *lconn) mixOp(buf []byte, r *rand.Rand, sched, sent int64, pad string, size int) ([]byte, bool) {
	seq, m, ok := c.own.pick(r)
	if !ok {
		return buf, false
	}
	buf = append(buf[:0], `{"type":"`...)
	if r.IntN(2) == 0 {
		buf = append(buf, `message.edit","chat_id":`...)
		buf = strconv.AppendInt(buf, c.sendChat, 10)
		buf = append(buf, `,"seq":`...)
		buf = strconv.AppendInt(buf, seq, 10)
		buf = append(buf, `,"text":"`...)
		mark := len(buf)
		buf = strconv.AppendInt(buf, sched, 10)
		buf = append(buf, ' ')
		buf = strconv.AppendInt(buf, sent, 10)
		buf = append(buf, " edit "...)
		buf = append(buf, pad[:max(size-(len(buf)-mark), 0)]...)
		c.own.edit(m, buf[mark:])
		return append(buf, `"}`...), true
	}
	i := r.IntN(len(emojis))
	if c.own.toggle(m, i) {
		buf = append(buf, `reaction.add","chat_id":`...)
	} else {
		buf = append(buf, `reaction.remove","chat_id":`...)
	}
	buf = strconv.AppendInt(buf, c.sendChat, 10)
	buf = append(buf, `,"seq":`...)
	buf = strconv.AppendInt(buf, seq, 10)
	buf = append(buf, `,"emoji":"`...)
	buf = append(buf, emojis[i]...)
	return append(buf, `"}`...), true
}

// expectedStates gathers every touched message: chat -> seq -> expect.
func expectedStates(senders []*lconn) map[int64]map[int64]expect {
	want := map[int64]map[int64]expect{}
	for _, c := range senders {
		if c.own == nil || c.sendChat == 0 {
			continue
		}
		for seq, e := range c.own.touched() {
			if want[c.sendChat] == nil {
				want[c.sendChat] = map[int64]expect{}
			}
			want[c.sendChat][seq] = e
		}
	}
	return want
}

// StateCheck is the mixed load's final-state verdict.
type StateCheck struct {
	// Touched is messages changed at least once; Checked is (connection,
	// touched message) pairs compared.
	Touched int64 `json:"touched"`
	Checked int64 `json:"checked"`
	// Differ counts pairs whose connection's last view is not the
	// expected state; ServerDiffer counts touched messages whose state in
	// GET /history is not.
	Differ       int64 `json:"differ"`
	ServerDiffer int64 `json:"server_differ"`
	// ServerChecked is touched messages read back from the server.
	ServerChecked int64 `json:"server_checked"`
}

// checkViews compares each connection's last view of every touched message
// of the chats it follows with the expected state: its last
// message.updated, or the message as sent when none arrived.
func checkViews(conns []*lconn, want map[int64]map[int64]expect, sc *StateCheck) {
	for _, c := range conns {
		if c.ws == nil {
			continue
		}
		for _, chatID := range c.follows {
			for seq, e := range want[chatID] {
				got, ok := c.views[viewKey{chatID, seq}]
				if !ok {
					got = e.first
				}
				sc.Checked++
				if got != e.want {
					sc.Differ++
				}
			}
		}
	}
}

// checkServer reads every chat with touched messages back through GET
// /history (as a member) and compares the touched messages' states.
func checkServer(ctx context.Context, p *plan, want map[int64]map[int64]expect, sc *StateCheck) error {
	for chatID, msgs := range want {
		member := p.users[p.members[chatID][0]]
		var after int64
		limit := 100
		for {
			page, err := member.api.History(ctx, chatID, &rest.GetHistoryParams{AfterSeq: &after, Limit: &limit})
			if err != nil {
				return fmt.Errorf("history of chat %d: %w", chatID, err)
			}
			for _, m := range page {
				e, ok := msgs[m.Seq]
				if !ok {
					continue
				}
				rs := make([]reactionBody, len(m.Reactions))
				for i, x := range m.Reactions {
					rs[i] = reactionBody{Emoji: x.Emoji, Count: x.Count, UserIDs: x.UserIds}
				}
				sc.ServerChecked++
				if stateOf([]byte(m.Text), m.Deleted, rs, m.SenderID) != e.want {
					sc.ServerDiffer++
				}
			}
			if len(page) < limit {
				break
			}
			after = page[len(page)-1].Seq
		}
	}
	return nil
}
