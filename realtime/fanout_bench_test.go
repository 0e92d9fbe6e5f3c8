package realtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/event"
	"github.com/windi-chat/windi/repo"
)

// BenchmarkFanOut1000 delivers messages to one group of 1,000 members,
// each with one WebSocket connection, on a real in-process server
// (embedded SQLite, in-process broker) over loopback. One op is one message
// delivered to all 1,000 connections, in seq order, exactly once (checked):
//
//   - publish: the envelope of an already stored message published on the
//     broker, so the hub's fan-out, the connections' state machines and
//     writers, the sockets and the clients; no database on the way.
//   - send/senders=N: message.send frames from N of the members'
//     connections (round-robin) through the chat rules and the per-chat
//     sequencer, then the same fan-out; the sending connection gets
//     message.ack, the 999 others message.new. With several senders,
//     messages can reach the broker out of seq order; a connection that
//     sees a gap for longer than the hold-back reads it from the database,
//     so senders=4 also measures that.
//
// At most fanOutWindow messages are in flight (published or sent, not yet
// at every connection), so ns/op is the pipelined cost of one fan-out, not
// one message's latency. B/op and allocs/op count the whole process: the
// server and the 1,000 client readers.
//
//	go test -run '^$' -bench FanOut1000 -benchmem ./realtime/
func BenchmarkFanOut1000(b *testing.B) {
	f := newFanOut(b, 1000)

	b.Run("publish", func(b *testing.B) {
		msgs := f.store(b, b.N)
		run := f.start(msgs[0].Seq-1, len(msgs))
		b.ReportAllocs()
		b.ResetTimer()
		for i, m := range msgs {
			f.await(b, run, i+1-fanOutWindow)
			env := event.Envelope{Kind: event.Messages, ChatID: m.ChatID, SentAt: time.Now().UnixNano(),
				Items: []event.Item{{Rev: m.Rev, CreatedRev: m.CreatedRev, Seq: m.Seq, Sender: m.SenderID, CMID: m.ClientMsgID, Msg: mustJSON(m.API())}}}
			if err := f.srv.Broker.Publish(f.ctx, event.ChatChannel(m.ChatID), env.Encode()); err != nil {
				b.Fatal(err)
			}
		}
		f.await(b, run, len(msgs))
		b.StopTimer()
		f.report(b)
	})

	for _, senders := range []int{1, 4} {
		b.Run(fmt.Sprintf("send/senders=%d", senders), func(b *testing.B) { f.send(b, senders) })
	}
}

const (
	fanOutWindow = 64               // messages in flight at most
	fanOutWait   = 30 * time.Second // longest wait for any step
)

var (
	fanOutNew   = []byte(`{"type":"message.new",`)
	fanOutAck   = []byte(`{"type":"message.ack",`)
	fanOutError = []byte(`{"type":"error",`)
	fanOutSeq   = []byte(`"seq":`)
)

// fanOut is the fixture: a server, one group and one connection per member.
type fanOut struct {
	ctx    context.Context
	srv    *apptest.Server
	owner  int64
	chatID int64
	conns  []*fanOutConn
	run    atomic.Pointer[fanOutRun]
	runs   int
	failed atomic.Pointer[string]
}

type fanOutConn struct {
	id   int
	ws   *client.Socket
	last int64 // highest seq delivered; owned by the reader
	done chan struct{}
}

// fanOutRun counts, per message of a run, the connections it reached.
type fanOutRun struct {
	base     int64 // seq before the run's first message
	reached  []atomic.Int32
	complete atomic.Int64 // messages at every connection
	signal   chan struct{}
}

func newFanOut(b *testing.B, n int) *fanOut {
	b.Helper()
	t0 := time.Now()
	env := apptest.NewEnv(b, "sqlite")
	srv := env.StartMain(b, func(m *app.Main) {
		// Production's log level and format, into the void (apptest keeps
		// every debug line in memory).
		m.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	f := &fanOut{ctx: context.Background(), srv: srv}

	// Users through the service (no HTTP: setup time only).
	tokens := make([]string, n)
	ids := make([]int64, n)
	if err := fanOutParallel(n, 8, func(i int) error {
		email := fmt.Sprintf("fan%d-%s@example.com", i, apptest.RandomID())
		u, err := srv.Service.Register(f.ctx, fmt.Sprintf("Fan %d", i), email, "password-123")
		if err != nil {
			return err
		}
		lr, err := srv.Service.Login(f.ctx, email, "password-123", "")
		ids[i], tokens[i] = u.ID, lr.Token
		return err
	}); err != nil {
		b.Fatalf("register: %v", err)
	}
	f.owner = ids[0]

	// Connections on /ws before the group exists, so that nobody's
	// presence is broadcast to the group: n connections coming online in
	// one group would send ~n²/2 presence frames.
	f.conns = make([]*fanOutConn, n)
	if err := fanOutParallel(n, 32, func(i int) error {
		ctx, cancel := context.WithTimeout(f.ctx, fanOutWait)
		defer cancel()
		ws, _, err := srv.SDK.DialSocket(ctx, "/ws?token="+tokens[i], client.SocketOptions{})
		if err != nil {
			return err
		}
		f.conns[i] = &fanOutConn{id: i, ws: ws, done: make(chan struct{})}
		return nil
	}); err != nil {
		b.Fatalf("dial: %v", err)
	}
	b.Cleanup(func() {
		srv.Stop() // closes every connection (1001) before the clients go
		for _, c := range f.conns {
			if c != nil {
				_ = c.ws.CloseNow()
				<-c.done
			}
		}
	})
	for _, c := range f.conns {
		go f.read(c)
	}

	// The group straight in the store (no member_added storm either), then
	// every connection follows it with a sync frame.
	g, err := srv.Store.CreateGroup(f.ctx, "fan-out", f.owner, ids[1:])
	if err != nil {
		b.Fatal(err)
	}
	f.chatID = g.ID
	syncFrame := fmt.Appendf(nil, `{"type":"sync","chat_id":%d,"since_seq":0}`, g.ID)
	if err := fanOutParallel(n, 32, func(i int) error {
		return f.conns[i].ws.WriteRaw(f.ctx, syncFrame)
	}); err != nil {
		b.Fatalf("sync: %v", err)
	}
	// A first message through the service: every connection gets it from
	// the hub, or from the database if its sync was not through yet.
	run := f.start(0, 1)
	if _, _, err := srv.Service.Send(f.ctx, f.owner, g.ID, "warm-up", "hello", nil); err != nil {
		b.Fatal(err)
	}
	f.await(b, run, 1)
	b.Logf("fixture: %d users, %d connections in one group, ready in %v", n, n, time.Since(t0).Round(time.Millisecond))
	return f
}

// send sends b.N message.send frames round-robin from the first senders
// connections and waits until every connection has every message.
func (f *fanOut) send(b *testing.B, senders int) {
	ch, err := f.srv.Store.ChatByID(f.ctx, f.chatID)
	if err != nil {
		b.Fatal(err)
	}
	run := f.start(ch.LastSeq, b.N)
	f.runs++
	text := strings.Repeat("x", 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f.await(b, run, i+1-fanOutWindow)
		frame := fmt.Appendf(nil, `{"type":"message.send","chat_id":%d,"client_msg_id":"r%d-%d","text":%q}`, f.chatID, f.runs, i, text)
		wctx, cancel := context.WithTimeout(f.ctx, fanOutWait)
		err := f.conns[i%senders].ws.WriteRaw(wctx, frame)
		cancel()
		if err != nil {
			b.Fatalf("send %d: %v", i, err)
		}
	}
	f.await(b, run, b.N)
	b.StopTimer()
	f.report(b)
}

// store inserts n messages from the owner without any event and returns
// them as the service would hand them to the hub.
func (f *fanOut) store(b *testing.B, n int) []chat.Message {
	b.Helper()
	f.runs++
	out := make([]chat.Message, 0, n)
	text := strings.Repeat("x", 100)
	for len(out) < n {
		reqs := make([]repo.SendRequest, min(100, n-len(out)))
		for i := range reqs {
			reqs[i] = repo.SendRequest{ChatID: f.chatID, SenderID: f.owner, ClientMsgID: fmt.Sprintf("p%d-%d", f.runs, len(out)+i), Text: text}
		}
		res, err := f.srv.Store.InsertMessages(f.ctx, reqs, repo.InsertOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil || r.Duplicate {
				b.Fatalf("insert: %+v", r)
			}
			out = append(out, chat.Message{Message: r.Message})
		}
	}
	return out
}

// start begins counting the n messages after seq base.
func (f *fanOut) start(base int64, n int) *fanOutRun {
	r := &fanOutRun{base: base, reached: make([]atomic.Int32, n), signal: make(chan struct{}, 1)}
	f.run.Store(r)
	return r
}

// await waits until the first n messages of run reached every connection.
func (f *fanOut) await(b *testing.B, run *fanOutRun, n int) {
	if n <= 0 || run.complete.Load() >= int64(n) {
		return
	}
	timer := time.NewTimer(fanOutWait)
	defer timer.Stop()
	for run.complete.Load() < int64(n) {
		if msg := f.failed.Load(); msg != nil {
			b.Fatal(*msg)
		}
		select {
		case <-run.signal:
		case <-timer.C:
			b.Fatalf("only %d of %d messages reached all %d connections within %v", run.complete.Load(), n, len(f.conns), fanOutWait)
		}
	}
	if msg := f.failed.Load(); msg != nil {
		b.Fatal(*msg)
	}
}

func (f *fanOut) report(b *testing.B) {
	n := float64(b.N) * float64(len(f.conns))
	b.ReportMetric(n/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/delivery")
}

func (f *fanOut) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.failed.CompareAndSwap(nil, &msg)
}

// read counts the message frames one connection receives and checks that
// their seqs follow each other. It reads raw into one buffer and looks for
// the seq by hand, so that the 1,000 readers add no allocations and little
// CPU to what the benchmark measures of the server.
func (f *fanOut) read(c *fanOutConn) {
	defer close(c.done)
	buf := make([]byte, 0, 1024)
	for {
		var err error
		if buf, err = c.ws.ReadRaw(context.Background(), buf); err != nil {
			return
		}
		switch {
		case bytes.HasPrefix(buf, fanOutNew), bytes.HasPrefix(buf, fanOutAck):
			i := bytes.Index(buf, fanOutSeq)
			if i < 0 {
				f.fail("conn %d: frame without a seq: %s", c.id, buf)
				continue
			}
			j := i + len(fanOutSeq)
			for j < len(buf) && buf[j] >= '0' && buf[j] <= '9' {
				j++
			}
			seq, _ := strconv.ParseInt(string(buf[i+len(fanOutSeq):j]), 10, 64)
			if seq != c.last+1 {
				f.fail("conn %d: seq %d after %d", c.id, seq, c.last)
			}
			c.last = seq
			if run := f.run.Load(); run != nil {
				if k := seq - run.base - 1; k >= 0 && k < int64(len(run.reached)) {
					if run.reached[k].Add(1) == int32(len(f.conns)) {
						run.complete.Add(1)
						select {
						case run.signal <- struct{}{}:
						default:
						}
					}
				}
			}
		case bytes.HasPrefix(buf, fanOutError):
			f.fail("conn %d: %s", c.id, buf)
		}
	}
}

// fanOutParallel runs fn(0..n-1) on at most workers goroutines and returns
// the first error.
func fanOutParallel(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Pointer[error]
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return *err
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
