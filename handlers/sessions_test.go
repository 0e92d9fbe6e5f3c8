package handlers_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// fakeClock is a clock tests move by hand; it starts at the real time so
// that stored times look ordinary.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// refresh posts a refresh token and returns the status and the answer.
func refresh(t *testing.T, s *apptest.Server, token string) (int, *rest.Token, []byte) {
	t.Helper()
	r, err := s.Client.RefreshTokenWithResponse(bg, rest.RefreshRequest{RefreshToken: token})
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode(), r.JSON200, r.Body
}

// meStatus is the status of GET /users/me with token.
func meStatus(t *testing.T, s *apptest.Server, token string) int {
	t.Helper()
	code, _, _ := s.Do(t, "GET", "/users/me", "", nil, token)
	return code
}

// sessionsOf lists the sessions token's user sees.
func sessionsOf(t *testing.T, s *apptest.Server, token string) []rest.Session {
	t.Helper()
	r, err := s.Client.ListSessionsWithResponse(bg, apptest.Bearer(token))
	wantStatus(t, r, err, 200)
	return *r.JSON200
}

func TestLoginStartsSessions(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t, func(c *app.Config) { c.JWTTTL = 15 * time.Minute })
		alice := s.NewUser(t, "Alice") // device: the Go client's User-Agent
		if alice.Refresh == "" || alice.SessionID == 0 {
			t.Fatalf("login: got refresh %q session %d, want both", alice.Refresh, alice.SessionID)
		}
		long := strings.Repeat("é", 150)
		code, hdr, body := s.Do(t, "POST", "/login", "application/x-www-form-urlencoded",
			apptest.Form("username", alice.Email, "password", alice.Password, "device", long), "")
		if code != 200 || hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("login with a device: got %d %s, Cache-Control %q", code, body, hdr.Get("Cache-Control"))
		}
		var tok rest.Token
		mustJSON(t, body, &tok)
		if tok.ExpiresIn != 900 || tok.TokenType != rest.Bearer {
			t.Errorf("got expires_in %d, token_type %q, want 900 (JWT_TTL 15m) and bearer", tok.ExpiresIn, tok.TokenType)
		}
		ss := sessionsOf(t, s, tok.AccessToken)
		if len(ss) != 2 {
			t.Fatalf("got %d sessions, want 2: %+v", len(ss), ss)
		}
		// Newest first: the one with the named device, current for its token.
		if ss[0].ID != tok.SessionID || !ss[0].Current || ss[0].Device != strings.Repeat("é", 100) {
			t.Errorf("newest session: got %+v, want id %d, current, device cut to 100 characters", ss[0], tok.SessionID)
		}
		if ss[1].ID != alice.SessionID || ss[1].Current || !strings.HasPrefix(ss[1].Device, "Go-http-client") {
			t.Errorf("older session: got %+v, want id %d, not current, the User-Agent as device", ss[1], alice.SessionID)
		}
		// Another user never sees them.
		bob := s.NewUser(t, "Bob")
		if ss := sessionsOf(t, s, bob.Token); len(ss) != 1 || ss[0].ID != bob.SessionID {
			t.Errorf("bob's sessions: got %+v, want only his own", ss)
		}
	})
}

func TestRefreshRotationAndReuse(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice := s.NewUser(t, "Alice")
		code, t1, body := refresh(t, s, alice.Refresh)
		if code != 200 {
			t.Fatalf("refresh: got %d %s", code, body)
		}
		if t1.SessionID != alice.SessionID || t1.RefreshToken == alice.Refresh || t1.AccessToken == "" {
			t.Fatalf("refresh: got %+v, want the same session with a new refresh token", t1)
		}
		if meStatus(t, s, t1.AccessToken) != 200 || meStatus(t, s, alice.Token) != 200 {
			t.Fatal("the new access token and the old unexpired one both work until a revocation")
		}
		code, t2, _ := refresh(t, s, t1.RefreshToken)
		if code != 200 {
			t.Fatalf("second refresh: got %d", code)
		}
		// The first refresh token comes back: reuse. 401, and the session is
		// revoked: its access tokens and its current refresh token are dead.
		code, _, body = refresh(t, s, alice.Refresh)
		if code != 401 {
			t.Fatalf("reuse: got %d %s, want 401", code, body)
		}
		for _, tok := range []string{alice.Token, t1.AccessToken, t2.AccessToken} {
			c, hdr, b := s.Do(t, "GET", "/users/me", "", nil, tok)
			wantProblem(t, c, hdr, b, 401, rest.ProblemCodeSessionRevoked)
		}
		if code, _, _ := refresh(t, s, t2.RefreshToken); code != 401 {
			t.Errorf("refresh of the revoked session's latest token: got %d, want 401", code)
		}
		if ss := sessionsOf(t, s, s.Session(t, alice).Token); len(ss) != 1 {
			t.Errorf("sessions after reuse: got %+v, want only the new login", ss)
		}
		if code, _, _ := refresh(t, s, "not-a-token"); code != 401 {
			t.Errorf("unknown refresh token: got %d, want 401", code)
		}
	})
}

// TestConcurrentRefreshOnTwoReplicas sends the same refresh token to two
// replicas at the same instant, many times: exactly one wins each time.
func TestConcurrentRefreshOnTwoReplicas(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		alice := a.NewUser(t, "Alice")
		const rounds = 20
		for round := range rounds {
			u := a.Session(t, alice)
			var wg sync.WaitGroup
			codes := make([]int, 2)
			start := make(chan struct{})
			for i, s := range []*apptest.Server{a, b} {
				wg.Go(func() {
					<-start
					codes[i], _, _ = refresh(t, s, u.Refresh)
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for _, c := range codes {
				switch c {
				case 200:
					won++
				case 401:
				default:
					t.Errorf("round %d: got status %d, want 200 or 401", round, c)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: got statuses %v, want exactly one 200", round, codes)
			}
		}
	})
}

// TestRevocationOnEveryReplica: a session revoked through one replica is
// refused by the other at once (through the broker; no database read per
// request), and logout does the same for the current session.
func TestRevocationOnEveryReplica(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		alice := a.NewUser(t, "Alice")
		phone := b.Session(t, alice)
		if meStatus(t, b, phone.Token) != 200 || meStatus(t, a, phone.Token) != 200 {
			t.Fatal("the phone's token works on both replicas")
		}
		r, err := a.Client.RevokeSessionWithResponse(bg, phone.SessionID, alice.Auth())
		wantStatus(t, r, err, 204)
		// Replica a revoked it: refused there with no delay at all.
		code, hdr, body := a.Do(t, "GET", "/users/me", "", nil, phone.Token)
		wantProblem(t, code, hdr, body, 401, rest.ProblemCodeSessionRevoked)
		took := waitStatus(t, b, phone.Token, 401, time.Second)
		t.Logf("replica b refused the revoked token %v after the DELETE answered", took)
		if meStatus(t, b, alice.Token) != 200 {
			t.Error("the other session of the same user still works")
		}
		// Revoking it again, or someone else's, is 404.
		r, err = a.Client.RevokeSessionWithResponse(bg, phone.SessionID, alice.Auth())
		wantStatus(t, r, err, 404)
		bob := b.NewUser(t, "Bob")
		r, err = b.Client.RevokeSessionWithResponse(bg, alice.SessionID, bob.Auth())
		wantStatus(t, r, err, 404)

		// Logout on b ends alice's session on a as well.
		lr, err := b.Client.LogoutWithResponse(bg, alice.Auth())
		wantStatus(t, lr, err, 204)
		waitStatus(t, a, alice.Token, 401, time.Second)
		if code, _, _ := refresh(t, a, alice.Refresh); code != 401 {
			t.Errorf("refresh after logout: got %d, want 401", code)
		}
		// A replica started after the revocation knows it from the database.
		c := env.Start(t)
		if code := meStatus(t, c, alice.Token); code != 401 {
			t.Errorf("a new replica: got %d for a revoked session's token, want 401", code)
		}
	})
}

// waitStatus polls GET /users/me until it answers want, failing after
// limit; it returns how long that took.
func waitStatus(t *testing.T, s *apptest.Server, token string, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := meStatus(t, s, token)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("GET /users/me: got %d for %v, want %d", got, limit, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestChangePasswordRevokesOtherSessions(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		alice := a.NewUser(t, "Alice")
		laptop, phone := a.Session(t, alice), b.Session(t, alice)
		bob := a.NewUser(t, "Bob")

		body := func(cur, next string) rest.ChangePasswordRequest {
			return rest.ChangePasswordRequest{CurrentPassword: cur, NewPassword: next}
		}
		r, err := a.Client.ChangePasswordWithResponse(bg, body("wrong-password", "new-password-1"), laptop.Auth())
		wantStatus(t, r, err, 401)
		r, err = a.Client.ChangePasswordWithResponse(bg, body(alice.Password, "short"), laptop.Auth())
		wantStatus(t, r, err, 422)
		for _, u := range []apptest.User{alice, laptop, phone} {
			if meStatus(t, a, u.Token) != 200 {
				t.Fatal("refused changes revoke nothing")
			}
		}

		r, err = a.Client.ChangePasswordWithResponse(bg, body(alice.Password, "new-password-1"), laptop.Auth())
		wantStatus(t, r, err, 204)
		if meStatus(t, a, laptop.Token) != 200 {
			t.Error("the session that changed the password must stay")
		}
		for _, u := range []apptest.User{alice, phone} {
			waitStatus(t, b, u.Token, 401, time.Second)
			if code, _, _ := refresh(t, b, u.Refresh); code != 401 {
				t.Errorf("refresh of a revoked session: got %d, want 401", code)
			}
		}
		if meStatus(t, a, bob.Token) != 200 {
			t.Error("another user's session was revoked")
		}
		code, _, _ := a.Do(t, "POST", "/login", "application/x-www-form-urlencoded", apptest.Form("username", alice.Email, "password", alice.Password), "")
		if code != 401 {
			t.Errorf("login with the old password: got %d, want 401", code)
		}
		if tok := a.LoginToken(t, alice.Email, "new-password-1"); tok.AccessToken == "" {
			t.Error("login with the new password failed")
		}
		if ss := sessionsOf(t, a, laptop.Token); len(ss) != 2 {
			t.Errorf("sessions after the change: got %+v, want the laptop and the new login", ss)
		}
	})
}

func TestProfilesAndPrivacy(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		r, err := s.Client.UpdateMeWithResponse(bg, rest.UpdateMeRequest{Name: "  Alice Liddell "}, alice.Auth())
		wantStatus(t, r, err, 200)
		if r.JSON200.Name != "Alice Liddell" || r.JSON200.Email != alice.Email {
			t.Errorf("rename: got %+v, want the trimmed name and her own email", r.JSON200)
		}
		for _, bad := range []string{"", "   ", strings.Repeat("n", 101)} {
			code, hdr, body := s.Do(t, "PATCH", "/users/me", "application/json", strings.NewReader(fmt.Sprintf(`{"name":%q}`, bad)), alice.Token)
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		}
		// Bob sees Alice's new name and never her email.
		u, err := s.Client.GetUserWithResponse(bg, alice.ID, bob.Auth())
		wantStatus(t, u, err, 200)
		if *u.JSON200 != (rest.UserPublic{ID: alice.ID, Name: "Alice Liddell"}) || strings.Contains(string(u.Body), "@") {
			t.Errorf("public profile: got %s", u.Body)
		}
		g := group(t, s, alice, "Tea party", bob.ID)
		c, err := s.Client.GetChatWithResponse(bg, g.ID, bob.Auth())
		wantStatus(t, c, err, 200)
		names := map[int64]string{}
		for _, m := range c.JSON200.Members {
			names[m.UserID] = m.Name
		}
		if names[alice.ID] != "Alice Liddell" || names[bob.ID] != "Bob" {
			t.Errorf("chat members: got names %v", names)
		}
		list, err := s.Client.ListChatsWithResponse(bg, bob.Auth())
		wantStatus(t, list, err, 200)
		if len(*list.JSON200) != 1 || (*list.JSON200)[0].Members[0].Name == "" {
			t.Errorf("chat list members carry no names: %s", list.Body)
		}
		if strings.Contains(string(c.Body)+string(list.Body), "@") {
			t.Error("a chat shows an email")
		}
	})
}

// TestSessionExpiry moves a fake clock: access tokens expire after JWT_TTL
// (401, and the client refreshes), refresh tokens after WINDI_REFRESH_TTL
// without use, and each refresh starts that lifetime again (sliding).
func TestSessionExpiry(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		clock := newFakeClock()
		s := env.StartMain(t, func(m *app.Main) {
			m.Config.JWTTTL = 15 * time.Minute
			m.Config.RefreshTTL = 24 * time.Hour
			m.Now = clock.Now
		})
		alice := s.NewUser(t, "Alice")
		clock.Add(15*time.Minute - time.Second)
		if meStatus(t, s, alice.Token) != 200 {
			t.Fatal("the access token works until it expires")
		}
		clock.Add(2 * time.Second)
		code, hdr, body := s.Do(t, "GET", "/users/me", "", nil, alice.Token)
		wantProblem(t, code, hdr, body, 401, rest.ProblemCodeUnauthorized)

		// 23 h later the refresh token still works, and slides on.
		clock.Add(23 * time.Hour)
		code, tok, _ := refresh(t, s, alice.Refresh)
		if code != 200 || meStatus(t, s, tok.AccessToken) != 200 {
			t.Fatalf("refresh within its lifetime: got %d", code)
		}
		clock.Add(23 * time.Hour) // 46 h after login, 23 h after the refresh
		code, tok, _ = refresh(t, s, tok.RefreshToken)
		if code != 200 {
			t.Fatalf("refresh within the slid lifetime: got %d", code)
		}
		if ss := sessionsOf(t, s, tok.AccessToken); len(ss) != 1 || !ss[0].LastUsedAt.Equal(clock.Now()) {
			t.Errorf("sessions: got %+v, want one last used now (%v)", ss, clock.Now())
		}
		// Unused for the whole lifetime: gone.
		clock.Add(24 * time.Hour)
		if code, _, _ := refresh(t, s, tok.RefreshToken); code != 401 {
			t.Errorf("refresh after its lifetime: got %d, want 401", code)
		}
		bob := s.NewUser(t, "Bob")
		if ss := sessionsOf(t, s, bob.Token); len(ss) != 1 {
			t.Errorf("bob's sessions: got %+v", ss)
		}
	})
}

// mustJSON decodes body into v.
func mustJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}
