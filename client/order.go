package client

import "github.com/windi-chat/windi/client/rest"

// Position is where the application stands in one chat: the last seq
// handed to OnMessage and the chat revision up to which every change has
// been handed to it (OnMessage or OnUpdate). Rev 0 means the revision is
// not known: the chat then resumes by seq (new messages only). A Position
// from Conn.Resume passed back in Config.Resume makes a later Conn carry
// on with no gap and no repeat, edits and reactions included.
type Position struct {
	Seq int64
	Rev int64
}

// chatStream is one chat's ordering state machine: what the application
// has been handed, and the message frames that wait. It does no I/O and
// reads no clock, so it is tested on its own (order_test.go).
//
// The server sends each connection a chat's changes in rev order, exactly
// once, and fills its own gaps (SPEC §11.1), so revisions need no hold-back
// here: a frame at or below the position is a repeat (a replay after a
// reconnect or a sync) and is dropped. Seq order needs one: when a replay
// collapses a message created while the application was away and changed
// afterwards into its latest state, that message comes at its latest rev,
// after messages created later. A message above the next seq therefore
// waits, and everything after it with it, until the missing one arrives;
// the missing one is then handed first, so OnMessage sees 1, 2, 3… once.
// Whether a frame creates a message for the application is decided by its
// seq, not by the frame's type: a message above the last seq handed is new
// to the application even if the server calls it message.updated, and one
// at or below it is an update even as message.new.
type chatStream struct {
	seqKnown bool  // seq is a real position (else the first new message sets it)
	seq      int64 // the last seq handed to OnMessage
	// rev is the resume position: every frame of the chat up to it, in
	// the order the server sent them, has been handed to the application
	// (0: none yet, resume by seq).
	rev int64
	// queue holds the frames after rev, in the order they came, while a
	// seq gap holds them back. An entry handed early (the missing seq,
	// found further back) stays until the entries before it have gone.
	queue []queued
	// early holds revs above rev handed early whose queue was dropped at
	// a reconnect: the replay brings them again and they are dropped.
	early map[int64]bool
}

type queued struct {
	m      rest.Message
	isNew  bool // the server sent it as message.new (or a send's ack)
	handed bool // handed early: only its place in the order is left
}

// delivery is one message handed to the application: created (OnMessage)
// or changed (OnUpdate).
type delivery struct {
	m       rest.Message
	created bool
}

func newChatStream(p Position, seqKnown bool) *chatStream {
	return &chatStream{seqKnown: seqKnown, seq: p.Seq, rev: p.Rev}
}

// hasPosition reports whether the chat can be resumed.
func (s *chatStream) hasPosition() bool { return s.seqKnown || s.rev > 0 }

// position returns where the application stands.
func (s *chatStream) position() Position { return Position{Seq: s.seq, Rev: s.rev} }

// waiting reports whether frames wait for a missing seq.
func (s *chatStream) waiting() bool { return len(s.queue) > 0 }

// offer takes one message frame (isNew for message.new and a send's ack,
// false for message.updated) and appends what the application gets now,
// in order.
func (s *chatStream) offer(m rest.Message, isNew bool, out []delivery) []delivery {
	if m.Rev <= s.rev || s.early[m.Rev] {
		return out // handed already: a replay or a repeat
	}
	if n := len(s.queue); n > 0 && m.Rev <= s.queue[n-1].m.Rev {
		// Frames of one socket come in rev order; a lower one is a replay
		// (after a sync) of a state that waits already, or of one a later
		// change superseded.
		return out
	}
	s.queue = append(s.queue, queued{m: m, isNew: isNew})
	return s.drain(out)
}

// creates reports whether e is a message the application has not been
// handed yet.
func (s *chatStream) creates(e *queued) bool {
	if s.seqKnown {
		return e.m.Seq > s.seq
	}
	return e.isNew
}

func (s *chatStream) drain(out []delivery) []delivery {
	for {
		for len(s.queue) > 0 {
			e := &s.queue[0]
			if !e.handed {
				if s.seqKnown && e.m.Seq > s.seq+1 {
					break // the next seq has not come yet
				}
				out = s.hand(e, out)
			}
			s.rev = e.m.Rev
			s.queue = s.queue[1:]
		}
		if len(s.queue) == 0 {
			s.queue = nil
			break
		}
		// The head waits for seq+1: hand it first if it is further back.
		j := -1
		for i := range s.queue {
			if e := &s.queue[i]; !e.handed && e.m.Seq == s.seq+1 && s.creates(e) {
				j = i
				break
			}
		}
		if j < 0 {
			break
		}
		out = s.hand(&s.queue[j], out)
		s.queue[j].handed = true
	}
	for r := range s.early {
		if r <= s.rev {
			delete(s.early, r)
		}
	}
	return out
}

func (s *chatStream) hand(e *queued, out []delivery) []delivery {
	if !s.creates(e) {
		return append(out, delivery{m: e.m})
	}
	s.seqKnown, s.seq = true, e.m.Seq
	return append(out, delivery{m: e.m, created: true})
}

// reconnected forgets what waits: a new socket resumes from rev and
// replays it. Entries already handed early are remembered, so their
// replay is dropped.
func (s *chatStream) reconnected() {
	for _, e := range s.queue {
		if e.handed {
			if s.early == nil {
				s.early = map[int64]bool{}
			}
			s.early[e.m.Rev] = true
		}
	}
	s.queue = nil
}
