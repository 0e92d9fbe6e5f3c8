package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// loggedIn is a Client logged in as u through Login, counting the tokens
// it was handed (the login, then every refresh).
func loggedIn(t *testing.T, s *apptest.Server, u apptest.User, issued *atomic.Int32) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, client.WithDevice("client test"), client.WithOnTokens(func(rest.Token) { issued.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(context.Background(), u.Email, u.Password); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientRefreshesOnce: once the access token has expired, many
// concurrent requests (a POST with a body among them) all succeed after one
// refresh between them, each retried once.
func TestClientRefreshesOnce(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t, func(c *app.Config) { c.JWTTTL = 3 * time.Second })
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		var issued atomic.Int32
		c := loggedIn(t, s, alice, &issued)
		ctx := context.Background()
		chat, err := c.PrivateChat(ctx, bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		first := c.RefreshToken()
		// exp is in whole seconds: the token has expired 3..4 s after login,
		// and the refreshed one lives 2..3 s, long enough for the retries.
		time.Sleep(4100 * time.Millisecond)

		const n = 16
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				if i%2 == 0 {
					_, errs[i] = c.Me(ctx)
					return
				}
				r, err := c.REST.SendMessageWithResponse(ctx, chat.ID, rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("after-expiry-%d", i), Text: "still me"})
				if err == nil && r.JSON201 == nil {
					err = client.ResponseError(r.HTTPResponse, r.Body)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("request %d after expiry: %v", i, err)
			}
		}
		if got := issued.Load(); got != 2 {
			t.Errorf("tokens issued: got %d (login + refreshes), want 2: one refresh for %d requests", got, n)
		}
		if c.RefreshToken() == first || c.RefreshToken() == "" {
			t.Error("the refresh token was not rotated")
		}
		h, err := c.History(ctx, chat.ID, nil)
		if err != nil || len(h) != n/2 {
			t.Errorf("history: got %d messages, %v; want %d, each stored once", len(h), err, n/2)
		}
	})
}

// TestConnRefreshesOnExpiry: the server closes with 4501 when the access
// token expires; the Conn refreshes through the Client (no TokenFunc) and
// carries on with nothing lost.
func TestConnRefreshesOnExpiry(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t, func(c *app.Config) { c.JWTTTL = 2 * time.Second })
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		var aIssued, bIssued atomic.Int32
		ac, bc := loggedIn(t, s, alice, &aIssued), loggedIn(t, s, bob, &bIssued)
		ctx := context.Background()
		chat, err := ac.PrivateChat(ctx, bob.ID)
		if err != nil {
			t.Fatal(err)
		}
		brec := newRecorder()
		aconn := dial(t, ac, client.Config{Trace: specTrace(t, s)})
		dial(t, bc, brec.config(client.Config{Trace: specTrace(t, s)}))
		var ps []*client.Pending
		for i := 0; aIssued.Load() < 3 || bIssued.Load() < 3; i++ {
			p, err := aconn.Send(chat.ID, fmt.Sprintf("tick %d", i))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
			waitAll(t, []*client.Pending{p})
			time.Sleep(100 * time.Millisecond)
			if i > 150 {
				t.Fatalf("after %d sends: alice got %d tokens, bob %d; want both refreshed twice", i, aIssued.Load(), bIssued.Load())
			}
		}
		checkStream(t, "bob", brec, chat.ID, len(ps))
	})
}

// TestConnEndsOnRevocation: a session revoked elsewhere closes the Conn
// with 4401, for good; the Client's refresh is refused and says so.
func TestConnEndsOnRevocation(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		alice := a.NewUser(t, "Alice")
		var issued atomic.Int32
		c := loggedIn(t, b, alice, &issued)
		conn := dial(t, c, client.Config{Trace: specTrace(t, b)})
		r, err := a.Client.RevokeSessionWithResponse(context.Background(), c.SessionID(), alice.Auth())
		if err != nil || r.StatusCode() != 204 {
			t.Fatalf("revoke: %v %v", err, r.StatusCode())
		}
		waitDone(t, conn)
		var ce *client.CloseError
		if err := conn.Err(); !errors.As(err, &ce) || ce.Code != client.CloseRevoked {
			t.Fatalf("Conn: got %v, want close 4401", err)
		}
		if _, err := c.Me(context.Background()); client.StatusOf(err) != 401 {
			t.Errorf("REST after revocation: got %v, want 401", err)
		}
		if _, err := c.Refresh(context.Background()); !errors.Is(err, client.ErrNoToken) && !errors.Is(err, client.ErrSessionEnded) {
			t.Errorf("refresh after revocation: got %v, want ErrSessionEnded or ErrNoToken", err)
		}
		if c.RefreshToken() != "" {
			t.Error("the refused refresh token is still kept")
		}
	})
}

// TestClientResumesFromRefreshToken: a program restarted with only the
// kept refresh token gets going again, and Logout ends that session.
func TestClientResumesFromRefreshToken(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice := s.NewUser(t, "Alice")
		c, err := client.New(s.URL, client.WithRefreshToken(alice.Refresh))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		me, err := c.Me(ctx)
		if err != nil || me.ID != alice.ID {
			t.Fatalf("me from a refresh token: got %+v, %v", me, err)
		}
		if c.SessionID() != alice.SessionID {
			t.Errorf("session: got %d, want %d", c.SessionID(), alice.SessionID)
		}
		if err := c.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if code, _, _ := s.Do(t, "GET", "/users/me", "", nil, alice.Token); code != 401 {
			t.Errorf("the session's old access token after logout: got %d, want 401", code)
		}
		if _, err := c.Me(ctx); client.StatusOf(err) != 401 {
			t.Errorf("me after logout: got %v, want 401", err)
		}
	})
}
