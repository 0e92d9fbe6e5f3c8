package handlers_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

func TestRateLimitsSharedAcrossReplicas(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		limits := func(c *app.Config) {
			c.Limits = app.Limits{LoginPerEmail: 3, LoginPerIP: 5, UserSendRate: 4}
		}
		a, b := env.Start(t, limits), env.Start(t, limits)
		// Limits count in fixed windows aligned to the minute: keep this
		// test's attempts inside one.
		if s := time.Now().Second(); s >= 50 {
			time.Sleep(time.Duration(61-s) * time.Second)
		}
		alice := a.NewUser(t, "Alice") // its login is the first attempt for its email

		// Per email: every attempt counts, through both replicas, right
		// password or not; once 3 are used up, even the right one waits.
		codes := []int{}
		for i, pw := range []string{"wrong password", alice.Password, alice.Password} {
			s := []*apptest.Server{a, b}[i%2]
			code, hdr, body := s.Do(t, "POST", "/login", "application/x-www-form-urlencoded",
				apptest.Form("username", alice.Email, "password", pw), "")
			codes = append(codes, code)
			if code == 429 {
				wantProblem(t, code, hdr, body, 429, rest.ProblemCodeRateLimited)
				if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 || n > 60 {
					t.Errorf("got Retry-After %q, want 1..60 seconds", hdr.Get("Retry-After"))
				}
			}
		}
		if fmt.Sprint(codes) != "[401 200 429]" {
			t.Errorf("got %v, want [401 200 429] (3 attempts per email per minute, the first one at sign-up)", codes)
		}
		// Per IP: attempts for other emails from the same address reach the
		// IP limit (5; 4 used above).
		codes = codes[:0]
		for i := range 2 {
			code, _, _ := b.Do(t, "POST", "/login", "application/x-www-form-urlencoded",
				apptest.Form("username", fmt.Sprintf("nobody%d@example.com", i), "password", "whatever1"), "")
			codes = append(codes, code)
		}
		if fmt.Sprint(codes) != "[401 429]" {
			t.Errorf("per IP: got %v, want [401 429] (5 attempts per minute, 4 used)", codes)
		}

		// REST sends per user per second.
		g := group(t, a, alice, "limited")
		got429 := false
		for i := range 12 { // within two one-second windows at worst, one holds > 4
			s := a
			if i%2 == 1 {
				s = b
			}
			r := send(t, s, alice, g.ID, fmt.Sprintf("r%d", i), "hi")
			if r.StatusCode() == 429 {
				got429 = true
				if r.HTTPResponse.Header.Get("Retry-After") == "" {
					t.Error("429 without Retry-After")
				}
			}
		}
		if !got429 {
			t.Error("12 quick sends with a limit of 4 per second were never limited")
		}
	})
}
