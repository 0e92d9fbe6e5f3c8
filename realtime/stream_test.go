package realtime

import (
	"fmt"
	"testing"
	"time"
)

const hb = 100 * time.Millisecond

// it is a new message whose seq and rev are both n.
func it(n int64) *item { return &item{rev: n, createdRev: n, seq: n, sender: 1, cmid: fmt.Sprint(n)} }

// change is a change at rev to a message created at createdRev.
func change(rev, createdRev int64) *item {
	return &item{rev: rev, createdRev: createdRev, seq: createdRev, sender: 1, cmid: fmt.Sprint(createdRev)}
}

func seqsOf(es []entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.it.seq
	}
	return out
}

func wantDelivered(t *testing.T, got []entry, want ...int64) {
	t.Helper()
	g := seqsOf(got)
	if fmt.Sprint(g) != fmt.Sprint(want) && !(len(g) == 0 && len(want) == 0) {
		t.Fatalf("delivered %v, want %v", g, want)
	}
}

func TestStreamDeliversInOrderOnce(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(10)
	wantDelivered(t, s.offer(entry{it: it(11)}, t0, hb, nil, nil), 11)
	wantDelivered(t, s.offer(entry{it: it(11)}, t0, hb, nil, nil)) // a repeat
	wantDelivered(t, s.offer(entry{it: it(9)}, t0, hb, nil, nil))  // before the start
	wantDelivered(t, s.offer(entry{it: it(13)}, t0, hb, nil, nil)) // held: 12 is missing
	if !s.gap() || s.fillAt != t0.Add(hb) {
		t.Fatalf("gap %v fillAt %v, want a gap with a fill due after the hold-back", s.gap(), s.fillAt)
	}
	wantDelivered(t, s.offer(entry{it: it(12)}, t0.Add(time.Millisecond), hb, nil, nil), 12, 13)
	if s.gap() || !s.fillAt.IsZero() || s.last != 13 {
		t.Fatalf("after the gap closed: gap %v fillAt %v last %d", s.gap(), s.fillAt, s.last)
	}
}

func TestStreamFillScheduleBacksOffWithoutSpinning(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(0)
	s.offer(entry{it: it(2)}, t0, hb, nil, nil)
	if s.fillDue(t0.Add(hb - time.Nanosecond)) {
		t.Fatal("fill due before the hold-back passed")
	}
	now := t0.Add(hb)
	if !s.fillDue(now) {
		t.Fatal("fill not due after the hold-back")
	}
	// Fills that do not close the gap (the database is down, or does not
	// have the message yet) push the next one further out each time: the
	// fill is never due again at the same instant.
	var waits []time.Duration
	for range 8 {
		s.filled(now, hb)
		if s.fillDue(now) {
			t.Fatalf("fill due again at once after a fill that did not close the gap (fails=%d)", s.fails)
		}
		waits = append(waits, s.fillAt.Sub(now))
		now = s.fillAt
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] < waits[i-1] {
			t.Fatalf("backoff shrank: %v", waits)
		}
	}
	if waits[len(waits)-1] != maxFillBackoff {
		t.Fatalf("backoff %v, want capped at %v", waits, maxFillBackoff)
	}
	// The missing message arrives: the schedule closes.
	wantDelivered(t, s.offer(entry{it: it(1)}, now, hb, nil, nil), 1, 2)
	if !s.fillAt.IsZero() || s.fails != 0 {
		t.Fatalf("schedule still open: fillAt %v fails %d", s.fillAt, s.fails)
	}
}

func TestStreamWaitsForOwnAckWithoutAFill(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(4)
	inFlight := map[int64]bool{5: true}
	hold := func(e entry) bool { return inFlight[e.it.seq] }
	// The socket's own message 5 arrives through the broker before its ack,
	// and others' 6 after it: both wait, and since the next seq is there,
	// no fill is scheduled however long the ack takes.
	wantDelivered(t, s.offer(entry{it: it(5)}, t0, hb, hold, nil))
	wantDelivered(t, s.offer(entry{it: it(6)}, t0, hb, hold, nil))
	if s.gap() || !s.fillAt.IsZero() {
		t.Fatalf("waiting for our own ack counted as a gap: fillAt %v", s.fillAt)
	}
	delete(inFlight, 5)
	got := s.offer(entry{it: it(5), ack: true}, t0.Add(time.Second), hb, hold, nil)
	wantDelivered(t, got, 5, 6)
	if !got[0].ack || got[1].ack {
		t.Fatalf("want message.ack for 5 and message.new for 6, got ack=%v,%v", got[0].ack, got[1].ack)
	}
}

// TestStreamReadsOnPastAHeldMessage: a fill stopped at the socket's own
// message, which waits for its send's answer, with more of the chat to
// read. When the answer lets the stream past it, a fill is due at once,
// though no gap opened: otherwise the rest of the chat waits for the next
// publication, or the periodic check. (Found by the fault test killing a
// replica while its clients' sends were in flight: each client resumed
// and sent its unacked messages again, and the first page of the replay
// began with one of them.)
func TestStreamReadsOnPastAHeldMessage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(0)
	inFlight := map[int64]bool{1: true}
	hold := func(e entry) bool { return inFlight[e.it.seq] }
	// The fill's page: 1 (ours, sent again and in flight), 2, 3; more after.
	for n := int64(1); n <= 3; n++ {
		wantDelivered(t, s.offer(entry{it: it(n)}, t0, hb, hold, nil))
	}
	wantDelivered(t, s.raise(3, false, t0, hb, hold, nil))
	s.cutAtHold()
	s.filled(t0, hb)
	if !s.fillAt.IsZero() {
		t.Fatalf("a fill is due at %v while the stream waits for its own ack", s.fillAt)
	}
	// The send is answered as a repeat (no entry of its own): 1 goes as
	// message.new, and the rest of the page after it.
	t1 := t0.Add(time.Second)
	delete(inFlight, 1)
	wantDelivered(t, s.drain(t1, hb, hold, nil), 1, 2, 3)
	if !s.fillDue(t1) {
		t.Fatalf("past the held message no fill is due (fillAt %v): the rest of the chat is never read", s.fillAt)
	}
	// A publication meanwhile does not push the read-on back.
	wantDelivered(t, s.offer(entry{it: it(4)}, t1, hb, hold, nil), 4)
	if !s.fillDue(t1) {
		t.Fatalf("a delivery cancelled the read-on (fillAt %v)", s.fillAt)
	}
	// The fill reads on to the head: the schedule closes.
	s.readingOn()
	wantDelivered(t, s.raise(4, true, t1, hb, hold, nil))
	s.filled(t1, hb)
	if !s.fillAt.IsZero() || s.fails != 0 {
		t.Fatalf("after reading on: fillAt %v fails %d, want the schedule closed", s.fillAt, s.fails)
	}
}

func TestStreamAckReplacesPendingNew(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(0)
	s.offer(entry{it: it(2)}, t0, hb, nil, nil)
	s.offer(entry{it: it(2), ack: true}, t0, hb, nil, nil)
	got := s.offer(entry{it: it(1)}, t0, hb, nil, nil)
	wantDelivered(t, got, 1, 2)
	if !got[1].ack {
		t.Fatal("the socket's own message was answered with message.new, not its ack")
	}
}

func TestStreamReset(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(7)
	s.offer(entry{it: it(9)}, t0, hb, nil, nil)
	s.reset(3)
	if s.last != 3 || s.gap() || !s.fillAt.IsZero() {
		t.Fatalf("after reset: last %d gap %v fillAt %v", s.last, s.gap(), s.fillAt)
	}
	wantDelivered(t, s.offer(entry{it: it(4)}, t0, hb, nil, nil), 4)
}

// TestStreamFloorSkipsSupersededRevs: a fill that has read every change up
// to the chat's head raises the floor; revs below it that never arrive
// (earlier states of messages changed again) are skipped, and what comes
// after the head is delivered live.
func TestStreamFloorSkipsSupersededRevs(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(4)
	// Live: rev 7 arrives, 5 and 6 are missing: a gap.
	wantDelivered(t, s.offer(entry{it: change(7, 2)}, t0, hb, nil, nil))
	if !s.gap() {
		t.Fatal("no gap for missing revs above the floor")
	}
	// The fill reads changes after 4 up to head 8: message 3 changed at 8
	// (its rev 5 and 6 states were superseded); rev 7 is there already.
	got := s.offer(entry{it: change(8, 3)}, t0, hb, nil, nil)
	wantDelivered(t, got)
	got = s.raise(8, true, t0, hb, nil, nil)
	if g := seqsOf(got); len(g) != 2 || got[0].it.rev != 7 || got[1].it.rev != 8 {
		t.Fatalf("after raising the floor to 8: delivered revs %v, want 7 then 8", g)
	}
	if s.last != 8 || s.gap() || !s.fillAt.IsZero() {
		t.Fatalf("last %d gap %v fillAt %v, want 8, no gap, no fill due", s.last, s.gap(), s.fillAt)
	}
	// Revs at or below the floor that turn up late are repeats.
	wantDelivered(t, s.offer(entry{it: change(6, 3)}, t0, hb, nil, nil))
	wantDelivered(t, s.offer(entry{it: it(9)}, t0, hb, nil, nil), 9)
}

// TestStreamMarksNewAndUpdated: a message is new to a socket when it was
// created after the socket's position: a live new message, or one created
// and changed while the socket was away; a change to one it has seen (or
// that existed before it connected) is an update.
func TestStreamMarksNewAndUpdated(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(10)
	got := s.offer(entry{it: it(11)}, t0, hb, nil, nil)                        // created live
	got = s.offer(entry{it: change(12, 3)}, t0, hb, nil, got)                  // an old message edited
	got = s.offer(entry{it: change(13, 11)}, t0, hb, nil, got)                 // the new one edited
	got = append(got, s.offer(entry{it: change(15, 14)}, t0, hb, nil, nil)...) // created at 14 (missed) and edited at 15
	got = append(got, s.raise(15, true, t0, hb, nil, nil)...)
	want := []bool{true, false, false, true}
	if len(got) != len(want) {
		t.Fatalf("delivered %v, want 4 entries", seqsOf(got))
	}
	for i, e := range got {
		if e.isNew != want[i] {
			t.Errorf("entry %d (rev %d, created %d): isNew %v, want %v", i, e.it.rev, e.it.createdRev, e.isNew, want[i])
		}
	}
}

// TestStreamResumeReplaysCreationsAsNew: a resume replays each message
// changed while away once, at its latest rev, so a message created while
// away and edited since comes after newer messages; it is still new to the
// socket, and so is everything else created after the position, whatever
// the order. Live changes to them afterwards are updates. A fill page that
// does not reach the head leaves it undecided until the last page.
func TestStreamResumeReplaysCreationsAsNew(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := newStream(0)
	// Changes after 0, up to head 5: seq 2 (rev 2), seq 4 created at 4
	// (rev 4), seq 1 edited at 3, seq 3 edited at 5.
	var got []entry
	for _, e := range []*item{change(2, 2), change(3, 1), change(4, 4), change(5, 3)} {
		got = s.offer(entry{it: e}, t0, hb, nil, got)
	}
	got = s.raise(5, true, t0, hb, nil, got)
	got = s.offer(entry{it: change(6, 1)}, t0, hb, nil, got) // live: seq 1 edited again
	got = s.offer(entry{it: it(7)}, t0, hb, nil, got)        // live: a new message
	want := []struct {
		rev   int64
		isNew bool
	}{{2, true}, {3, true}, {4, true}, {5, true}, {6, false}, {7, true}}
	if len(got) != len(want) {
		t.Fatalf("delivered %v, want %d entries", seqsOf(got), len(want))
	}
	for i, e := range got {
		if e.it.rev != want[i].rev || e.isNew != want[i].isNew {
			t.Errorf("entry %d: rev %d (created %d) isNew %v, want rev %d isNew %v", i, e.it.rev, e.it.createdRev, e.isNew, want[i].rev, want[i].isNew)
		}
	}
	if s.known != 7 || s.ahead != nil {
		t.Errorf("known %d ahead %v: in step again after the fill, want 7 and nothing ahead", s.known, s.ahead)
	}

	// Paged: the first page (seq 2 at rev 2) is not the head; the last
	// brings seq 1, created at 1 (skipped by the first page's floor) and
	// edited at 6: new as well.
	s = newStream(0)
	got = nil
	got = s.offer(entry{it: change(2, 2)}, t0, hb, nil, got)
	got = s.raise(2, false, t0, hb, nil, got)
	got = s.offer(entry{it: change(6, 1)}, t0, hb, nil, got)
	got = s.raise(6, true, t0, hb, nil, got)
	if len(got) != 2 || !got[0].isNew || !got[1].isNew || got[1].it.seq != 1 {
		t.Fatalf("paged resume: %v, want seq 2 then seq 1, both new", got)
	}
}
