package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// SPEC §11 through the Go client against real servers, both dialects:
// replies, edits, deletes, reactions and typing between two replicas, and
// a resume by revision after a cut connection.

// states folds what a recorder got for chatID into each message's latest
// state, by seq.
func states(rec *recorder, chatID int64) map[int64]rest.Message {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := map[int64]rest.Message{}
	for _, m := range append(slices.Clone(rec.msgs), rec.updates...) {
		if m.ChatID == chatID && m.Rev >= out[m.Seq].Rev {
			out[m.Seq] = m
		}
	}
	return out
}

// checkRevs fails when a recorder got one revision of chatID twice, or
// updates out of revision order.
func checkRevs(t *testing.T, who string, rec *recorder, chatID int64) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := map[int64]bool{}
	var last int64
	for _, m := range rec.updates {
		if m.ChatID != chatID {
			continue
		}
		if m.Rev <= last {
			t.Fatalf("%s: update of seq %d at rev %d after rev %d: want increasing revs", who, m.Seq, m.Rev, last)
		}
		last = m.Rev
		seen[m.Rev] = true
	}
	for _, m := range rec.msgs {
		if m.ChatID == chatID && seen[m.Rev] {
			t.Fatalf("%s: rev %d delivered twice (seq %d)", who, m.Rev, m.Seq)
		}
		seen[m.Rev] = true
	}
}

// waitState waits until the recorder holds seq of chatID in a state ok
// accepts.
func waitState(t *testing.T, who string, rec *recorder, chatID, seq int64, what string, ok func(m rest.Message) bool) rest.Message {
	t.Helper()
	var got rest.Message
	rec.waitFor(t, fmt.Sprintf("%s: seq %d %s", who, seq, what), func() bool {
		// Called under rec.mu: fold by hand.
		var best rest.Message
		for _, m := range append(slices.Clone(rec.msgs), rec.updates...) {
			if m.ChatID == chatID && m.Seq == seq && m.Rev >= best.Rev {
				best = m
			}
		}
		got = best
		return best.Seq == seq && ok(best)
	})
	return got
}

func reactionsOf(m rest.Message) string {
	var parts []string
	for _, r := range m.Reactions {
		parts = append(parts, fmt.Sprintf("%s%v", r.Emoji, r.UserIds))
	}
	return strings.Join(parts, " ")
}

func TestConnConversation(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s1, s2 := env.Start(t), env.Start(t)
		alice, bob := s1.NewUser(t, "Alice"), s2.NewUser(t, "Bob")
		ctx := context.Background()
		ac, bc := sdkClient(t, s1.URL, alice), sdkClient(t, s2.URL, bob)
		group, err := ac.CreateGroup(ctx, "conversation", bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		var bobTyped atomic.Int32
		bobTrace := func(out bool, data []byte) {
			specTrace(t, s2)(out, data)
			if out && strings.Contains(string(data), `"type":"typing"`) {
				bobTyped.Add(1)
			}
		}
		arec, brec := newRecorder(), newRecorder()
		aconn := dial(t, ac, arec.config(client.Config{Trace: specTrace(t, s1)}))
		bconn := dial(t, bc, brec.config(client.Config{ChatID: group.ID, Trace: bobTrace}))

		// A message and a reply to it, across replicas.
		hello := waitAll(t, []*client.Pending{must(aconn.Send(group.ID, "hello"))})[0].Message
		reply := waitAll(t, []*client.Pending{must(bconn.SendWith(group.ID, "hi back", client.SendOptions{ReplyToSeq: hello.Seq}))})[0].Message
		if reply.ReplyToSeq == nil || *reply.ReplyToSeq != hello.Seq {
			t.Fatalf("reply: reply_to_seq %v, want %d", reply.ReplyToSeq, hello.Seq)
		}
		checkStream(t, "alice", arec, group.ID, 2)
		if m := arec.msgs[1]; m.ReplyToSeq == nil || *m.ReplyToSeq != hello.Seq {
			t.Fatalf("alice got the reply with reply_to_seq %v, want %d", m.ReplyToSeq, hello.Seq)
		}
		// A reply to a seq that does not exist fails its send.
		var fe *client.FrameError
		if _, err := must(aconn.SendWith(group.ID, "to nothing", client.SendOptions{ReplyToSeq: 99})).Wait(ctx); !errors.As(err, &fe) || fe.Code != rest.ErrorFrameCodeBadRequest {
			t.Fatalf("reply to seq 99: got %v, want bad_request", err)
		}

		// Alice edits; both see it once.
		if err := aconn.Edit(group.ID, hello.Seq, "hello, world"); err != nil {
			t.Fatal(err)
		}
		for who, rec := range map[string]*recorder{"alice": arec, "bob": brec} {
			m := waitState(t, who, rec, group.ID, hello.Seq, "edited", func(m rest.Message) bool { return m.Text == "hello, world" })
			if m.EditedAt == nil {
				t.Fatalf("%s: edited message without edited_at", who)
			}
		}

		// Reactions from both; Bob takes his back.
		must0(t, bconn.React(group.ID, hello.Seq, "👍"))
		waitState(t, "alice", arec, group.ID, hello.Seq, "with 👍", func(m rest.Message) bool { return reactionsOf(m) == fmt.Sprintf("👍[%d]", bob.ID) })
		must0(t, aconn.React(group.ID, hello.Seq, "🎉"))
		must0(t, bconn.Unreact(group.ID, hello.Seq, "👍"))
		for who, rec := range map[string]*recorder{"alice": arec, "bob": brec} {
			waitState(t, who, rec, group.ID, hello.Seq, "with 🎉 only", func(m rest.Message) bool { return reactionsOf(m) == fmt.Sprintf("🎉[%d]", alice.ID) })
		}

		// Bob may not delete Alice's message; the owner may delete Bob's.
		must0(t, bconn.Delete(group.ID, hello.Seq))
		brec.waitFor(t, "bob: forbidden", func() bool { return len(brec.errors) == 1 })
		if e := brec.errors[0]; e.Code != rest.ErrorFrameCodeForbidden || e.Seq == nil || *e.Seq != hello.Seq || *e.ChatID != group.ID {
			t.Fatalf("bob deleting alice's message: got %v, want forbidden naming chat %d seq %d", e, group.ID, hello.Seq)
		}
		must0(t, aconn.Delete(group.ID, reply.Seq))
		for who, rec := range map[string]*recorder{"alice": arec, "bob": brec} {
			m := waitState(t, who, rec, group.ID, reply.Seq, "deleted", func(m rest.Message) bool { return m.Deleted })
			if m.Text != "" || len(m.Reactions) != 0 || m.Seq != reply.Seq {
				t.Fatalf("%s: tombstone %+v: want empty text, no reactions, the same seq", who, m)
			}
		}
		// Changing a deleted message is refused; deleting it again changes
		// nothing (no update: the next one Bob sees is Alice's new message).
		must0(t, bconn.Edit(group.ID, reply.Seq, "undo"))
		brec.waitFor(t, "bob: bad_request", func() bool { return len(brec.errors) == 2 })
		if e := brec.errors[1]; e.Code != rest.ErrorFrameCodeBadRequest || *e.Seq != reply.Seq {
			t.Fatalf("editing a deleted message: got %v, want bad_request naming seq %d", e, reply.Seq)
		}
		updates := len(brec.updates)
		must0(t, aconn.Delete(group.ID, reply.Seq))
		last := waitAll(t, []*client.Pending{must(aconn.Send(group.ID, "after the second delete"))})[0].Message
		checkStream(t, "bob", brec, group.ID, int(last.Seq))
		if got := len(brec.updates); got != updates {
			t.Fatalf("a second delete sent %d updates, want none", got-updates)
		}

		// 20 distinct emoji at most.
		for i := range 20 {
			must0(t, aconn.React(group.ID, last.Seq, fmt.Sprintf("e%d", i)))
		}
		waitState(t, "bob", brec, group.ID, last.Seq, "with 20 emoji", func(m rest.Message) bool { return len(m.Reactions) == 20 })
		must0(t, aconn.React(group.ID, last.Seq, "e20"))
		arec.waitFor(t, "alice: the 21st emoji refused", func() bool { return len(arec.errors) == 1 })
		if e := arec.errors[0]; e.Code != rest.ErrorFrameCodeBadRequest || *e.Seq != last.Seq {
			t.Fatalf("21st emoji: got %v, want bad_request naming seq %d", e, last.Seq)
		}

		// Typing: Alice sees Bob's, once however often he calls; Bob never
		// sees his own.
		for range 5 {
			must0(t, bconn.Typing(group.ID))
		}
		arec.waitFor(t, "alice: bob typing", func() bool { return len(arec.typing) == 1 })
		if got := arec.typing[0]; got != [2]int64{group.ID, bob.ID} {
			t.Fatalf("alice OnTyping: got %v, want chat %d user %d", got, group.ID, bob.ID)
		}
		if n := bobTyped.Load(); n != 1 {
			t.Fatalf("bob wrote %d typing frames for 5 calls within 2 s, want 1", n)
		}

		// Everyone ends in the same states as the store, each revision once.
		hist, err := ac.History(ctx, group.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		for who, rec := range map[string]*recorder{"alice": arec, "bob": brec} {
			checkRevs(t, who, rec, group.ID)
			got := states(rec, group.ID)
			for _, m := range hist {
				if g := got[m.Seq]; g.Rev != m.Rev || g.Text != m.Text || g.Deleted != m.Deleted || reactionsOf(g) != reactionsOf(m) {
					t.Fatalf("%s: seq %d is %+v, the store has %+v", who, m.Seq, g, m)
				}
			}
		}
		if len(brec.typing) != 0 {
			t.Fatalf("bob saw typing %v: his own must not come back", brec.typing)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func must0(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// cutProxy forwards TCP connections to a server until cut: then it drops
// every connection and refuses new ones until restored.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // guards the fields below
	down  bool
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			if down {
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// Bob's connection is cut while Alice edits, reacts, sends, deletes and
// edits the new message. Resumed by revision, Bob gets the new message
// (in its edited state) and each change of an older one, once, in order;
// resumed by seq (ResumeBySeq), the new message only.
func TestConnResumesByRevision(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		for _, bySeq := range []bool{false, true} {
			t.Run(map[bool]string{false: "since_rev", true: "since_seq"}[bySeq], func(t *testing.T) {
				s := env.Start(t)
				alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
				ctx := context.Background()
				proxy := newCutProxy(t, hostOf(s))
				ac, bc := sdkClient(t, s.URL, alice), sdkClient(t, proxy.URL(), bob)
				group, err := ac.CreateGroup(ctx, "away", bob.ID)
				if err != nil {
					t.Fatal(err)
				}
				arec, brec := newRecorder(), newRecorder()
				aconn := dial(t, ac, arec.config(client.Config{Trace: specTrace(t, s)}))
				var paths []string
				var pmu sync.Mutex
				bcfg := brec.config(client.Config{Trace: specTrace(t, s), ResumeBySeq: bySeq, Backoff: client.ExponentialBackoff(20*time.Millisecond, 100*time.Millisecond)})
				bcfg.OnState = func(st client.State, _ error) {
					if st == client.Connected {
						pmu.Lock()
						paths = append(paths, "connected")
						pmu.Unlock()
					}
				}
				bconn := dial(t, bc, bcfg)
				var ps []*client.Pending
				for _, text := range []string{"one", "two", "three"} {
					ps = append(ps, must(aconn.Send(group.ID, text)))
				}
				waitAll(t, ps)
				checkStream(t, "bob", brec, group.ID, 3)

				proxy.cut()
				for bconn.State() == client.Connected {
					time.Sleep(time.Millisecond)
				}
				must0(t, aconn.Edit(group.ID, 1, "one, edited"))
				must0(t, aconn.React(group.ID, 2, "👍"))
				four := waitAll(t, []*client.Pending{must(aconn.Send(group.ID, "four"))})[0].Message
				must0(t, aconn.Delete(group.ID, 3))
				must0(t, aconn.Edit(group.ID, four.Seq, "four, edited"))
				waitState(t, "alice", arec, group.ID, four.Seq, "edited", func(m rest.Message) bool { return m.Text == "four, edited" })
				updatesBefore := len(brec.updates)
				proxy.restore()

				checkStream(t, "bob", brec, group.ID, 4)
				if got := waitState(t, "bob", brec, group.ID, 4, "", func(rest.Message) bool { return true }); got.Text != "four, edited" {
					t.Fatalf("bob got seq 4 as %q, want its state after the edit", got.Text)
				}
				// A sentinel: everything before it has arrived.
				sentinel := waitAll(t, []*client.Pending{must(aconn.Send(group.ID, "sentinel"))})[0].Message
				checkStream(t, "bob", brec, group.ID, int(sentinel.Seq))
				brec.mu.Lock()
				var got []string
				for _, m := range brec.updates[updatesBefore:] {
					got = append(got, fmt.Sprintf("%d:%q:%v:%s", m.Seq, m.Text, m.Deleted, reactionsOf(m)))
				}
				brec.mu.Unlock()
				want := []string{`1:"one, edited":false:`, fmt.Sprintf(`2:"two":false:👍[%d]`, alice.ID), `3:"":true:`}
				if bySeq {
					want = nil // new messages only
				}
				if !slices.Equal(got, want) {
					t.Fatalf("bob's updates after the reconnect: got %v, want %v", got, want)
				}
				checkRevs(t, "bob", brec, group.ID)
				waitPosition(t, "bob's", bconn, group.ID, client.Position{Seq: sentinel.Seq, Rev: sentinel.Rev})
				pmu.Lock()
				defer pmu.Unlock()
				if len(paths) < 2 {
					t.Fatalf("bob connected %d times, want a reconnect", len(paths))
				}
			})
		}
	})
}
