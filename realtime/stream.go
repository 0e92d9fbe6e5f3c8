package realtime

import (
	"encoding/json"
	"time"

	"github.com/windi-chat/windi/event"
)

// item is one change of a chat's timeline (a new message, or a changed
// one) on its way to sockets. Items that came through the broker are
// shared by every socket of the chat on this replica and never modified.
type item struct {
	chatID     int64
	rev        int64 // its position in the chat's stream
	createdRev int64 // the rev that created the message
	seq        int64
	sender     int64
	cmid       string
	msg        json.RawMessage // the encoded gen.Message
	frame      []byte          // message.new for a new message, else message.updated, encoded once
	sentAt     int64           // Unix nanoseconds when committed; 0 when unknown
}

func newItem(chatID, rev, createdRev, seq, sender int64, cmid string, msg json.RawMessage, sentAt int64) *item {
	it := &item{chatID: chatID, rev: rev, createdRev: createdRev, seq: seq, sender: sender, cmid: cmid, msg: msg, sentAt: sentAt}
	if rev == createdRev {
		it.frame = event.NewFrame(msg)
	} else {
		it.frame = event.UpdatedFrame(msg)
	}
	return it
}

// entry is an item waiting in a stream, and how to answer it.
type entry struct {
	it  *item
	ack bool // the socket sent it: answer with message.ack
	// isNew: deliver as message.new (the socket has not seen the message
	// created), else message.updated; decided when it is delivered.
	isNew bool
}

// stream is one chat's delivery position on one socket: the ordering state
// machine, keyed on the chat's revisions (SPEC §11.1). It delivers each rev
// once, in order, without gaps: an item above the next expected rev waits
// until the gap closes, either because the missing items arrive (from the
// broker, a fill or the socket's own ack) or because a fill from the
// database covers them. A fill that has read every change up to the
// chat's head raises the floor: revs at or below it that never arrive
// were superseded by later changes of the same message, and are skipped.
//
// A stream does no I/O and reads no clock: callers pass the time, so its
// hold-back and retry schedule is tested with a fake clock. It is guarded
// by its socket's mutex.
type stream struct {
	last  int64 // highest rev delivered (or skipped) here
	floor int64 // revs up to it may be skipped when missing
	// known: every message created at or before it is known to the
	// socket (delivered, or there before it connected). It follows last
	// while nothing is skipped; after a skip, the messages created above
	// it that were delivered are in ahead, until a fill that read every
	// change up to the head brings known up to last again.
	known   int64
	ahead   map[int64]struct{} // creation revs above known of messages delivered
	pending map[int64]entry    // above last, waiting for the gap to close
	// fillAt is when a fill from the database is due: the gap's hold-back
	// after it opened, then a growing backoff while fills do not close it.
	// Zero when no gap is open.
	fillAt time.Time
	fails  int // fills since the gap opened that did not close it
	// cut: a fill stopped at a message the socket is sending (it waits
	// for its ack, see held) with more to read. Nothing after it is
	// missing yet, so no gap opens when the ack lets the stream past it:
	// readOn then asks for a fill at once, to read what the cut one did
	// not.
	cut, readOn bool
	// subscribed reports that the socket holds a reference on the chat's
	// broker subscription (released when the stream goes).
	subscribed bool
	// behind is the chat's last rev as the previous periodic check saw it;
	// a stream still below it at the next check missed a publication.
	behind int64
	// minSeq, set for a resume by seq, keeps the next fill to messages with
	// a greater seq (new messages only).
	minSeq int64
}

// newStream returns a stream positioned after rev: everything up to it is
// known to the socket (delivered before, or there before it connected).
func newStream(rev int64) *stream { return &stream{last: rev, floor: rev, known: rev} }

// Hold-back schedule: the first fill waits the hold-back; each fill that
// does not close the gap doubles the wait, up to maxFillBackoff.
const maxFillBackoff = 10 * time.Second

// held reports whether the stream must not deliver e yet: a message the
// socket itself sent, still waiting for its ack.
type held func(e entry) bool

// offer takes e and appends to out whatever is now deliverable, in order.
func (s *stream) offer(e entry, now time.Time, holdback time.Duration, hold held, out []entry) []entry {
	if e.it.rev <= s.last {
		return out // delivered already: a repeat from another path
	}
	if s.pending == nil {
		s.pending = map[int64]entry{}
	}
	if old, ok := s.pending[e.it.rev]; !ok || e.ack && !old.ack {
		s.pending[e.it.rev] = e
	}
	return s.drain(now, holdback, hold, out)
}

// raise sets the floor to rev: a fill has read every change up to it.
// complete says the fill read up to the chat's head: once delivered up to
// it, every message created since the socket's position has been
// delivered (the fill read each one's current state), so known catches up.
func (s *stream) raise(rev int64, complete bool, now time.Time, holdback time.Duration, hold held, out []entry) []entry {
	s.floor = max(s.floor, rev)
	out = s.drain(now, holdback, hold, out)
	if complete && s.last >= s.floor {
		s.known, s.ahead = s.last, nil
	}
	return out
}

// drain appends consecutive pending entries to out, skipping missing revs
// at or below the floor. It stops at a gap, and at a message the socket is
// sending until its outcome is known. Each delivered entry is marked new
// when the socket has not seen its message yet: created after known, and
// not delivered since. (A rev above known, not a seq, can be a message's
// first appearance: a resume replays each changed message once, at its
// latest rev, so a message created while away and edited since comes
// after newer messages, and is still new.)
func (s *stream) drain(now time.Time, holdback time.Duration, hold held, out []entry) []entry {
	for {
		e, ok := s.pending[s.last+1]
		if !ok {
			if s.last < s.floor {
				s.last++ // missing at or below the floor: superseded by a later change
				continue
			}
			break
		}
		if !e.ack && hold != nil && hold(e) {
			break // ours, in flight: the ack decides how to answer
		}
		delete(s.pending, e.it.rev)
		_, seen := s.ahead[e.it.createdRev]
		e.isNew = e.it.createdRev > s.known && !seen
		out = append(out, e)
		switch {
		case s.known == s.last:
			s.known = e.it.rev // in step: nothing skipped
		case e.isNew:
			if s.ahead == nil {
				s.ahead = map[int64]struct{}{}
			}
			s.ahead[e.it.createdRev] = struct{}{}
		}
		s.last = e.it.rev
	}
	if s.cut {
		if _, next := s.pending[s.last+1]; !next {
			s.cut, s.readOn = false, true // past the held message: read on
		}
	}
	s.schedule(now, holdback)
	return out
}

// cutAtHold records that a fill stopped at a held message with more to
// read (see cut).
func (s *stream) cutAtHold() { s.cut = true }

// readingOn records that a fill reads on from last: a read-on asked for
// is under way.
func (s *stream) readingOn() { s.readOn = false }

// gap reports whether the stream waits for a rev it has not seen: pending
// items exist and the next expected one is missing (and not skippable).
// Waiting for the socket's own ack is not a gap: the ack always comes.
func (s *stream) gap() bool {
	if len(s.pending) == 0 {
		return false
	}
	_, next := s.pending[s.last+1]
	return !next && s.last >= s.floor
}

// schedule opens or closes the fill schedule after the pending set changed.
func (s *stream) schedule(now time.Time, holdback time.Duration) {
	switch {
	case s.readOn:
		if s.fillAt.IsZero() {
			s.fillAt = now // (one already due, or queued, will do)
		}
	case !s.gap():
		s.fillAt, s.fails = time.Time{}, 0
	case s.fillAt.IsZero():
		s.fillAt = now.Add(holdback)
	}
}

// fillDue reports whether a fill is due at now.
func (s *stream) fillDue(now time.Time) bool {
	return !s.fillAt.IsZero() && !now.Before(s.fillAt)
}

// filled records that a fill ran at now (ok: it read the database, even if
// that brought nothing new). While the gap stays open the next fill waits
// twice as long as the one before, so a gap that the database cannot close
// yet (or a database that is down) is never polled in a loop.
func (s *stream) filled(now time.Time, holdback time.Duration) {
	if !s.gap() && !s.readOn {
		s.fillAt, s.fails = time.Time{}, 0
		return
	}
	s.fails++
	wait := holdback << min(s.fails, 16)
	s.fillAt = now.Add(min(wait, maxFillBackoff))
}

// reset moves the stream to rev since (a sync), forgetting what waits.
func (s *stream) reset(since int64) {
	*s = stream{last: since, floor: since, known: since, subscribed: s.subscribed, behind: s.behind}
}
