package realtime_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// revokedWithin is how soon a revoked session's sockets must close, on
// every replica (SPEC §12).
const revokedWithin = time.Second

// socketsOf opens both kinds of connection with u's token on each server.
func socketsOf(t *testing.T, u apptest.User, chatID int64, servers ...*apptest.Server) []*apptest.WS {
	t.Helper()
	var out []*apptest.WS
	for _, s := range servers {
		out = append(out, s.DialWS(t, "/ws", u.Token), s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), u.Token))
	}
	return out
}

// wantClosedRevoked waits for every socket to close with 4401 within
// revokedWithin of since, and returns the slowest.
func wantClosedRevoked(t *testing.T, since time.Time, sockets ...*apptest.WS) time.Duration {
	t.Helper()
	var slowest time.Duration
	for i, w := range sockets {
		code := w.WaitClosed(t, time.Until(since.Add(revokedWithin)))
		if code != 4401 {
			t.Errorf("socket %d: closed with %d, want 4401 (session revoked)", i, code)
		}
		slowest = max(slowest, time.Since(since))
	}
	return slowest
}

// wantOpen checks that a socket still delivers: u sends on it and gets the
// ack.
func wantOpen(t *testing.T, w *apptest.WS, chatID int64) {
	t.Helper()
	cmid := "still-open-" + apptest.RandomID()
	w.Send(t, rest.MessageSendFrame{Type: rest.MessageSend, ChatID: &chatID, ClientMsgID: cmid, Text: "still here"})
	if f, _ := w.Until(t, "message.ack", wait); f.ClientMsgID != cmid {
		t.Errorf("got %s, want the ack of %s", f.Raw, cmid)
	}
}

// testRevocationClosesSockets: a session revoked through one replica has
// its WebSockets closed with 4401 on both replicas within a second, the
// same user's other sessions keep theirs, the token opens nothing any more;
// the same for every other session when the password changes.
func testRevocationClosesSockets(t *testing.T, a, b *apptest.Server) {
	alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
	chatID := groupChat(t, a, alice, bob.ID)
	phone, tablet := a.Session(t, alice), a.Session(t, alice)
	phoneSockets := socketsOf(t, phone, chatID, a, b)
	tabletSockets := socketsOf(t, tablet, chatID, a, b)
	bobSocket := b.DialWS(t, "/ws", bob.Token)

	start := time.Now()
	r, err := a.Client.RevokeSessionWithResponse(bg, phone.SessionID, alice.Auth())
	if err != nil || r.StatusCode() != 204 {
		t.Fatalf("revoke: %v %v", err, r.StatusCode())
	}
	t.Logf("revoked: %d sockets on 2 replicas closed with 4401 within %v", len(phoneSockets), wantClosedRevoked(t, start, phoneSockets...))
	for _, w := range tabletSockets {
		wantOpen(t, w, chatID)
	}
	for _, s := range []*apptest.Server{a, b} {
		for _, path := range []string{"/ws", fmt.Sprintf("/ws/%d", chatID)} {
			if _, resp, err := s.TryDialWS(path, phone.Token, nil); resp == nil || resp.StatusCode != 401 {
				t.Errorf("dial %s with the revoked token: got %v, want 401", path, err)
			}
		}
	}

	// A password change through b revokes the tablet and the first login,
	// not the session that changed it.
	laptop := b.Session(t, alice)
	laptopSockets := socketsOf(t, laptop, chatID, a, b)
	firstSocket := a.DialWS(t, "/ws", alice.Token)
	start = time.Now()
	pr, err := b.Client.ChangePasswordWithResponse(bg, rest.ChangePasswordRequest{CurrentPassword: alice.Password, NewPassword: "brand-new-password"}, laptop.Auth())
	if err != nil || pr.StatusCode() != 204 {
		t.Fatalf("change password: %v %v", err, pr.StatusCode())
	}
	took := wantClosedRevoked(t, start, append(tabletSockets, firstSocket)...)
	t.Logf("password changed: %d sockets of 2 other sessions closed with 4401 within %v", len(tabletSockets)+1, took)
	for _, w := range laptopSockets {
		wantOpen(t, w, chatID)
	}
	if bobSocket.IsClosed() {
		t.Error("another user's socket closed")
	}

	// Logout closes the current session's own sockets.
	start = time.Now()
	lr, err := a.Client.LogoutWithResponse(bg, laptop.Auth())
	if err != nil || lr.StatusCode() != 204 {
		t.Fatalf("logout: %v %v", err, lr.StatusCode())
	}
	wantClosedRevoked(t, start, laptopSockets...)
	wantOpen(t, bobSocket, chatID)
}

// TestRevocationClosesSocketsOnEveryReplica runs on the embedded mode and
// Postgres+Redis, and in CI on the Redis Cluster too (.ci/run's
// CLUSTER_REALTIME_TESTS, apptest's "cluster" dialect: sharded pub/sub).
func TestRevocationClosesSocketsOnEveryReplica(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := pair(t, env)
		testRevocationClosesSockets(t, a, b)
	})
}

// TestRevocationReachesSocketsAfterBrokerLoss: a replica that missed the
// revocation's publication (its broker subscription was gone) still closes
// the session's sockets once it reads the revocations back from the
// database: at the periodic check.
func TestRevocationReachesSocketsAfterBrokerLoss(t *testing.T) {
	env := apptest.NewEnv(t, "postgres")
	a := env.Start(t)
	// b's periodic check runs every 300 ms; its broker is separate from a's
	// (another Redis prefix), so a's publication never reaches it.
	b := env.StartMain(t, func(m *app.Main) {
		m.Realtime.CheckEvery = 300 * time.Millisecond
		m.BrokerOptions.Prefix = "windi-test-" + apptest.RandomID() + ":"
	})
	alice := a.NewUser(t, "Alice")
	chatID := groupChat(t, a, alice)
	phone := a.Session(t, alice)
	sockets := socketsOf(t, phone, chatID, b)
	start := time.Now()
	r, err := a.Client.RevokeSessionWithResponse(bg, phone.SessionID, alice.Auth())
	if err != nil || r.StatusCode() != 204 {
		t.Fatalf("revoke: %v %v", err, r.StatusCode())
	}
	for _, w := range sockets {
		if code := w.WaitClosed(t, wait); code != 4401 {
			t.Errorf("closed with %d, want 4401", code)
		}
	}
	t.Logf("closed by the periodic reload %v after the revocation", time.Since(start))
	if code, _, _ := b.Do(t, "GET", "/users/me", "", nil, phone.Token); code != 401 {
		t.Errorf("b: got %d for the revoked token, want 401", code)
	}
}
