package client_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
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

// withLast gives a chat of GET /chats a last message whose latest change
// is rev.
func withLast(ch rest.Chat, rev int64) rest.Chat {
	m := msg(ch.ID, *ch.LastSeq, "last")
	m.Rev = rev
	ch.LastMessage = &m
	return ch
}

// A dropped connection is retried after the backoff (not before), and the
// new one resumes every chat from what the application has, in the
// handshake: since_rev for chats with a revision, since for those with a
// seq only. Positions start from Since and GET /chats.
func TestConnResumesAfterDrop(t *testing.T) {
	f := newFakeServer(t, withLast(rest.Chat{ID: 5, LastSeq: i64(12)}, 20), withLast(rest.Chat{ID: 7, LastSeq: i64(3)}, 9))
	clock, bo, rec := newFakeClock(), &fixedBackoff{}, newRecorder()
	conn := dial(t, f.client(t), rec.config(client.Config{Since: map[int64]int64{5: 10}, Clock: clock, Backoff: bo.backoff}))

	c1 := f.next(t)
	c1.write(t, newFrame(rmsg(5, 11, 21, "a")))
	c1.write(t, newFrame(rmsg(5, 12, 22, "b")))
	c1.write(t, newFrame(rmsg(5, 12, 22, "b"))) // a repeat: dropped
	c1.write(t, newFrame(rmsg(5, 11, 21, "a")))
	c1.write(t, updated(rmsg(5, 11, 23, "a, edited")))
	c1.write(t, newFrame(rmsg(7, 4, 10, "c")))
	rec.waitFor(t, "chat 7 seq 4", func() bool { return len(rec.msgs) >= 3 })
	if got := rec.seqs(5); !slices.Equal(got, []int64{11, 12}) {
		t.Fatalf("chat 5: got seqs %v, want [11 12]", got)
	}
	if len(rec.updates) != 1 || rec.updates[0].Text != "a, edited" {
		t.Fatalf("updates: got %+v, want the edit of seq 11", rec.updates)
	}

	_ = c1.ws.CloseNow() // 1006: no close frame
	clock.WaitTimer(t, time.Second)
	f.none(t) // nothing before the backoff has passed
	clock.Advance(time.Second)
	f.next(t)
	if got := bo.got(); !slices.Equal(got, []int{1}) {
		t.Errorf("backoff attempts: got %v, want [1]", got)
	}
	if got, want := conn.Positions(), map[int64]int64{5: 12, 7: 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("positions: got %v, want %v", got, want)
	}
	if got, want := conn.Resume(), map[int64]client.Position{5: {Seq: 12, Rev: 23}, 7: {Seq: 4, Rev: 10}}; !reflect.DeepEqual(got, want) {
		t.Errorf("resume positions: got %v, want %v", got, want)
	}
	f.mu.Lock()
	paths, hits := slices.Clone(f.paths), f.listHits
	f.mu.Unlock()
	// Chat 5 starts by seq (Since), chat 7 by its last message's rev.
	want := []string{"/ws?since_rev=7:9&since=5:10", "/ws?since_rev=5:23,7:10"}
	if !slices.Equal(paths, want) || hits != 1 {
		t.Errorf("handshakes %v and %d GET /chats; want %v and one GET /chats", paths, hits, want)
	}
}

// ResumeBySeq resumes with since= lists and since_seq syncs, revisions
// known or not; Resume positions given in Config start by rev otherwise.
func TestConnResumeBySeq(t *testing.T) {
	for _, bySeq := range []bool{false, true} {
		t.Run(strconv.FormatBool(bySeq), func(t *testing.T) {
			f := newFakeServer(t, withLast(rest.Chat{ID: 5, LastSeq: i64(2)}, 4))
			clock := newFakeClock()
			dial(t, f.client(t), client.Config{Resume: map[int64]client.Position{5: {Seq: 2, Rev: 6}}, ResumeBySeq: bySeq, Clock: clock})
			c := f.next(t)
			c.write(t, newFrame(rmsg(5, 4, 8, "above a gap"))) // asks for a sync
			m := c.read(t)
			want := map[string]any{"type": "sync", "chat_id": 5.0, "since_rev": 6.0}
			wantPath := "/ws?since_rev=5:6"
			if bySeq {
				want = map[string]any{"type": "sync", "chat_id": 5.0, "since_seq": 2.0}
				wantPath = "/ws?since=5:2"
			}
			if !reflect.DeepEqual(m, want) {
				t.Errorf("sync: got %v, want %v", m, want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.paths[0] != wantPath || f.listHits != 1 {
				t.Errorf("handshake %s after %d GET /chats; want %s after one", f.paths[0], f.listHits, wantPath)
			}
		})
	}
}

// More chats than the handshake URL holds: the rest resume with one sync
// frame each.
func TestConnResumesManyChats(t *testing.T) {
	var chats []rest.Chat
	for id := int64(1000); id < 1900; id++ {
		chats = append(chats, withLast(rest.Chat{ID: id, LastSeq: i64(id)}, id+1))
	}
	f := newFakeServer(t, chats...)
	dial(t, f.client(t), client.Config{Clock: newFakeClock()})
	c := f.next(t)
	f.mu.Lock()
	path := f.paths[0]
	f.mu.Unlock()
	if len(path) > 7<<10 {
		t.Fatalf("handshake URL of %d bytes", len(path))
	}
	seen := map[int64]int64{}
	list, ok := strings.CutPrefix(path, "/ws?since_rev=")
	if !ok {
		t.Fatalf("handshake %.80s…: want a since_rev list", path)
	}
	for _, pair := range strings.Split(list, ",") {
		id, rev, _ := strings.Cut(pair, ":")
		n, _ := strconv.ParseInt(id, 10, 64)
		seen[n], _ = strconv.ParseInt(rev, 10, 64)
	}
	inURL := len(seen)
	for len(seen) < len(chats) {
		m := c.read(t)
		id := int64(m["chat_id"].(float64))
		if _, dup := seen[id]; dup || m["type"] != "sync" {
			t.Fatalf("got %v: want a sync of a chat not resumed yet", m)
		}
		seen[id] = int64(m["since_rev"].(float64))
	}
	for _, ch := range chats {
		if seen[ch.ID] != ch.ID+1 {
			t.Fatalf("chat %d resumed from rev %d, want %d", ch.ID, seen[ch.ID], ch.ID+1)
		}
	}
	if inURL < 400 || inURL == len(chats) {
		t.Errorf("%d of %d chats in the URL: want most, not all", inURL, len(chats))
	}
}

// A message above a missing seq waits, and asks for a sync at once; the
// sync is written again after GapTimeout while the seq is still missing.
// The replay's repeat of what waits is dropped; the missing message
// (collapsed at a later rev) is handed first.
func TestConnHoldsBackAboveAGap(t *testing.T) {
	f := newFakeServer(t, withLast(rest.Chat{ID: 5, LastSeq: i64(10)}, 10))
	clock, rec := newFakeClock(), newRecorder()
	conn := dial(t, f.client(t), rec.config(client.Config{Clock: clock, GapTimeout: 5 * time.Second}))

	c := f.next(t)
	c.write(t, newFrame(rmsg(5, 12, 12, "b")))
	wantSync := map[string]any{"type": "sync", "chat_id": 5.0, "since_rev": 10.0}
	if m := c.read(t); !reflect.DeepEqual(m, wantSync) {
		t.Fatalf("got %v, want %v", m, wantSync)
	}
	clock.WaitTimer(t, 5*time.Second) // the gap check
	clock.Advance(5 * time.Second)
	if m := c.read(t); !reflect.DeepEqual(m, wantSync) {
		t.Fatalf("after the gap timeout: got %v, want %v", m, wantSync)
	}
	if got := rec.seqs(5); len(got) != 0 {
		t.Fatalf("delivered %v above a gap", got)
	}
	c.write(t, newFrame(rmsg(5, 12, 12, "b")))        // the replay: waits already
	c.write(t, updated(rmsg(5, 11, 13, "a, edited"))) // created and edited while away
	rec.waitFor(t, "seqs 11 and 12", func() bool { return len(rec.msgs) == 2 })
	if got := rec.seqs(5); !slices.Equal(got, []int64{11, 12}) || rec.msgs[0].Text != "a, edited" || len(rec.updates) != 0 {
		t.Fatalf("got seqs %v (first %q) and %d updates; want 11 (edited) and 12, no update", got, rec.msgs[0].Text, len(rec.updates))
	}
	waitPosition(t, "the", conn, 5, client.Position{Seq: 12, Rev: 13})
	clock.Advance(5 * time.Second)
	c.none(t) // no sync: nothing waits
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
	for _, p := range []*client.Pending{p1, p2} {
		if m := c2.read(t); m["type"] != "message.send" || m["client_msg_id"] != p.ClientMsgID {
			t.Fatalf("got %v, want the send of %q", m, p.ClientMsgID)
		}
	}
	m1, m2 := msg(5, 1, "one"), msg(5, 2, "two")
	m1.ClientMsgID, m2.ClientMsgID = p1.ClientMsgID, p2.ClientMsgID
	// As the server answers: the repeat's ack at once, then the stream in
	// rev order, the first message there too (the ack cannot say where).
	c2.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: p1.ClientMsgID, Duplicate: true, Message: m1})
	c2.write(t, newFrame(m1))
	c2.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: p2.ClientMsgID, Message: m2})

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
	c1.close(client.CloseTokenExpired)
	f.next(t) // no backoff: the new token is there
	f.mu.Lock()
	if got := f.tokens; !slices.Equal(got, []string{"tok-1", "tok-2"}) {
		t.Errorf("handshake tokens: got %v, want [tok-1 tok-2]", got)
	}
	f.mu.Unlock()

	mu.Lock()
	fail = true
	mu.Unlock()
	f.last(t).close(client.CloseTokenExpired)
	waitDone(t, conn)
	if err := conn.Err(); err == nil || err.Error() != "client: token: refresh token revoked" {
		t.Fatalf("Err: got %v, want the TokenFunc's error", err)
	}
	f.none(t)

	// A fixed token cannot be refreshed.
	f2 := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	conn2 := dial(t, f2.client(t), client.Config{Clock: newFakeClock()})
	c := f2.next(t)
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

// Edits, deletes and reaction changes are written in the order made, and
// those made while disconnected after the next resume, behind the ones
// written on the lost socket that the server never answered about;
// refusals (error frames naming a message) reach OnError and leave the
// chat followed; message.updated reaches OnUpdate.
func TestConnChanges(t *testing.T) {
	f := newFakeServer(t, withLast(rest.Chat{ID: 5, LastSeq: i64(3)}, 3))
	clock, rec := newFakeClock(), newRecorder()
	conn := dial(t, f.client(t), rec.config(client.Config{Clock: clock}))
	c1 := f.next(t)

	for _, err := range []error{conn.Edit(5, 1, "fixed"), conn.React(5, 2, "👍"), conn.Unreact(5, 2, "👍"), conn.Delete(5, 3)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []map[string]any{
		{"type": "message.edit", "chat_id": 5.0, "seq": 1.0, "text": "fixed"},
		{"type": "reaction.add", "chat_id": 5.0, "seq": 2.0, "emoji": "👍"},
		{"type": "reaction.remove", "chat_id": 5.0, "seq": 2.0, "emoji": "👍"},
		{"type": "message.delete", "chat_id": 5.0, "seq": 3.0},
	}
	for _, w := range want {
		if m := c1.read(t); !reflect.DeepEqual(m, w) {
			t.Fatalf("got %v, want %v", m, w)
		}
	}
	edited := rmsg(5, 1, 4, "fixed")
	c1.write(t, updated(edited))
	seq := int64(3)
	c1.write(t, rest.ErrorFrame{Type: rest.ErrorFrameTypeError, Code: rest.ErrorFrameCodeForbidden, Message: "not your message", ChatID: i64(5), Seq: &seq})
	rec.waitFor(t, "the update and the refusal", func() bool { return len(rec.updates) == 1 && len(rec.errors) == 1 })
	if rec.updates[0].Text != "fixed" || rec.errors[0].Code != rest.ErrorFrameCodeForbidden || *rec.errors[0].Seq != 3 {
		t.Fatalf("got update %+v and error %v", rec.updates[0], rec.errors[0])
	}
	waitPosition(t, "after a refused delete, the", conn, 5, client.Position{Seq: 3, Rev: 4}) // the chat still followed

	// Made while disconnected: written after the reconnect.
	c1.close(client.CloseGoingAway)
	for conn.State() == client.Connected {
		time.Sleep(time.Millisecond)
	}
	if err := conn.Edit(5, 2, "later"); err != nil {
		t.Fatal(err)
	}
	c2 := reconnectWithin(t, f, clock, 250*time.Millisecond)
	// First the changes the server never answered about (seq 2's reaction
	// added and removed: no message.updated came), then the new edit.
	for _, w := range want[1:3] {
		if m := c2.read(t); !reflect.DeepEqual(m, w) {
			t.Fatalf("got %v, want the unsettled %v written again", m, w)
		}
	}
	if m := c2.read(t); m["type"] != "message.edit" || m["text"] != "later" {
		t.Fatalf("got %v, want the edit made while disconnected", m)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.paths[1]; got != "/ws?since_rev=5:4" {
		t.Errorf("second handshake %s, want /ws?since_rev=5:4", got)
	}
}

// Typing writes at most one frame per chat every 2 s, only while
// connected; the server's typing frames reach OnTyping.
func TestConnTyping(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)}, rest.Chat{ID: 6, LastSeq: i64(0)})
	clock, rec := newFakeClock(), newRecorder()
	conn := dial(t, f.client(t), rec.config(client.Config{Clock: clock}))
	c1 := f.next(t)
	for range 3 {
		if err := conn.Typing(5); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Typing(6); err != nil {
		t.Fatal(err)
	}
	got := map[float64]int{}
	for range 2 {
		m := c1.read(t)
		if m["type"] != "typing" {
			t.Fatalf("got %v, want a typing frame", m)
		}
		got[m["chat_id"].(float64)]++
	}
	if !reflect.DeepEqual(got, map[float64]int{5: 1, 6: 1}) {
		t.Fatalf("typing frames per chat: got %v, want one each", got)
	}
	c1.none(t)
	clock.Advance(client.TypingInterval - time.Millisecond)
	_ = conn.Typing(5)
	c1.none(t)
	clock.Advance(time.Millisecond)
	_ = conn.Typing(5)
	if m := c1.read(t); m["type"] != "typing" || m["chat_id"] != 5.0 {
		t.Fatalf("got %v, want typing in chat 5 again after 2 s", m)
	}

	c1.write(t, rest.TypingEventFrame{Type: rest.TypingEventFrameTypeTyping, ChatID: 5, UserID: 7})
	rec.waitFor(t, "OnTyping", func() bool { return len(rec.typing) == 1 })
	if rec.typing[0] != [2]int64{5, 7} {
		t.Fatalf("OnTyping got %v, want chat 5 user 7", rec.typing[0])
	}

	// Typed while disconnected: never written.
	c1.close(client.CloseGoingAway)
	for conn.State() == client.Connected {
		time.Sleep(time.Millisecond)
	}
	// Chat 6's throttle has passed (2 s since its frame); the clock is not
	// moved here, since moving it could fire the reconnect first.
	_ = conn.Typing(6)
	c2 := reconnectWithin(t, f, clock, 250*time.Millisecond)
	c2.none(t)
}

// waitPosition waits for a chat's position to become want: it moves once
// the application's callbacks for the message have returned, which may be
// just after a recorder in another goroutine has seen it.
func waitPosition(t *testing.T, who string, conn *client.Conn, chatID int64, want client.Position) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := conn.Resume()[chatID]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s position in chat %d: %+v, want %+v", who, chatID, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}
