package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// These tests run the client against real servers (app/apptest) on both
// dialects; every frame the client reads or writes is checked against
// api/openapi.yaml through Config.Trace, and the servers check every
// response they send.

// specTrace checks frames against the spec of s.
func specTrace(t *testing.T, s *apptest.Server) func(out bool, data []byte) {
	return func(out bool, data []byte) {
		check := s.Spec.CheckServerFrame
		if out {
			check = s.Spec.CheckClientFrame
		}
		if err := check(data); err != nil {
			t.Errorf("frame %s: %v", data, err)
		}
	}
}

func sdkClient(t *testing.T, base string, u apptest.User, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(base, append([]client.Option{client.WithToken(u.Token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// router is an HTTP client that sends every connection to the first of
// addrs that accepts it, as a proxy would: once a replica stops, its
// clients land on the next.
func router(addrs ...string) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var err error
			for _, a := range addrs {
				c, e := d.DialContext(ctx, network, a)
				if e == nil {
					return c, nil
				}
				err = e
			}
			return nil, err
		},
	}}
}

func hostOf(s *apptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// checkStream fails unless chat's messages arrived as seqs 1..n, once each.
func checkStream(t *testing.T, who string, rec *recorder, chatID int64, n int) {
	t.Helper()
	rec.waitFor(t, fmt.Sprintf("%s: %d messages", who, n), func() bool {
		c := 0
		for _, m := range rec.msgs {
			if m.ChatID == chatID {
				c++
			}
		}
		return c >= n
	})
	got := rec.seqs(chatID)
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("%s: message %d has seq %d (seqs %v): want 1..%d once each, in order", who, i, s, got, n)
		}
	}
	if len(got) != n {
		t.Fatalf("%s: got %d messages, want %d", who, len(got), n)
	}
}

func waitAll(t *testing.T, ps []*client.Pending) []rest.MessageAckFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acks := make([]rest.MessageAckFrame, len(ps))
	for i, p := range ps {
		a, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("send %d (%s): %v", i, p.ClientMsgID, err)
		}
		acks[i] = a
	}
	return acks
}

func TestConnWithServer(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		ctx := context.Background()
		ac, bc := sdkClient(t, s.URL, alice), sdkClient(t, s.URL, bob)
		group, err := ac.CreateGroup(ctx, "SDK", bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		if me, err := bc.Me(ctx); err != nil || me.ID != bob.ID {
			t.Fatalf("me: got %v, %v", me, err)
		}

		arec, brec := newRecorder(), newRecorder()
		aconn := dial(t, ac, arec.config(client.Config{Trace: specTrace(t, s)}))
		bconn := dial(t, bc, brec.config(client.Config{ChatID: group.ID, Trace: specTrace(t, s)}))

		var ps []*client.Pending
		for i := range 30 {
			p, err := aconn.Send(group.ID, fmt.Sprintf("message %d", i))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		for i, a := range waitAll(t, ps) {
			if a.Duplicate || a.Message.Seq != int64(i+1) || a.Message.Text != fmt.Sprintf("message %d", i) || a.Message.SenderID != alice.ID {
				t.Fatalf("ack %d: got %+v", i, a)
			}
		}
		checkStream(t, "alice (own acks, /ws)", arec, group.ID, 30)
		checkStream(t, "bob (/ws/{chat_id})", brec, group.ID, 30)

		// The same client_msg_id again: stored once, acked as a duplicate.
		again, err := aconn.SendWithID(group.ID, ps[3].ClientMsgID, "message 3")
		if err != nil {
			t.Fatal(err)
		}
		if a := waitAll(t, []*client.Pending{again})[0]; !a.Duplicate || a.Message.Seq != 4 {
			t.Fatalf("repeat: got %+v, want a duplicate ack of seq 4", a)
		}

		// Bob reads; Alice hears of it.
		if err := bconn.MarkRead(group.ID, 30); err != nil {
			t.Fatal(err)
		}
		arec.waitFor(t, "alice: chat.read 30", func() bool {
			for _, f := range arec.frames {
				if v, ok := f.Value.(rest.ChatReadFrame); ok && v.ChatID == group.ID && v.Seq == 30 {
					return true
				}
			}
			return false
		})
		if got := bconn.Positions()[group.ID]; got != 30 {
			t.Errorf("bob's position: got %d, want 30", got)
		}

		// An error frame about a send reaches its Pending.
		p, err := aconn.Send(group.ID, "   ")
		if err != nil {
			t.Fatal(err)
		}
		var fe *client.FrameError
		if _, err := p.Wait(ctx); !errors.As(err, &fe) || fe.Code != rest.ErrorFrameCodeBadRequest || *fe.ClientMsgID != p.ClientMsgID {
			t.Fatalf("blank text: got %v, want a bad_request error frame naming the send", err)
		}
	})
}

// Two replicas; the one Alice and Bob are connected to stops (1001) while
// Alice and Carol send, and edit and react to every fifth message of
// theirs. Every send is stored once, every connection sees every message
// once, in order, and every change at most once, in order, with nothing
// lost: each ends with the store's final states.
func TestConnSurvivesAReplicaStop(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s1 := env.Start(t)
		s2 := env.Start(t)
		alice, bob, carol := s1.NewUser(t, "Alice"), s1.NewUser(t, "Bob"), s2.NewUser(t, "Carol")
		ctx := context.Background()
		routed := client.WithHTTPClient(router(hostOf(s1), hostOf(s2)))
		const base = "http://windi.test"
		ac, bc := sdkClient(t, base, alice, routed), sdkClient(t, base, bob, routed)
		cc := sdkClient(t, s2.URL, carol)
		group, err := ac.CreateGroup(ctx, "failover", bob.ID, carol.ID)
		if err != nil {
			t.Fatal(err)
		}
		var reconnects atomic.Int32
		onState := func(s client.State, _ error) {
			if s == client.Disconnected {
				reconnects.Add(1)
			}
		}
		arec, brec, crec := newRecorder(), newRecorder(), newRecorder()
		acfg := arec.config(client.Config{Trace: specTrace(t, s2)})
		acfg.OnState = onState
		bcfg := brec.config(client.Config{Trace: specTrace(t, s2)})
		bcfg.OnState = onState
		aconn := dial(t, ac, acfg)
		dial(t, bc, bcfg)
		cconn := dial(t, cc, crec.config(client.Config{Trace: specTrace(t, s2)}))

		const each = 60
		var mu sync.Mutex
		sent := map[string][]*client.Pending{}
		var wg sync.WaitGroup
		stopAt := make(chan struct{})
		for _, who := range []struct {
			name string
			conn *client.Conn
		}{{"alice", aconn}, {"carol", cconn}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					p, err := who.conn.Send(group.ID, fmt.Sprintf("%s %d", who.name, i))
					if err != nil {
						t.Errorf("%s send %d: %v", who.name, i, err)
						return
					}
					mu.Lock()
					sent[who.name] = append(sent[who.name], p)
					mu.Unlock()
					if who.name == "alice" && i == each/3 {
						close(stopAt)
					}
					if i%5 == 0 {
						// Changes need the seq: wait for the ack (through
						// the stop, for Alice), then edit and react.
						ack, err := p.Wait(ctx)
						if err != nil {
							t.Errorf("%s send %d: %v", who.name, i, err)
							return
						}
						seq := ack.Message.Seq
						if err := who.conn.Edit(group.ID, seq, fmt.Sprintf("%s %d, edited", who.name, i)); err != nil {
							t.Errorf("%s edit %d: %v", who.name, i, err)
						}
						if err := who.conn.React(group.ID, seq, "👍"); err != nil {
							t.Errorf("%s react %d: %v", who.name, i, err)
						}
					}
					time.Sleep(2 * time.Millisecond) // spread the sends over the stop
				}
			}()
		}
		<-stopAt
		s1.Stop()
		wg.Wait()

		mu.Lock()
		all := append(append([]*client.Pending{}, sent["alice"]...), sent["carol"]...)
		mu.Unlock()
		seqs := map[int64]string{}
		for _, a := range waitAll(t, all) {
			if prev, ok := seqs[a.Message.Seq]; ok && prev != a.ClientMsgID {
				t.Fatalf("seq %d acked for two sends", a.Message.Seq)
			}
			seqs[a.Message.Seq] = a.ClientMsgID
		}
		if len(seqs) != 2*each {
			t.Fatalf("%d distinct seqs acked, want %d", len(seqs), 2*each)
		}
		checkStream(t, "alice", arec, group.ID, 2*each)
		checkStream(t, "bob", brec, group.ID, 2*each)
		checkStream(t, "carol", crec, group.ID, 2*each)
		if reconnects.Load() < 2 {
			t.Fatalf("%d reconnects, want Alice and Bob to have reconnected", reconnects.Load())
		}

		// The store agrees: each send once, and every edit and reaction
		// there (the last changes may still be on their way).
		var hist []rest.Message
		wantEdited := 2 * ((each + 4) / 5)
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			first, err := cc.History(ctx, group.ID, &rest.GetHistoryParams{Limit: ptr(100)})
			if err != nil {
				t.Fatal(err)
			}
			more, err := cc.History(ctx, group.ID, &rest.GetHistoryParams{Limit: ptr(100), AfterSeq: ptr(int64(100))})
			if err != nil {
				t.Fatal(err)
			}
			hist = append(first, more...)
			edited, reacted := 0, 0
			for _, m := range hist {
				if strings.HasSuffix(m.Text, ", edited") {
					edited++
				}
				if reactionsOf(m) == fmt.Sprintf("👍[%d]", m.SenderID) {
					reacted++
				}
			}
			if edited == wantEdited && reacted == wantEdited {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d messages edited and %d reacted to, want %d each: a change was lost", edited, reacted, wantEdited)
			}
		}
		cmids := map[string]bool{}
		for _, m := range hist {
			if cmids[m.ClientMsgID] {
				t.Fatalf("client_msg_id %s stored twice", m.ClientMsgID)
			}
			cmids[m.ClientMsgID] = true
		}
		if len(hist) != 2*each {
			t.Fatalf("history holds %d messages, want %d", len(hist), 2*each)
		}
		// Every connection ends with the store's states, each revision
		// seen at most once and the changes in order.
		for _, who := range []struct {
			name string
			rec  *recorder
		}{{"alice", arec}, {"bob", brec}, {"carol", crec}} {
			who.rec.waitFor(t, who.name+": the final states", func() bool {
				got := map[int64]rest.Message{}
				for _, m := range append(slices.Clone(who.rec.msgs), who.rec.updates...) {
					if m.Rev >= got[m.Seq].Rev {
						got[m.Seq] = m
					}
				}
				for _, m := range hist {
					if g := got[m.Seq]; g.Rev != m.Rev || g.Text != m.Text || reactionsOf(g) != reactionsOf(m) {
						return false
					}
				}
				return true
			})
			checkRevs(t, who.name, who.rec, group.ID)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// Removed from a group: a per-chat Conn ends with 4403, a /ws Conn gets
// member.removed and stays.
func TestConnRemovedFromChat(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		ctx := context.Background()
		ac, bc := sdkClient(t, s.URL, alice), sdkClient(t, s.URL, bob)
		group, err := ac.CreateGroup(ctx, "leaving", bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		perChat, all := newRecorder(), newRecorder()
		pconn := dial(t, bc, perChat.config(client.Config{ChatID: group.ID, Trace: specTrace(t, s)}))
		wconn := dial(t, bc, all.config(client.Config{Trace: specTrace(t, s)}))

		r, err := ac.REST.RemoveGroupMemberWithResponse(ctx, group.ID, bob.ID)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("remove bob: %v %s", err, r.Body)
		}
		waitDone(t, pconn)
		var ce *client.CloseError
		if err := pconn.Err(); !errors.As(err, &ce) || ce.Code != client.CloseRemoved {
			t.Fatalf("per-chat Conn: got %v, want close 4403", err)
		}
		all.waitFor(t, "member.removed", func() bool {
			for _, f := range all.frames {
				if v, ok := f.Value.(rest.MemberRemovedFrame); ok && v.ChatID == group.ID && v.UserID == bob.ID {
					return true
				}
			}
			return false
		})
		if wconn.State() != client.Connected {
			t.Fatalf("/ws Conn: state %v, want connected", wconn.State())
		}
	})
}

// Tokens that expire: the server closes with 4501, the TokenFunc logs in
// again, and the Conn carries on with nothing lost.
func TestConnTokenExpiry(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t, func(c *app.Config) { c.JWTTTL = 2 * time.Second })
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		var refreshed atomic.Int32
		relogin := func(u apptest.User) client.Option {
			return client.WithTokenFunc(func(ctx context.Context, expired bool) (string, error) {
				if expired {
					refreshed.Add(1)
				}
				c, err := client.New(s.URL)
				if err != nil {
					return "", err
				}
				tok, err := c.Login(ctx, u.Email, u.Password)
				if err != nil {
					return "", err
				}
				return tok.AccessToken, nil
			})
		}
		ac, bc := sdkClient(t, s.URL, alice, relogin(alice)), sdkClient(t, s.URL, bob, relogin(bob))
		ctx := context.Background()
		chat, err := ac.PrivateChat(ctx, bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		brec := newRecorder()
		aconn := dial(t, ac, client.Config{Trace: specTrace(t, s)})
		dial(t, bc, brec.config(client.Config{Trace: specTrace(t, s)}))
		var ps []*client.Pending
		deadline := time.Now().Add(5 * time.Second)
		for i := 0; time.Now().Before(deadline) || refreshed.Load() < 2; i++ {
			p, err := aconn.Send(chat.ID, fmt.Sprintf("tick %d", i))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
			waitAll(t, []*client.Pending{p})
			time.Sleep(100 * time.Millisecond)
			if i > 200 {
				t.Fatalf("the tokens were refreshed %d times in %d sends, want both Conns refreshed", refreshed.Load(), i)
			}
		}
		checkStream(t, "bob", brec, chat.ID, len(ps))
	})
}
