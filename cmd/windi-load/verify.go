package main

import "math/bits"

// bitset is a growable set of non-negative integers (message seqs).
type bitset []uint64

func (b bitset) has(i int64) bool {
	w := i >> 6
	return w < int64(len(b)) && b[w]&(1<<(uint64(i)&63)) != 0
}

func (b *bitset) set(i int64) {
	w := int(i >> 6)
	if w >= len(*b) {
		n := max(2*len(*b), w+1, 4)
		nb := make(bitset, n)
		copy(nb, *b)
		*b = nb
	}
	(*b)[w] |= 1 << (uint64(i) & 63)
}

// count returns how many members b has.
func (b bitset) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// andNotCount returns |b \ o|.
func (b bitset) andNotCount(o bitset) int64 {
	var n int
	for i, w := range b {
		if i < len(o) {
			w &^= o[i]
		}
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// or adds every member of o to b.
func (b *bitset) or(o bitset) {
	if len(o) > len(*b) {
		nb := make(bitset, len(o))
		copy(nb, *b)
		*b = nb
	}
	for i, w := range o {
		(*b)[i] |= w
	}
}

// chatTrack is what one connection received of one chat: every seq
// delivered to it (message.new, or message.ack for its own sends), in
// arrival order.
type chatTrack struct {
	start      int64 // the chat's last seq when the connection opened
	max        int64 // highest seq received so far (start before any)
	seen       bitset
	frames     int64 // frames observed
	repeated   int64 // a seq received again
	outOfOrder int64 // a seq received after a higher one
	gaps       int64 // jumps over missing seqs (transient; filled later or lost)
	rev        int64 // highest rev received (message.new, ack or message.updated)
	revBack    int64 // a rev at or below the highest before it
	revGaps    int64 // jumps over revs (a fill collapsed changes; not a failure)
}

// arrival classifies one received seq.
type arrival uint8

const (
	inOrder    arrival = iota
	repeat             // received before
	outOfOrder         // after a higher seq
	gap                // jumped over missing seqs
	unfollowed         // a chat the connection should not get
)

var arrivalNames = [...]string{"in order", "repeat", "out of order", "gap", "unfollowed chat"}

func (a arrival) String() string { return arrivalNames[a] }

// observe records the arrival of seq.
func (t *chatTrack) observe(seq int64) arrival {
	t.frames++
	if seq <= 0 {
		t.outOfOrder++
		return outOfOrder
	}
	if t.seen.has(seq) {
		t.repeated++
		return repeat
	}
	t.seen.set(seq)
	switch {
	case seq <= t.max:
		t.outOfOrder++
		return outOfOrder
	case seq > t.max+1:
		t.gaps++
		t.max = seq
		return gap
	}
	t.max = seq
	return inOrder
}

// tracker holds one connection's chatTracks.
type tracker struct {
	chats map[int64]*chatTrack
}

func newTracker() *tracker { return &tracker{chats: map[int64]*chatTrack{}} }

// follow declares that the connection should receive chatID's messages
// after seq start.
func (tr *tracker) follow(chatID, start int64) {
	if tr.chats[chatID] == nil {
		tr.chats[chatID] = &chatTrack{start: start, max: start}
	}
}

// observe records a message of chatID arriving.
func (tr *tracker) observe(chatID, seq int64) arrival {
	t := tr.chats[chatID]
	if t == nil {
		return unfollowed
	}
	return t.observe(seq)
}

// last is the highest seq of chatID received so far.
func (tr *tracker) last(chatID int64) int64 {
	if t := tr.chats[chatID]; t != nil {
		return t.max
	}
	return 0
}

// Verdict sums what the verifier found.
type Verdict struct {
	// Expected is acked messages times the connections that should get
	// each (the sender's own connection gets its ack, counted here too).
	Expected int64 `json:"expected"`
	// Received is distinct acked messages that arrived where expected.
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Repeated   int64 `json:"repeated"`
	OutOfOrder int64 `json:"out_of_order"`
	Gaps       int64 `json:"gaps"`
	// RevOutOfOrder counts frames whose rev was not above the last one of
	// their chat on that connection; RevGaps counts skipped revs (a resume
	// collapses a message's changes into its latest).
	RevOutOfOrder int64 `json:"rev_out_of_order"`
	RevGaps       int64 `json:"rev_gaps"`
	// UnackedSeen counts deliveries of messages no sender saw acked (its
	// ack lost in a close, or an error after the commit): not a failure.
	UnackedSeen int64 `json:"unacked_seen"`
}

func (v *Verdict) add(o Verdict) {
	v.Expected += o.Expected
	v.Received += o.Received
	v.Lost += o.Lost
	v.Repeated += o.Repeated
	v.OutOfOrder += o.OutOfOrder
	v.Gaps += o.Gaps
	v.RevOutOfOrder += o.RevOutOfOrder
	v.RevGaps += o.RevGaps
	v.UnackedSeen += o.UnackedSeen
}

// verify compares what the connection received with the acked seqs of
// each chat (acked[chat]): every acked seq above the connection's start
// must have arrived exactly once, in order.
func (tr *tracker) verify(acked map[int64]bitset) Verdict {
	var v Verdict
	for chatID, t := range tr.chats {
		a := acked[chatID]
		// Only seqs after the connection's start are owed to it.
		var owed bitset
		if t.start > 0 {
			owed = make(bitset, len(a))
			copy(owed, a)
			for s := int64(1); s <= t.start; s++ {
				if owed.has(s) {
					owed[s>>6] &^= 1 << (uint64(s) & 63)
				}
			}
		} else {
			owed = a
		}
		exp := owed.count()
		lost := owed.andNotCount(t.seen)
		v.Expected += exp
		v.Received += exp - lost
		v.Lost += lost
		v.UnackedSeen += t.seen.andNotCount(owed)
		v.Repeated += t.repeated
		v.OutOfOrder += t.outOfOrder
		v.Gaps += t.gaps
		v.RevOutOfOrder += t.revBack
		v.RevGaps += t.revGaps
	}
	return v
}
