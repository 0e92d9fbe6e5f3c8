package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

var bg = context.Background()

func ptr[T any](v T) *T { return &v }

// wantProblem checks an RFC 9457 body: status, content type and code.
func wantProblem(t *testing.T, status int, hdr http.Header, body []byte, wantStatus int, wantCode rest.ProblemCode) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("got status %d, want %d (body %s)", status, wantStatus, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("got Content-Type %q, want application/problem+json", ct)
	}
	var p rest.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Status != wantStatus || p.Code != wantCode || p.Title == "" || p.Type == "" {
		t.Errorf("got problem %+v, want status %d code %s with title and type", p, wantStatus, wantCode)
	}
}

type resp interface {
	StatusCode() int
}

func wantStatus(t *testing.T, r resp, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if got := r.StatusCode(); got != want {
		t.Fatalf("got status %d, want %d", got, want)
	}
}

func group(t *testing.T, s *apptest.Server, owner apptest.User, name string, members ...int64) rest.Chat {
	t.Helper()
	var body rest.CreateChatRequest
	g := rest.CreateGroupChat{Type: rest.CreateGroupChatTypeGroup, Name: name}
	if members != nil {
		g.MemberIds = &members
	}
	if err := body.FromCreateGroupChat(g); err != nil {
		t.Fatal(err)
	}
	r, err := s.Client.CreateChatWithResponse(bg, body, owner.Auth())
	wantStatus(t, r, err, 201)
	return *r.JSON201
}

func private(t *testing.T, s *apptest.Server, a apptest.User, b int64) (*rest.CreateChatResponse, error) {
	t.Helper()
	var body rest.CreateChatRequest
	if err := body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: b}); err != nil {
		t.Fatal(err)
	}
	return s.Client.CreateChatWithResponse(bg, body, a.Auth())
}

func send(t *testing.T, s *apptest.Server, u apptest.User, chatID int64, cmid, text string) *rest.SendMessageResponse {
	t.Helper()
	r, err := s.Client.SendMessageWithResponse(bg, chatID, rest.SendMessageRequest{ClientMsgID: cmid, Text: text}, u.Auth())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegisterAndLogin(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		r, err := s.Client.RegisterWithResponse(bg, rest.RegisterRequest{Name: " Alice ", Email: "Alice@Example.COM", Password: "correct horse"})
		wantStatus(t, r, err, 201)
		if u := r.JSON201; u.Email != "alice@example.com" || u.Name != "Alice" || u.ID == 0 || u.CreatedAt.IsZero() {
			t.Errorf("got user %+v, want normalized email and trimmed name", u)
		}
		if strings.Contains(string(r.Body), "password") {
			t.Errorf("register response leaks a password field: %s", r.Body)
		}

		// The email is compared case-insensitively.
		code, hdr, body := s.Do(t, "POST", "/register", "application/json",
			strings.NewReader(`{"name":"A2","email":"ALICE@example.com","password":"12345678"}`), "")
		wantProblem(t, code, hdr, body, 409, rest.ProblemCodeEmailTaken)

		for name, payload := range map[string]string{
			"bad email":      `{"name":"B","email":"not-an-email","password":"12345678"}`,
			"short password": `{"name":"B","email":"b@example.com","password":"1234567"}`,
			"long password":  `{"name":"B","email":"b@example.com","password":"` + strings.Repeat("x", 129) + `"}`,
			"empty name":     `{"name":"","email":"b@example.com","password":"12345678"}`,
			"blank name":     `{"name":"   ","email":"b@example.com","password":"12345678"}`,
			"long name":      `{"name":"` + strings.Repeat("n", 101) + `","email":"b@example.com","password":"12345678"}`,
			"long email":     `{"name":"B","email":"` + strings.Repeat("e", 250) + `@x.io","password":"12345678"}`,
			"missing field":  `{"name":"B","password":"12345678"}`,
			"wrong type":     `{"name":5,"email":"b@example.com","password":"12345678"}`,
		} {
			t.Run(name, func(t *testing.T) {
				code, hdr, body := s.Do(t, "POST", "/register", "application/json", strings.NewReader(payload), "")
				wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
			})
		}
		code, hdr, body = s.Do(t, "POST", "/register", "application/json", strings.NewReader(`{"name":`), "")
		wantProblem(t, code, hdr, body, 400, rest.ProblemCodeBadRequest)

		// Login: success, then identical failures for a wrong password and an unknown email.
		lr, err := s.Client.LoginWithFormdataBodyWithResponse(bg, rest.LoginForm{Username: "ALICE@example.com", Password: "correct horse"})
		wantStatus(t, lr, err, 200)
		if lr.JSON200.TokenType != rest.Bearer || lr.JSON200.ExpiresIn != 3600 || lr.JSON200.AccessToken == "" {
			t.Errorf("got token %+v, want bearer expiring in 3600 s", lr.JSON200)
		}
		me, err := s.Client.GetMeWithResponse(bg, apptest.Bearer(lr.JSON200.AccessToken))
		wantStatus(t, me, err, 200)
		if me.JSON200.ID != r.JSON201.ID {
			t.Errorf("got me %d, want %d", me.JSON200.ID, r.JSON201.ID)
		}
		c1, h1, b1 := s.Do(t, "POST", "/login", "application/x-www-form-urlencoded", apptest.Form("username", "alice@example.com", "password", "wrong password"), "")
		c2, h2, b2 := s.Do(t, "POST", "/login", "application/x-www-form-urlencoded", apptest.Form("username", "nobody@example.com", "password", "wrong password"), "")
		wantProblem(t, c1, h1, b1, 401, rest.ProblemCodeInvalidCredentials)
		wantProblem(t, c2, h2, b2, 401, rest.ProblemCodeInvalidCredentials)
		if string(b1) != string(b2) {
			t.Errorf("login failures differ: %s vs %s", b1, b2)
		}
		code, hdr, body = s.Do(t, "POST", "/login", "application/x-www-form-urlencoded", apptest.Form("username", "alice@example.com"), "")
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
	})
}

func TestConcurrentRegistration(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t) // two processes' worth of servers on one database
		const n = 10
		codes := make(chan int, n)
		var wg sync.WaitGroup
		for i := range n {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				r, err := s.Client.RegisterWithResponse(bg, rest.RegisterRequest{Name: "Race", Email: "race@example.com", Password: "12345678"})
				if err != nil {
					t.Error(err)
					return
				}
				codes <- r.StatusCode()
			})
		}
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[201] != 1 || count[409] != n-1 {
			t.Errorf("got statuses %v, want one 201 and %d 409", count, n-1)
		}
	})
}

func TestAuthentication(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice := s.NewUser(t, "Alice")
		expired, _, _ := s.Service.Tokens().IssueAt(alice.ID, 1, time.Now().Add(-2*time.Hour), time.Hour)
		ghost, _, _ := s.Service.Tokens().Issue(alice.ID+1000, 1)
		forged := alice.Token[:len(alice.Token)-4] + "AAAA"
		header := `{"alg":"none","typ":"JWT"}`
		_ = header
		for name, token := range map[string]string{
			"no token": "", "malformed": "not-a-jwt", "forged signature": forged,
			"expired": expired, "unknown user": ghost,
			"alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + strings.Split(alice.Token, ".")[1] + ".",
		} {
			t.Run(name, func(t *testing.T) {
				for _, path := range []string{"/users/me", "/users", "/chats", "/chats/1", "/history/1", "/chats/1/presence"} {
					code, hdr, body := s.Do(t, "GET", path, "", nil, token)
					wantProblem(t, code, hdr, body, 401, rest.ProblemCodeUnauthorized)
					if hdr.Get("WWW-Authenticate") == "" {
						t.Errorf("%s: 401 without WWW-Authenticate", path)
					}
				}
				for _, path := range []string{"/chats", "/chats/1/messages", "/chats/1/read", "/groups/1/add_user/2", "/groups/1/remove_user/2"} {
					code, hdr, body := s.Do(t, "POST", path, "application/json", strings.NewReader(`{}`), token)
					wantProblem(t, code, hdr, body, 401, rest.ProblemCodeUnauthorized)
				}
			})
		}
		// Open endpoints need no token.
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, _, body := s.Do(t, "GET", path, "", nil, ""); code != 200 {
				t.Errorf("%s: got %d %s, want 200", path, code, body)
			}
		}
	})
}

func TestUsersSearch(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice := s.NewUser(t, "Alice")
		s.NewUser(t, "Albert")
		bob := s.NewUser(t, "Bob")
		r, err := s.Client.SearchUsersWithResponse(bg, &rest.SearchUsersParams{Q: "al"}, alice.Auth())
		wantStatus(t, r, err, 200)
		var names []string
		for _, u := range *r.JSON200 {
			names = append(names, u.Name)
		}
		if !slices.Equal(names, []string{"Albert", "Alice"}) {
			t.Errorf("got %v, want [Albert Alice]", names)
		}
		// An email prefix finds nobody; the exact email (any case) finds
		// its user, and the answer carries no email.
		r, err = s.Client.SearchUsersWithResponse(bg, &rest.SearchUsersParams{Q: "BOB-"}, alice.Auth())
		wantStatus(t, r, err, 200)
		if len(*r.JSON200) != 0 {
			t.Errorf("email prefix: got %+v, want nobody", *r.JSON200)
		}
		r, err = s.Client.SearchUsersWithResponse(bg, &rest.SearchUsersParams{Q: " " + strings.ToUpper(bob.Email) + " "}, alice.Auth())
		wantStatus(t, r, err, 200)
		if len(*r.JSON200) != 1 || (*r.JSON200)[0] != (rest.UserPublic{ID: bob.ID, Name: "Bob"}) {
			t.Errorf("exact email: got %+v, want Bob", *r.JSON200)
		}
		if bytes.Contains(r.Body, []byte("@")) {
			t.Errorf("search answer shows an email: %s", r.Body)
		}
		// Never a listing of everyone: q is required and must not be blank.
		for _, path := range []string{"/users", "/users?q=", "/users?q=%20%20"} {
			code, hdr, body := s.Do(t, "GET", path, "", nil, alice.Token)
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		}
		r, err = s.Client.SearchUsersWithResponse(bg, &rest.SearchUsersParams{Q: "al", Limit: ptr(2)}, alice.Auth())
		wantStatus(t, r, err, 200)
		if len(*r.JSON200) != 2 {
			t.Errorf("limit 2: got %d users", len(*r.JSON200))
		}
		code, hdr, body := s.Do(t, "GET", "/users?q=a&limit=101", "", nil, alice.Token)
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		code, hdr, body = s.Do(t, "GET", "/users?q=a&limit=abc", "", nil, alice.Token)
		wantProblem(t, code, hdr, body, 400, rest.ProblemCodeBadRequest)
	})
}

func TestPrivateChats(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob, carol := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
		r, err := private(t, s, alice, bob.ID)
		wantStatus(t, r, err, 201)
		c := r.JSON201
		if c.Type != rest.ChatTypePrivate || c.Name != nil || len(c.Members) != 2 || c.LastMessage != nil || c.Unread != 0 {
			t.Errorf("got chat %+v, want a private chat of two with no name and no messages", c)
		}
		again, err := private(t, s, bob, alice.ID)
		wantStatus(t, again, err, 200)
		if again.JSON200.ID != c.ID {
			t.Errorf("reverse direction: got chat %d, want %d", again.JSON200.ID, c.ID)
		}
		r404, err := private(t, s, alice, 99999)
		wantStatus(t, r404, err, 404)
		self, err := private(t, s, alice, alice.ID)
		wantStatus(t, self, err, 422)
		code, hdr, body := s.Do(t, "POST", "/chats", "application/json", strings.NewReader(`{"type":"channel","user_id":2}`), alice.Token)
		if code != 400 && code != 422 {
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		}

		g, err := s.Client.GetChatWithResponse(bg, c.ID, alice.Auth())
		wantStatus(t, g, err, 200)
		g, err = s.Client.GetChatWithResponse(bg, c.ID, carol.Auth())
		wantStatus(t, g, err, 403)
		g, err = s.Client.GetChatWithResponse(bg, 99999, carol.Auth())
		wantStatus(t, g, err, 404)
	})
}

func TestConcurrentPrivateChatCreation(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		alice, bob := a.NewUser(t, "Alice"), a.NewUser(t, "Bob")
		const n = 16
		ids := make(chan int64, n)
		created := make(chan bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				s, me, other := a, alice, bob.ID
				if i%2 == 1 {
					s, me, other = b, bob, alice.ID
				}
				r, err := private(t, s, me, other)
				if err != nil {
					t.Error(err)
					return
				}
				switch r.StatusCode() {
				case 201:
					ids <- r.JSON201.ID
					created <- true
				case 200:
					ids <- r.JSON200.ID
				default:
					t.Errorf("got status %d: %s", r.StatusCode(), r.Body)
				}
			})
		}
		wg.Wait()
		close(ids)
		close(created)
		seen := map[int64]bool{}
		for id := range ids {
			seen[id] = true
		}
		if len(seen) != 1 || len(created) != 1 {
			t.Errorf("got chats %v and %d creations, want one chat created once", seen, len(created))
		}
	})
}

func TestGroups(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		owner, m1, m2, out := s.NewUser(t, "Owner"), s.NewUser(t, "M1"), s.NewUser(t, "M2"), s.NewUser(t, "Out")
		g := group(t, s, owner, "Team", m1.ID, owner.ID, m1.ID)
		if g.Type != rest.ChatTypeGroup || g.Name == nil || *g.Name != "Team" || len(g.Members) != 2 {
			t.Fatalf("got group %+v, want Team with owner and m1", g)
		}
		roles := map[int64]rest.MemberRole{}
		for _, m := range g.Members {
			roles[m.UserID] = m.Role
		}
		if roles[owner.ID] != rest.Owner || roles[m1.ID] != rest.Member {
			t.Errorf("got roles %v, want owner and member", roles)
		}

		code, hdr, body := s.Do(t, "POST", "/chats", "application/json", strings.NewReader(`{"type":"group","name":"X","member_ids":[99999]}`), owner.Token)
		wantProblem(t, code, hdr, body, 404, rest.ProblemCodeNotFound)
		code, hdr, body = s.Do(t, "POST", "/chats", "application/json", strings.NewReader(`{"type":"group","name":"  "}`), owner.Token)
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		code, hdr, body = s.Do(t, "POST", "/chats", "application/json", strings.NewReader(`{"type":"group","name":"`+strings.Repeat("n", 101)+`"}`), owner.Token)
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)

		// Add: owner only, idempotent, 404 for unknown users and groups, 409 for private chats.
		add, err := s.Client.AddGroupMemberWithResponse(bg, g.ID, m2.ID, owner.Auth())
		wantStatus(t, add, err, 200)
		if !add.JSON200.Changed || !add.JSON200.Member {
			t.Errorf("got %+v, want changed member", add.JSON200)
		}
		add, err = s.Client.AddGroupMemberWithResponse(bg, g.ID, m2.ID, owner.Auth())
		wantStatus(t, add, err, 200)
		if add.JSON200.Changed {
			t.Errorf("adding again: got changed, want unchanged")
		}
		add, err = s.Client.AddGroupMemberWithResponse(bg, g.ID, out.ID, m1.Auth())
		wantStatus(t, add, err, 403)
		add, err = s.Client.AddGroupMemberWithResponse(bg, g.ID, out.ID, out.Auth())
		wantStatus(t, add, err, 403)
		add, err = s.Client.AddGroupMemberWithResponse(bg, g.ID, 99999, owner.Auth())
		wantStatus(t, add, err, 404)
		add, err = s.Client.AddGroupMemberWithResponse(bg, 99999, out.ID, owner.Auth())
		wantStatus(t, add, err, 404)
		pc, err := private(t, s, owner, out.ID)
		wantStatus(t, pc, err, 201)
		add, err = s.Client.AddGroupMemberWithResponse(bg, pc.JSON201.ID, m1.ID, owner.Auth())
		wantStatus(t, add, err, 409)
		code, hdr, body = s.Do(t, "POST", fmt.Sprintf("/groups/%d/add_user/%d", pc.JSON201.ID, m1.ID), "", nil, owner.Token)
		wantProblem(t, code, hdr, body, 409, rest.ProblemCodeNotAGroup)

		// Remove: a member may remove only itself, the owner anyone but itself.
		rm, err := s.Client.RemoveGroupMemberWithResponse(bg, g.ID, m2.ID, m1.Auth())
		wantStatus(t, rm, err, 403)
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, g.ID, owner.ID, m1.Auth())
		wantStatus(t, rm, err, 403)
		code, hdr, body = s.Do(t, "POST", fmt.Sprintf("/groups/%d/remove_user/%d", g.ID, owner.ID), "", nil, owner.Token)
		wantProblem(t, code, hdr, body, 409, rest.ProblemCodeOwnerCannotBeRemoved)
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, g.ID, m1.ID, m1.Auth())
		wantStatus(t, rm, err, 200)
		if !rm.JSON200.Changed || rm.JSON200.Member {
			t.Errorf("got %+v, want changed non-member", rm.JSON200)
		}
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, g.ID, m2.ID, owner.Auth())
		wantStatus(t, rm, err, 200)
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, g.ID, m2.ID, owner.Auth())
		wantStatus(t, rm, err, 200)
		if rm.JSON200.Changed {
			t.Errorf("removing again: got changed, want unchanged")
		}
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, g.ID, 99999, owner.Auth())
		wantStatus(t, rm, err, 404)
		rm, err = s.Client.RemoveGroupMemberWithResponse(bg, pc.JSON201.ID, out.ID, owner.Auth())
		wantStatus(t, rm, err, 409)

		// A removed member loses access.
		gc, err := s.Client.GetChatWithResponse(bg, g.ID, m1.Auth())
		wantStatus(t, gc, err, 403)
		h, err := s.Client.GetHistoryWithResponse(bg, g.ID, nil, m2.Auth())
		wantStatus(t, h, err, 403)
		sm := send(t, s, m1, g.ID, "after-removal", "hello?")
		wantStatus(t, sm, nil, 403)
		gc, err = s.Client.GetChatWithResponse(bg, g.ID, owner.Auth())
		wantStatus(t, gc, err, 200)
		if len(gc.JSON200.Members) != 1 {
			t.Errorf("got %d members, want only the owner", len(gc.JSON200.Members))
		}
	})
}

func TestMessagesHistoryAndRead(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob, carol := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
		r, _ := private(t, s, alice, bob.ID)
		chatID := r.JSON201.ID

		first := send(t, s, alice, chatID, "m-1", "  hello  ")
		wantStatus(t, first, nil, 201)
		m := first.JSON201
		if m.Seq != 1 || m.Text != "hello" || m.SenderID != alice.ID || m.ChatID != chatID || m.ClientMsgID != "m-1" || m.Read {
			t.Errorf("got %+v, want seq 1 trimmed text, unread", m)
		}
		dup := send(t, s, alice, chatID, "m-1", "different text")
		wantStatus(t, dup, nil, 200)
		if dup.JSON200.ID != m.ID || dup.JSON200.Text != "hello" {
			t.Errorf("duplicate: got %+v, want the original", dup.JSON200)
		}
		// The same client_msg_id from another sender is another message.
		other := send(t, s, bob, chatID, "m-1", "hi alice")
		wantStatus(t, other, nil, 201)
		for i := 3; i <= 10; i++ {
			wantStatus(t, send(t, s, alice, chatID, fmt.Sprintf("m-%d", i), fmt.Sprintf("msg %d", i)), nil, 201)
		}

		for name, tc := range map[string]struct {
			params *rest.GetHistoryParams
			want   []int64
		}{
			"default":          {nil, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
			"limit":            {&rest.GetHistoryParams{Limit: ptr(3)}, []int64{1, 2, 3}},
			"offset":           {&rest.GetHistoryParams{Limit: ptr(3), Offset: ptr(2)}, []int64{3, 4, 5}},
			"after_seq":        {&rest.GetHistoryParams{AfterSeq: ptr(int64(7))}, []int64{8, 9, 10}},
			"before_seq":       {&rest.GetHistoryParams{BeforeSeq: ptr(int64(5)), Limit: ptr(2)}, []int64{3, 4}},
			"after and before": {&rest.GetHistoryParams{AfterSeq: ptr(int64(2)), BeforeSeq: ptr(int64(6))}, []int64{3, 4, 5}},
			"offset past end":  {&rest.GetHistoryParams{Offset: ptr(50)}, []int64{}},
			"after last":       {&rest.GetHistoryParams{AfterSeq: ptr(int64(10))}, []int64{}},
		} {
			t.Run(name, func(t *testing.T) {
				h, err := s.Client.GetHistoryWithResponse(bg, chatID, tc.params, bob.Auth())
				wantStatus(t, h, err, 200)
				got := []int64{}
				for _, m := range *h.JSON200 {
					got = append(got, m.Seq)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("got seqs %v, want %v", got, tc.want)
				}
			})
		}
		for _, q := range []string{"limit=0", "limit=101", "offset=-1"} {
			code, hdr, body := s.Do(t, "GET", fmt.Sprintf("/history/%d?%s", chatID, q), "", nil, bob.Token)
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		}
		h, err := s.Client.GetHistoryWithResponse(bg, chatID, nil, carol.Auth())
		wantStatus(t, h, err, 403)
		h, err = s.Client.GetHistoryWithResponse(bg, 99999, nil, carol.Auth())
		wantStatus(t, h, err, 404)

		// Unread counts and last message, before and after reading.
		list, err := s.Client.ListChatsWithResponse(bg, bob.Auth())
		wantStatus(t, list, err, 200)
		if len(*list.JSON200) != 1 {
			t.Fatalf("got %d chats, want 1", len(*list.JSON200))
		}
		c := (*list.JSON200)[0]
		// Bob sent seq 2, which moved his watermark to 2.
		if c.Unread != 8 || c.LastMessage == nil || c.LastMessage.Seq != 10 || c.LastMessage.Read {
			t.Errorf("got unread %d last %+v, want 8 and unread seq 10", c.Unread, c.LastMessage)
		}
		rd, err := s.Client.MarkReadWithResponse(bg, chatID, rest.ReadRequest{Seq: 6}, bob.Auth())
		wantStatus(t, rd, err, 204)
		rd, err = s.Client.MarkReadWithResponse(bg, chatID, rest.ReadRequest{Seq: 3}, bob.Auth()) // lower: no change
		wantStatus(t, rd, err, 204)
		h, err = s.Client.GetHistoryWithResponse(bg, chatID, nil, alice.Auth())
		wantStatus(t, h, err, 200)
		for _, m := range *h.JSON200 {
			if want := m.Seq <= 6; m.Read != want {
				t.Errorf("seq %d: got read %v, want %v", m.Seq, m.Read, want)
			}
		}
		rd, err = s.Client.MarkReadWithResponse(bg, chatID, rest.ReadRequest{Seq: 1000}, bob.Auth()) // capped at last_seq
		wantStatus(t, rd, err, 204)
		g, err := s.Client.GetChatWithResponse(bg, chatID, bob.Auth())
		wantStatus(t, g, err, 200)
		for _, m := range g.JSON200.Members {
			if m.UserID == bob.ID && m.LastReadSeq != 10 {
				t.Errorf("got bob's watermark %d, want 10 (capped)", m.LastReadSeq)
			}
		}
		if g.JSON200.Unread != 0 || !g.JSON200.LastMessage.Read {
			t.Errorf("got unread %d read %v, want 0 and read", g.JSON200.Unread, g.JSON200.LastMessage.Read)
		}
		rd, err = s.Client.MarkReadWithResponse(bg, chatID, rest.ReadRequest{Seq: 1}, carol.Auth())
		wantStatus(t, rd, err, 403)
		rd, err = s.Client.MarkReadWithResponse(bg, 99999, rest.ReadRequest{Seq: 1}, carol.Auth())
		wantStatus(t, rd, err, 404)
		code, hdr, body := s.Do(t, "POST", fmt.Sprintf("/chats/%d/read", chatID), "application/json", strings.NewReader(`{"seq":-1}`), bob.Token)
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)

		// Send errors.
		for name, tc := range map[string]struct {
			payload string
			status  int
		}{
			"empty text":      {`{"client_msg_id":"x1","text":""}`, 422},
			"blank text":      {`{"client_msg_id":"x2","text":"    "}`, 422},
			"long text":       {`{"client_msg_id":"x3","text":"` + strings.Repeat("é", 4097) + `"}`, 422},
			"empty id":        {`{"client_msg_id":"","text":"hi"}`, 422},
			"long id":         {`{"client_msg_id":"` + strings.Repeat("i", 65) + `","text":"hi"}`, 422},
			"non-ascii id":    {`{"client_msg_id":"ид","text":"hi"}`, 422},
			"control char id": {`{"client_msg_id":"a\tb","text":"hi"}`, 422},
			"missing text":    {`{"client_msg_id":"x4"}`, 422},
			"malformed json":  {`{"client_msg_id":`, 400},
		} {
			t.Run(name, func(t *testing.T) {
				code, hdr, body := s.Do(t, "POST", fmt.Sprintf("/chats/%d/messages", chatID), "application/json", strings.NewReader(tc.payload), alice.Token)
				want := rest.ProblemCodeValidationFailed
				if tc.status == 400 {
					want = rest.ProblemCodeBadRequest
				}
				wantProblem(t, code, hdr, body, tc.status, want)
			})
		}
		// 4096 characters is the limit, counted in characters, not bytes.
		wantStatus(t, send(t, s, alice, chatID, "max", strings.Repeat("é", 4096)), nil, 201)
		wantStatus(t, send(t, s, carol, chatID, "c1", "let me in"), nil, 403)
		wantStatus(t, send(t, s, carol, 99999, "c1", "anyone?"), nil, 404)
		h, _ = s.Client.GetHistoryWithResponse(bg, chatID, &rest.GetHistoryParams{AfterSeq: ptr(int64(10))}, alice.Auth())
		if len(*h.JSON200) != 1 {
			t.Errorf("got %d messages after the failed sends, want only the 4096-character one", len(*h.JSON200))
		}
	})
}

func TestConcurrentSends(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		a, b := env.Start(t), env.Start(t)
		owner := a.NewUser(t, "Owner")
		g := group(t, a, owner, "Busy")

		const n = 50
		var wg sync.WaitGroup
		for i := range n {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				r := send(t, s, owner, g.ID, fmt.Sprintf("c-%d", i), fmt.Sprintf("message %d", i))
				if r.StatusCode() != 201 {
					t.Errorf("send %d: got %d %s", i, r.StatusCode(), r.Body)
				}
			})
		}
		wg.Wait()
		h, err := a.Client.GetHistoryWithResponse(bg, g.ID, &rest.GetHistoryParams{Limit: ptr(100)}, owner.Auth())
		wantStatus(t, h, err, 200)
		if len(*h.JSON200) != n {
			t.Fatalf("got %d messages, want %d", len(*h.JSON200), n)
		}
		for i, m := range *h.JSON200 {
			if m.Seq != int64(i+1) {
				t.Fatalf("message %d has seq %d, want %d (no gaps)", i, m.Seq, i+1)
			}
		}

		// One client_msg_id sent concurrently through both servers: one row.
		const k = 20
		type result struct {
			status int
			id     int64
		}
		results := make(chan result, k)
		for i := range k {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				r := send(t, s, owner, g.ID, "same-id", "once")
				switch r.StatusCode() {
				case 201:
					results <- result{201, r.JSON201.ID}
				case 200:
					results <- result{200, r.JSON200.ID}
				default:
					t.Errorf("got %d %s", r.StatusCode(), r.Body)
				}
			})
		}
		wg.Wait()
		close(results)
		count, ids := map[int]int{}, map[int64]bool{}
		for r := range results {
			count[r.status]++
			ids[r.id] = true
		}
		if count[201] != 1 || count[200] != k-1 || len(ids) != 1 {
			t.Errorf("got statuses %v and ids %v, want one 201, %d 200, one id", count, ids, k-1)
		}
		h, _ = a.Client.GetHistoryWithResponse(bg, g.ID, &rest.GetHistoryParams{AfterSeq: ptr(int64(n))}, owner.Auth())
		if len(*h.JSON200) != 1 || (*h.JSON200)[0].Seq != n+1 {
			t.Errorf("got %d rows after seq %d, want exactly one with seq %d", len(*h.JSON200), n, n+1)
		}
	})
}

func TestPresenceEndpoint(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob, carol := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
		r, _ := private(t, s, alice, bob.ID)
		p, err := s.Client.GetPresenceWithResponse(bg, r.JSON201.ID, alice.Auth())
		wantStatus(t, p, err, 200)
		if p.JSON200 == nil || len(*p.JSON200) != 0 {
			t.Errorf("got %v, want an empty list with no connections", p.JSON200)
		}
		p, err = s.Client.GetPresenceWithResponse(bg, r.JSON201.ID, carol.Auth())
		wantStatus(t, p, err, 403)
		p, err = s.Client.GetPresenceWithResponse(bg, 99999, carol.Auth())
		wantStatus(t, p, err, 404)
	})
}

func TestProblemsForEverything(t *testing.T) {
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	alice := s.NewUser(t, "Alice")
	code, hdr, body := s.Do(t, "GET", "/no/such/route", "", nil, alice.Token)
	wantProblem(t, code, hdr, body, 404, rest.ProblemCodeNotFound)
	code, hdr, body = s.Do(t, "DELETE", "/chats", "", nil, alice.Token)
	wantProblem(t, code, hdr, body, 405, rest.ProblemCodeMethodNotAllowed)
	big := `{"client_msg_id":"big","text":"` + strings.Repeat("x", 70<<10) + `"}`
	code, hdr, body = s.Do(t, "POST", "/chats/1/messages", "application/json", strings.NewReader(big), alice.Token)
	wantProblem(t, code, hdr, body, 422, rest.ProblemCodePayloadTooLarge)
	code, hdr, body = s.Do(t, "POST", "/register", "text/plain", strings.NewReader("hello"), "")
	if code != 415 && code != 400 {
		t.Errorf("wrong content type: got %d %s, want 415 or 400", code, body)
	}
	wantProblem(t, code, hdr, body, code, map[int]rest.ProblemCode{415: rest.ProblemCodeUnsupportedMediaType, 400: rest.ProblemCodeBadRequest}[code])
	code, hdr, body = s.Do(t, "GET", "/chats/abc", "", nil, alice.Token)
	if code != 400 && code != 422 {
		t.Errorf("non-numeric id: got %d %s, want 400", code, body)
	}
	if hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("missing security headers: %v", hdr)
	}
	if !strings.Contains(s.Logs.String(), `"request_id"`) {
		t.Error("request logs carry no request id")
	}
}
