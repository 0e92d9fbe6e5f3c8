package realtime

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/repo"
)

// testHub is a hub with no broker, store or service: enough for a
// connection's delivery, queue and writer.
func testHub(cfg Config) *Hub {
	h := &Hub{cfg: cfg.withDefaults()}
	h.log = h.cfg.Logger
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// TestDropNeverBlocksTheDeliverer: a peer that stops reading fills its
// socket, then its queue; the goroutine that delivers to everyone (the
// broker's) keeps going: the connection is dropped (4008) without waiting
// for the socket, and later deliveries to it return at once.
func TestDropNeverBlocksTheDeliverer(t *testing.T) {
	h := testHub(Config{QueueSize: 16, WriteTimeout: time.Hour})
	server, client := net.Pipe() // writes block until the client reads: it never does
	defer client.Close()
	c := newConn(h, chat.Principal{UserID: 1, SessionID: 1}, 0, server, bufio.NewReader(server), map[int64]start{7: {}})
	msg := json.RawMessage(`{"chat_id":7,"seq":1}`)

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 10*h.cfg.QueueSize; i++ {
			c.deliver(7, []*item{newItem(7, int64(i), int64(i), int64(i), 2, "x", msg, 0)}, nil, time.Now())
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("delivery blocked on a peer that does not read")
	}
	c.mu.Lock()
	dropped, state, queued := c.dropped, c.state, len(c.out)
	c.mu.Unlock()
	if !dropped || state == stateOpen || queued != 0 {
		t.Fatalf("dropped %v state %v queued %d: want the connection dropped with its queue cleared", dropped, state, queued)
	}
	// The writer, stuck on the full socket, was woken by the expired
	// deadline and closed it.
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := client.Read(buf); err != nil {
			break // the socket was closed by the writer
		}
	}
}

// TestTasksHaveDeadlines: database and broker work of a connection runs
// with a deadline of its own, not the (long gone) request's context.
func TestTasksHaveDeadlines(t *testing.T) {
	h := testHub(Config{})
	server, client := net.Pipe()
	defer client.Close()
	defer server.Close()
	c := newConn(h, chat.Principal{UserID: 1, SessionID: 1}, 0, server, bufio.NewReader(server), nil)
	got := make(chan time.Duration, 1)
	c.mu.Lock()
	c.addTaskLocked(func(ctx context.Context) {
		dl, ok := ctx.Deadline()
		if !ok {
			got <- -1
			return
		}
		got <- time.Until(dl)
	})
	c.mu.Unlock()
	select {
	case d := <-got:
		if d <= 0 || d > taskTimeout {
			t.Fatalf("task deadline in %v, want within %v", d, taskTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("task did not run")
	}
}

// TestRepeatAnsweredPastAGapArmsTheFill: the connection's own message
// waits (hold) for its send's answer, with a later message behind a
// missing one. The answer is a repeat (the original was stored before:
// by a replica killed before it acked, say). Delivering past the held
// message opens the gap, and its fill must be scheduled: a gap whose
// schedule is set but whose timer is not armed stalls the chat for good,
// the periodic check skipping a stream with a fill scheduled. (Found by
// the fault test killing a replica while its clients' sends were in
// flight.)
func TestRepeatAnsweredPastAGapArmsTheFill(t *testing.T) {
	h := testHub(Config{QueueSize: 64, GapHoldback: time.Hour}) // the fill itself never runs here
	server, client := net.Pipe()
	defer client.Close()
	defer server.Close()
	const me = 1
	c := newConn(h, chat.Principal{UserID: me, SessionID: 1}, 0, server, bufio.NewReader(server), map[int64]start{7: {}})
	msg := json.RawMessage(`{"chat_id":7,"seq":1}`)
	c.startSend(sendKey{7, "mine"})
	c.deliver(7, []*item{newItem(7, 1, 1, 1, me, "mine", msg, 0)}, nil, time.Now())  // ours: waits for the answer
	c.deliver(7, []*item{newItem(7, 3, 3, 3, 2, "theirs", msg, 0)}, nil, time.Now()) // 2 is missing
	c.mu.Lock()
	early := c.fillTimer != nil
	c.mu.Unlock()
	if early {
		t.Fatal("a fill was scheduled while the stream waits for its own ack")
	}

	orig := chat.Message{Message: repo.Message{ID: 1, ChatID: 7, Seq: 1, Rev: 1, CreatedRev: 1, SenderID: me, ClientMsgID: "mine", Text: "hi"}}
	c.acked(7, "mine", chat.Outcome{Message: orig, Duplicate: true})
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[7]
	if st.last != 1 || !st.gap() || st.fillAt.IsZero() {
		t.Fatalf("after the repeat's answer: last %d, gap %v, fill at %v; want 1 delivered and a fill scheduled for 2", st.last, st.gap(), st.fillAt)
	}
	if c.fillTimer == nil {
		t.Fatal("the gap's fill is scheduled but its timer was never armed: the stream stalls")
	}
	c.fillTimer.Stop()
}
