package client_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// events is a log of what a Conn's callbacks saw, in order.
type events struct {
	mu  sync.Mutex // guards log
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// waitLen waits until the log holds n events.
func (e *events) waitLen(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.get()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got events %q, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// OnConnect sees the handshake's answer of every connection (the
// server's headers, the URL it resumes from) before OnState reports it
// Connected.
func TestConnOnConnect(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(3)})
	clock, ev := newFakeClock(), &events{}
	conn := dial(t, f.client(t), client.Config{
		Clock: clock,
		OnConnect: func(resp *http.Response) {
			ev.add("connect %d %s %s", resp.StatusCode, resp.Header.Get("X-Windi-Replica"), resp.Request.URL.RequestURI())
		},
		OnState: func(s client.State, _ error) { ev.add("%v", s) },
	})
	c1 := f.next(t)
	c1.write(t, newFrame(msg(5, 4, "d")))
	waitPosition(t, "the", conn, 5, client.Position{Seq: 4, Rev: 4})
	c1.close(client.CloseGoingAway)
	reconnectWithin(t, f, clock, 250*time.Millisecond)
	want := []string{
		"connecting", "connect 101 fake-1 /ws?since=5:3", "connected",
		"disconnected", "connecting", "connect 101 fake-2 /ws?since_rev=5:4", "connected",
	}
	if got := ev.waitLen(t, len(want)); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

// Reconnect closes the socket with 1000 and opens a new one at once (no
// backoff), writing the unacked sends again; while the Conn waits to
// reconnect it ends the wait; after Close it does nothing.
func TestConnReconnect(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	clock, bo, ev := newFakeClock(), &fixedBackoff{}, &events{}
	conn := dial(t, f.client(t), client.Config{
		Clock: clock, Backoff: bo.backoff,
		OnState: func(s client.State, err error) {
			if s == client.Disconnected {
				ev.add("%v: %v", s, err)
				return
			}
			ev.add("%v", s)
		},
	})
	c1 := f.next(t)
	p, err := conn.Send(5, "hi")
	if err != nil {
		t.Fatal(err)
	}
	c1.read(t)

	conn.Reconnect()
	c2 := f.next(t) // the fake clock has not moved: no backoff
	if m := c2.read(t); m["type"] != "message.send" || m["client_msg_id"] != p.ClientMsgID {
		t.Fatalf("got %v, want the unacked send of %q again", m, p.ClientMsgID)
	}
	select {
	case _, open := <-c1.in:
		for open {
			_, open = <-c1.in
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old socket was not closed")
	}
	if code := websocket.CloseStatus(c1.end); code != websocket.StatusNormalClosure {
		t.Errorf("the old socket ended with %v (%v), want a close with 1000", code, c1.end)
	}
	want := []string{"connecting", "connected", "disconnected: " + client.ErrReconnect.Error(), "connecting", "connected"}
	if got := ev.waitLen(t, len(want)); !slices.Equal(got, want) {
		t.Errorf("states:\n got %q\nwant %q", got, want)
	}
	if got := bo.got(); len(got) != 0 {
		t.Errorf("backoff asked for attempts %v, want none", got)
	}

	// Lost: the Conn waits Backoff(1) = 1 s; Reconnect cuts it short.
	_ = c2.ws.CloseNow()
	clock.WaitTimer(t, time.Second)
	conn.Reconnect()
	c3 := f.next(t)
	c3.read(t) // the send, once more
	m := msg(5, 1, "hi")
	m.ClientMsgID = p.ClientMsgID
	c3.write(t, rest.MessageAckFrame{Type: rest.MessageAck, ClientMsgID: p.ClientMsgID, Message: m})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a, err := p.Wait(ctx); err != nil || a.Message.Seq != 1 {
		t.Fatalf("send: got %+v, %v; want the ack of seq 1", a, err)
	}

	_ = conn.Close()
	conn.Reconnect()
	f.none(t)
}

// Trace sees each frame the Conn takes just before the calls it causes,
// on the Conn's goroutine: a repeat the Conn drops is traced, and not
// handed on.
func TestConnTraceInOrder(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	ev := &events{}
	dial(t, f.client(t), client.Config{
		Clock:     newFakeClock(),
		OnMessage: func(m rest.Message) { ev.add("message %d", m.Seq) },
		Trace: func(out bool, data []byte) {
			f, err := client.DecodeFrame(data)
			if err != nil {
				ev.add("undecodable %s", data)
				return
			}
			if nf, ok := f.Value.(rest.MessageNewFrame); ok && !out {
				ev.add("read %d", nf.Message.Seq)
			}
		},
	})
	c := f.next(t)
	for _, seq := range []int64{1, 2, 2, 3} {
		c.write(t, newFrame(msg(5, seq, "x")))
	}
	want := []string{"read 1", "message 1", "read 2", "message 2", "read 2", "read 3", "message 3"}
	if got := ev.waitLen(t, len(want)); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

// Close called from a callback (a bot that stops on a command) returns at
// once, and the Conn ends once the callback has returned: it does not wait
// for the goroutine that runs the callback.
func TestConnCloseFromACallback(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	var conn *client.Conn
	ready := make(chan struct{})
	returned := make(chan error, 1)
	closed := make(chan error, 1)
	conn = dial(t, f.client(t), client.Config{
		Clock: newFakeClock(),
		OnMessage: func(rest.Message) {
			<-ready
			returned <- conn.Close()
		},
		OnClose: func(err error) { closed <- err },
	})
	close(ready)
	f.next(t).write(t, newFrame(msg(5, 1, "stop")))
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Close from OnMessage: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close called from OnMessage did not return within 5 s")
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the Conn did not end after Close from a callback")
	}
	if err := <-closed; err != client.ErrClosed {
		t.Fatalf("OnClose got %v, want ErrClosed", err)
	}
}

// An edit or reaction written just before its socket ended, that the
// server never answered about (no message.updated, no error frame for its
// message), is written again first on the next socket: the replica may
// have closed before processing it. One the server answered about, and
// one written more than changeSettleWindow (10 s) before, are not.
func TestConnWritesUnsettledChangesAgain(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(3)})
	clock := newFakeClock()
	conn := dial(t, f.client(t), client.Config{Clock: clock})
	c1 := f.next(t)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(conn.Edit(5, 1, "old, edited"))
	if m := c1.read(t); m["type"] != "message.edit" || m["seq"] != 1.0 {
		t.Fatalf("got %v, want the edit of seq 1", m)
	}
	clock.Advance(11 * time.Second) // the edit of seq 1 is past the window now
	must(conn.React(5, 2, "👍"))
	must(conn.Edit(5, 3, "three, edited"))
	for _, want := range []string{"reaction.add", "message.edit"} {
		if m := c1.read(t); m["type"] != want {
			t.Fatalf("got %v, want %s", m, want)
		}
	}
	// The server answers about seq 3 (applied), not about seq 2.
	c1.write(t, newFrame(msg(5, 4, "four")))
	c1.write(t, updated(rmsg(5, 3, 5, "three, edited")))
	waitPosition(t, "the", conn, 5, client.Position{Seq: 4, Rev: 5})
	clock.Advance(5 * time.Second) // the reaction's first write: 5 s ago
	c1.close(client.CloseGoingAway)

	c2 := reconnectWithin(t, f, clock, 250*time.Millisecond)
	m := c2.read(t)
	if m["type"] != "reaction.add" || m["seq"] != 2.0 || m["emoji"] != "👍" {
		t.Fatalf("first frame on the new socket: got %v, want the unsettled reaction to seq 2", m)
	}
	c2.none(t) // neither the settled edit of seq 3 nor the old one of seq 1

	// Written again, the reaction keeps its first write's time: once that
	// is more than 10 s ago, a lost socket does not bring it back.
	clock.Advance(5500 * time.Millisecond) // 10.5 s after the first write, 5.5 s after the second
	c2.close(client.CloseGoingAway)
	c3 := reconnectWithin(t, f, clock, 250*time.Millisecond)
	c3.none(t)
}

// Close from another goroutine while a callback runs still waits until the
// Conn has ended (OnClose included): only a Close on the Conn's own
// goroutine returns at once.
func TestConnCloseWaitsForARunningCallback(t *testing.T) {
	f := newFakeServer(t, rest.Chat{ID: 5, LastSeq: i64(0)})
	entered, release := make(chan struct{}), make(chan struct{})
	var onClose atomic.Bool
	conn := dial(t, f.client(t), client.Config{
		Clock: newFakeClock(),
		OnMessage: func(rest.Message) {
			close(entered)
			<-release
		},
		OnClose: func(error) { onClose.Store(true) },
	})
	f.next(t).write(t, newFrame(msg(5, 1, "hold")))
	<-entered
	returned := make(chan struct{})
	go func() {
		_ = conn.Close()
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Close returned while a callback still ran on the Conn's goroutine")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the callback did")
	}
	if !onClose.Load() {
		t.Fatal("Close returned before OnClose ran")
	}
}
