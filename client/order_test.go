package client

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/windi-chat/windi/client/rest"
)

// The ordering state machine on its own: frames in, deliveries out.

type frameIn struct {
	seq, rev int64
	isNew    bool
}

func n(seq, rev int64) frameIn { return frameIn{seq, rev, true} }  // message.new or an ack
func u(seq, rev int64) frameIn { return frameIn{seq, rev, false} } // message.updated

// run offers the frames and returns the deliveries as "+seq@rev" (created,
// OnMessage) and "~seq@rev" (changed, OnUpdate).
func run(s *chatStream, frames ...frameIn) []string {
	var got []string
	for _, f := range frames {
		for _, d := range s.offer(rest.Message{ChatID: 1, Seq: f.seq, Rev: f.rev}, f.isNew, nil) {
			mark := "~"
			if d.created {
				mark = "+"
			}
			got = append(got, fmt.Sprintf("%s%d@%d", mark, d.m.Seq, d.m.Rev))
		}
	}
	return got
}

func TestChatStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  Position
		noSeq  bool // the start has no seq (a chat joined while connected)
		frames []frameIn
		want   string
		pos    Position
		wait   bool
	}{{
		name: "live in order", start: Position{Seq: 2, Rev: 3},
		frames: []frameIn{n(3, 4), u(1, 5), n(4, 6)},
		want:   "+3@4 ~1@5 +4@6", pos: Position{Seq: 4, Rev: 6},
	}, {
		name: "repeats at or below the position are dropped", start: Position{Seq: 2, Rev: 3},
		frames: []frameIn{n(2, 2), u(1, 3), n(3, 4), n(3, 4), u(1, 4)},
		want:   "+3@4", pos: Position{Seq: 3, Rev: 4},
	}, {
		// seq 3 was created while away and edited later: the replay brings
		// it at its latest rev, after seq 4; OnMessage still sees 3, 4.
		name: "a collapsed replay keeps seq order", start: Position{Seq: 2, Rev: 2},
		frames: []frameIn{n(4, 4), n(3, 5)},
		want:   "+3@5 +4@4", pos: Position{Seq: 4, Rev: 5},
	}, {
		// The server may call the collapsed message an update; by its seq
		// it is new to the application.
		name: "a message above the last seq is new whatever its frame says", start: Position{Seq: 0, Rev: 0},
		frames: []frameIn{n(2, 2), u(1, 3)},
		want:   "+1@3 +2@2", pos: Position{Seq: 2, Rev: 3},
	}, {
		name: "a message at or below the last seq is an update whatever its frame says", start: Position{Seq: 5, Rev: 9},
		frames: []frameIn{n(5, 10)},
		want:   "~5@10", pos: Position{Seq: 5, Rev: 10},
	}, {
		// Updates behind a held message wait with it: everything up to the
		// position has been handed out, in the order sent.
		name: "frames behind a missing seq wait", start: Position{Seq: 2, Rev: 2},
		frames: []frameIn{n(4, 4), u(1, 5), n(5, 6)},
		want:   "", pos: Position{Seq: 2, Rev: 2}, wait: true,
	}, {
		name: "the missing seq releases what waits, in order", start: Position{Seq: 2, Rev: 2},
		frames: []frameIn{n(4, 4), u(1, 5), n(5, 6), n(3, 7)},
		want:   "+3@7 +4@4 ~1@5 +5@6", pos: Position{Seq: 5, Rev: 7},
	}, {
		// Seq 3 is found and handed early, but seq 5 (at rev 8) has not
		// come: the position stays below seq 6's frame.
		name: "an early hand-off moves the position only past what came before it", start: Position{Seq: 2, Rev: 2},
		frames: []frameIn{n(4, 4), n(6, 6), n(3, 7)},
		want:   "+3@7 +4@4", pos: Position{Seq: 4, Rev: 4}, wait: true,
	}, {
		name: "a sync's replay of what waits is dropped", start: Position{Seq: 2, Rev: 2},
		frames: []frameIn{n(4, 4), n(4, 4), n(3, 5)},
		want:   "+3@5 +4@4", pos: Position{Seq: 4, Rev: 5},
	}, {
		name: "an unknown seq is set by the first new message", noSeq: true,
		frames: []frameIn{u(1, 3), n(7, 4), n(8, 5)},
		want:   "~1@3 +7@4 +8@5", pos: Position{Seq: 8, Rev: 5},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newChatStream(tc.start, !tc.noSeq)
			got := strings.Join(run(s, tc.frames...), " ")
			if got != tc.want {
				t.Errorf("deliveries: got %q, want %q", got, tc.want)
			}
			if s.position() != tc.pos {
				t.Errorf("position: got %+v, want %+v", s.position(), tc.pos)
			}
			if s.waiting() != tc.wait {
				t.Errorf("waiting: got %v, want %v", s.waiting(), tc.wait)
			}
		})
	}
}

// After a reconnect what waited is forgotten (the server replays it from
// the position), but what was handed early is not handed again.
func TestChatStreamReconnect(t *testing.T) {
	s := newChatStream(Position{Seq: 2, Rev: 2}, true)
	if got := run(s, n(4, 4), n(6, 6), n(3, 7)); !slices.Equal(got, []string{"+3@7", "+4@4"}) {
		t.Fatalf("before the drop: got %v", got)
	}
	s.reconnected()
	if s.waiting() {
		t.Fatal("the queue survived the reconnect")
	}
	// The replay from rev 4: seq 6 (rev 6), seq 3 unchanged (rev 7, handed
	// early: dropped), seq 5 edited while away (rev 8), seq 3 edited
	// again (rev 9).
	got := run(s, n(6, 6), u(3, 7), n(5, 8), u(3, 9))
	if want := []string{"+5@8", "+6@6", "~3@9"}; !slices.Equal(got, want) {
		t.Fatalf("after the reconnect: got %v, want %v", got, want)
	}
	if s.position() != (Position{Seq: 6, Rev: 9}) || len(s.early) != 0 {
		t.Fatalf("position %+v, early %v; want {6 9} and none", s.position(), s.early)
	}
}
