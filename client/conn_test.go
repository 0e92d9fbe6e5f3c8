package client_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

func i64(v int64) *int64 { return &v }

// fixedBackoff waits attempt seconds and records the attempts.
type fixedBackoff struct {
	mu       sync.Mutex // guards attempts
	attempts []int
}

func (b *fixedBackoff) backoff(attempt int) time.Duration {
	b.mu.Lock()
	b.attempts = append(b.attempts, attempt)
	b.mu.Unlock()
	return time.Duration(attempt) * time.Second
}

func (b *fixedBackoff) got() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.attempts)
}

func dial(t *testing.T, c *client.Client, cfg client.Config) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func waitDone(t *testing.T, conn *client.Conn) {
	t.Helper()
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the Conn did not end")
	}
}

func TestExponentialBackoff(t *testing.T) {
	b := client.ExponentialBackoff(100*time.Millisecond, 2*time.Second)
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: 1600 * time.Millisecond, 6: 2 * time.Second, 40: 2 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: got %v, want %v..%v", attempt, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: only %d distinct waits in 200: not jittered", attempt, len(seen))
		}
	}
}

// A dropped connection is retried after the backoff (not before), and the
// new one resumes every chat from what the application has: sync frames
// with the positions, which start from Since and GET /chats.
func TestConnResumesAfterDrop(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(12)}, rest.Chat{ID: 7, LastSeq: i64(3)})
	clock, bo, rec := newFakeClock(), &fixedBackoff{}, newRecorder()
	conn := dial(t, f.client(t), rec.config(client.Config{Since: map[int64]int64{5: 10}, Clock: clock, Backoff: bo.backoff}))

	c1 := f.next(t)
	if got, want := c1.syncs(t, 2), map[int64]int64{5: 10, 7: 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("first syncs: got %v, want %v", got, want)
	}
	c1.write(t, newFrame(msg(5, 11, "a")))
	c1.write(t, newFrame(msg(5, 12, "b")))
	c1.write(t, newFrame(msg(5, 12, "b"))) // a repeat: dropped
	c1.write(t, newFrame(msg(5, 11, "a")))
	c1.write(t, newFrame(msg(7, 4, "c")))
	rec.waitFor(t, "chat 7 seq 4", func() bool { return len(rec.msgs) >= 3 })
	if got := rec.seqs(5); !slices.Equal(got, []int64{11, 12}) {
		t.Fatalf("chat 5: got seqs %v, want [11 12]", got)
	}

	_ = c1.ws.CloseNow() // 1006: no close frame
	clock.WaitTimer(t, time.Second)
	f.none(t) // nothing before the backoff has passed
	clock.Advance(time.Second)
	c2 := f.next(t)
	if got, want := c2.syncs(t, 2), map[int64]int64{5: 12, 7: 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("syncs after the reconnect: got %v, want %v", got, want)
	}
	if got := bo.got(); !slices.Equal(got, []int{1}) {
		t.Errorf("backoff attempts: got %v, want [1]", got)
	}
	if got, want := conn.Positions(), map[int64]int64{5: 12, 7: 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("positions: got %v, want %v", got, want)
	}
	f.mu.Lock()
	paths, hits := slices.Clone(f.paths), f.listHits
	f.mu.Unlock()
	if !slices.Equal(paths, []string{"/ws", "/ws"}) || hits != 1 {
		t.Errorf("handshakes %v and %d GET /chats; want two on /ws and one GET /chats", paths, hits)
	}
}

// A message above a gap waits until the gap closes; an open gap asks for
// a sync at once when none is under way, and again after GapTimeout.
func TestConnHoldsBackAboveAGap(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(10)})
	clock, rec := newFakeClock(), newRecorder()
	dial(t, f.client(t), rec.config(client.Config{Clock: clock, GapTimeout: 5 * time.Second}))

	c := f.next(t)
	c.syncs(t, 1)
	c.write(t, newFrame(msg(5, 12, "b")))
	clock.WaitTimer(t, 5*time.Second) // the resume sync's gap check
	clock.Advance(5 * time.Second)
	if got := c.syncs(t, 1); got[5] != 10 {
		t.Fatalf("sync after the gap timeout: got since %d, want 10", got[5])
	}
	if got := rec.seqs(5); len(got) != 0 {
		t.Fatalf("delivered %v above a gap", got)
	}
	c.write(t, newFrame(msg(5, 11, "a")))
	rec.waitFor(t, "seqs 11 and 12", func() bool { return len(rec.msgs) == 2 })

	c.write(t, newFrame(msg(5, 14, "d"))) // a gap with no sync under way
	if got := c.syncs(t, 1); got[5] != 12 {
		t.Fatalf("sync for the new gap: got since %d, want 12", got[5])
	}
	c.write(t, newFrame(msg(5, 13, "c")))
	c.write(t, newFrame(msg(5, 14, "d")))
	rec.waitFor(t, "seq 14", func() bool { return len(rec.msgs) == 4 })
	if got := rec.seqs(5); !slices.Equal(got, []int64{11, 12, 13, 14}) {
		t.Fatalf("got seqs %v, want [11 12 13 14]", got)
	}
}

// reconnectWithin waits for the Conn to reconnect, advancing the clock
// past a reconnect timer of at most hi.
func reconnectWithin(t *testing.T, f *fakeServer, clock *fakeClock, hi time.Duration) *fakeConn {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-f.conns:
			return c
		case <-time.After(10 * time.Millisecond):
			clock.Advance(hi)
		case <-deadline:
			t.Fatal("no reconnect")
		}
	}
}

// Sends not acked when the connection drops, and sends made while it is
// down, are written after the resume with their client_msg_id, in order.
func TestConnResendsUnackedSends(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	clock, rec := newFakeClock(), newRecorder()
	var states []client.State
	var mu sync.Mutex
	cfg := rec.config(client.Config{Clock: clock})
	cfg.OnState = func(s client.State, _ error) { mu.Lock(); states = append(states, s); mu.Unlock() }
	conn := dial(t, f.client(t), cfg)

	c1 := f.next(t)
	c1.syncs(t, 1)
	p1, err := conn.Send(5, "one")
	if err != nil {
		t.Fatal(err)
	}
	if m := c1.read(t); m["type"] != "message.send" || m["client_msg_id"] != p1.ClientMsgID || m["text"] != "one" {
		t.Fatalf("got %v, want the send of %q", m, p1.ClientMsgID)
	}
	c1.close(client.CloseGoingAway)
	for conn.State() == client.Connected {
		time.Sleep(time.Millisecond)
	}
	p2, err := conn.Send(5, "two")
	if err != nil {
		t.Fatal(err)
	}

	c2 := reconnectWithin(t, f, clock, 250*time.Millisecond)
	if got := c2.syncs(t, 1); got[5] != 0 {
		t.Fatalf("resume: got since %d, want 0", got[5])
	}
	for _, p := range []*client.Pending{p1, p2} {
		if m := c2.read(t); m["type"] != "message.send" || m["client_msg_id"] != p.ClientMsgID {
			t.Fatalf("got %v, want the send of %q", m, p.ClientMsgID)
		}
	}
	m1, m2 := msg(5, 1, "one"), msg(5, 2, "two")
	m1.ClientMsgID, m2.ClientMsgID = p1.ClientMsgID, p2.ClientMsgID
	c2.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: p1.ClientMsgID, Duplicate: true, Message: m1})
	c2.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: p2.ClientMsgID, Message: m2})
	c2.write(t, newFrame(m1)) // the sync's replay: delivered already

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a1, err := p1.Wait(ctx)
	if err != nil || !a1.Duplicate || a1.Message.Seq != 1 {
		t.Fatalf("first send: got %+v, %v; want a duplicate ack of seq 1", a1, err)
	}
	a2, err := p2.Wait(ctx)
	if err != nil || a2.Duplicate || a2.Message.Seq != 2 {
		t.Fatalf("second send: got %+v, %v; want the ack of seq 2", a2, err)
	}
	rec.waitFor(t, "two messages", func() bool { return len(rec.msgs) >= 2 })
	if got := rec.seqs(5); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("got seqs %v, want [1 2]", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []client.State{client.Connecting, client.Connected, client.Disconnected, client.Connecting, client.Connected}
	if !slices.Equal(states, want) {
		t.Errorf("states: got %v, want %v", states, want)
	}
}

// Close codes 4401, 4403 and 4500–4999 (but 4501) end the Conn: no
// reconnect, OnClose with the code, waiting sends fail.
func TestConnTerminalCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code   int
		chatID int64
	}{{client.CloseRevoked, 0}, {client.CloseRemoved, 5}, {4599, 0}} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(3)})
			rec := newRecorder()
			conn := dial(t, f.client(t), rec.config(client.Config{ChatID: tc.chatID, Clock: newFakeClock()}))
			c := f.next(t)
			if tc.chatID == 0 {
				c.syncs(t, 1)
			}
			p, err := conn.Send(5, "hi")
			if err != nil {
				t.Fatal(err)
			}
			c.read(t)
			c.close(tc.code)
			waitDone(t, conn)
			var ce *client.CloseError
			if err := conn.Err(); !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("Err: got %v, want a CloseError %d", err, tc.code)
			}
			if _, err := p.Wait(context.Background()); !errors.Is(err, client.ErrClosed) || !errors.As(err, &ce) {
				t.Fatalf("pending send: got %v, want ErrClosed with the close code", err)
			}
			if len(rec.closed) != 1 {
				t.Fatalf("OnClose called %d times, want once", len(rec.closed))
			}
			if _, err := conn.Send(5, "late"); !errors.Is(err, client.ErrClosed) {
				t.Fatalf("send after the end: got %v, want ErrClosed", err)
			}
			f.none(t)
			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.chatID != 0 && f.paths[0] != "/ws/5?since_seq=3" {
				t.Errorf("per-chat handshake: got %s, want /ws/5?since_seq=3", f.paths[0])
			}
		})
	}
}

// 4501 asks the TokenFunc for a new token and reconnects with it at once;
// without a TokenFunc, or when it fails, the Conn ends.
func TestConnRefreshesTheTokenOn4501(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	var mu sync.Mutex
	var calls []bool
	fail := false
	tokens := client.WithTokenFunc(func(_ context.Context, expired bool) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, expired)
		switch {
		case expired && fail:
			return "", errors.New("refresh token revoked")
		case expired:
			return "tok-2", nil
		}
		return "tok-1", nil
	})
	rec := newRecorder()
	conn := dial(t, f.client(t, tokens), rec.config(client.Config{Clock: newFakeClock()}))
	c1 := f.next(t)
	c1.syncs(t, 1)
	c1.close(client.CloseTokenExpired)
	c2 := f.next(t) // no backoff: the new token is there
	c2.syncs(t, 1)
	f.mu.Lock()
	if got := f.tokens; !slices.Equal(got, []string{"tok-1", "tok-2"}) {
		t.Errorf("handshake tokens: got %v, want [tok-1 tok-2]", got)
	}
	f.mu.Unlock()

	mu.Lock()
	fail = true
	mu.Unlock()
	c2.close(client.CloseTokenExpired)
	waitDone(t, conn)
	if err := conn.Err(); err == nil || err.Error() != "client: token: refresh token revoked" {
		t.Fatalf("Err: got %v, want the TokenFunc's error", err)
	}
	f.none(t)

	// A fixed token cannot be refreshed.
	f2 := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	conn2 := dial(t, f2.client(t), client.Config{Clock: newFakeClock()})
	c := f2.next(t)
	c.syncs(t, 1)
	c.close(client.CloseTokenExpired)
	waitDone(t, conn2)
	if err := conn2.Err(); !errors.Is(err, client.ErrNoToken) {
		t.Fatalf("Err: got %v, want ErrNoToken", err)
	}
}

// A 401 at the handshake gets a fresh token and one more try; a second
// 401 ends the Dial.
func TestConnHandshake401(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	f.accepted = map[string]bool{"fresh": true}
	fresh := client.WithTokenFunc(func(_ context.Context, expired bool) (string, error) {
		if expired {
			return "fresh", nil
		}
		return "stale", nil
	})
	dial(t, f.client(t, fresh), client.Config{Clock: newFakeClock()})
	f.next(t)

	stale := client.WithTokenFunc(func(context.Context, bool) (string, error) { return "stale", nil })
	_, err := f.client(t, stale).Dial(context.Background(), client.Config{Clock: newFakeClock()})
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || he.Problem == nil || he.Problem.Code != "refused" {
		t.Fatalf("dial with a token that stays rejected: got %v, want a 401 HandshakeError with its problem", err)
	}
}

// Refused handshakes (503) are retried after Backoff(1), (2), (3); a
// connection that stayed up 5 s starts the count over.
func TestConnBacksOff(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	f.refuse = []int{503, 503, 503}
	clock, bo := newFakeClock(), &fixedBackoff{}
	dialed := make(chan *client.Conn, 1)
	go func() {
		conn, err := f.client(t).Dial(context.Background(), client.Config{Clock: clock, Backoff: bo.backoff})
		if err != nil {
			t.Errorf("dial: %v", err)
		}
		dialed <- conn
	}()
	for i := 1; i <= 3; i++ {
		clock.WaitTimer(t, time.Duration(i)*time.Second)
		clock.Advance(time.Duration(i)*time.Second - time.Millisecond)
		f.none(t)
		clock.Advance(time.Millisecond)
	}
	c := f.next(t)
	conn := <-dialed
	if conn == nil {
		t.FailNow()
	}
	defer conn.Close()
	c.syncs(t, 1)
	clock.Advance(5 * time.Second)
	_ = c.ws.CloseNow()
	clock.WaitTimer(t, time.Second)
	if got := bo.got(); !slices.Equal(got, []int{1, 2, 3, 1}) {
		t.Fatalf("backoff attempts: got %v, want [1 2 3 1]", got)
	}
}

// rate_limited answers pause sending for the backoff and then write the
// same send again; bad_request fails the send with the error frame.
func TestConnSendErrors(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	clock, bo := newFakeClock(), &fixedBackoff{}
	conn := dial(t, f.client(t), client.Config{Clock: clock, Backoff: bo.backoff})
	c := f.next(t)
	c.syncs(t, 1)

	p, err := conn.Send(5, "hi")
	if err != nil {
		t.Fatal(err)
	}
	c.read(t)
	cmid := p.ClientMsgID
	c.write(t, rest.ErrorFrame{Type: rest.ErrorFrameTypeError, Code: rest.ErrorFrameCodeRateLimited, Message: "slow down", ClientMsgID: &cmid, ChatID: i64(5)})
	clock.WaitTimer(t, time.Second)
	clock.Advance(time.Second)
	if m := c.read(t); m["type"] != "message.send" || m["client_msg_id"] != cmid {
		t.Fatalf("got %v, want the same send again", m)
	}
	m := msg(5, 1, "hi")
	m.ClientMsgID = cmid
	c.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: cmid, Message: m})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a, err := p.Wait(ctx); err != nil || a.Message.Seq != 1 {
		t.Fatalf("got %+v, %v; want the ack of seq 1", a, err)
	}

	bad, err := conn.SendWithID(5, "bad id", "x")
	if err != nil {
		t.Fatal(err)
	}
	c.read(t)
	badID := "bad id"
	c.write(t, rest.ErrorFrame{Type: rest.ErrorFrameTypeError, Code: rest.ErrorFrameCodeBadRequest, Message: "client_msg_id: printable ASCII", ClientMsgID: &badID})
	var fe *client.FrameError
	if _, err := bad.Wait(ctx); !errors.As(err, &fe) || fe.Code != rest.ErrorFrameCodeBadRequest || fe.Temporary() {
		t.Fatalf("got %v, want the bad_request error frame", err)
	}

	if _, err := conn.Send(6, string(make([]byte, client.MaxFrameBytes))); !errors.Is(err, client.ErrFrameTooLarge) {
		t.Fatalf("a 64 KiB text: got %v, want ErrFrameTooLarge", err)
	}
}
