package handlers_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/gen"
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
		alice := a.NewUser(t, "Alice") // one login attempt spent

		// Per email: wrong passwords through both replicas count together.
		codes := []int{}
		for i := range 3 {
			s := a
			if i%2 == 1 {
				s = b
			}
			code, hdr, body := s.Do(t, "POST", "/login", "application/x-www-form-urlencoded",
				apptest.Form("username", alice.Email, "password", "wrong password"), "")
			codes = append(codes, code)
			if code == 429 {
				wantProblem(t, code, hdr, body, 429, gen.ProblemCodeRateLimited)
				if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 || n > 60 {
					t.Errorf("got Retry-After %q, want 1..60 seconds", hdr.Get("Retry-After"))
				}
			}
		}
		if fmt.Sprint(codes) != "[401 401 429]" {
			t.Errorf("got %v, want two failures then 429 (limit 3 per minute, one spent on login)", codes)
		}
		// Per IP: other emails from the same address hit the IP limit (5).
		codes = codes[:0]
		for i := range 3 {
			code, _, _ := b.Do(t, "POST", "/login", "application/x-www-form-urlencoded",
				apptest.Form("username", fmt.Sprintf("nobody%d@example.com", i), "password", "whatever1"), "")
			codes = append(codes, code)
		}
		if fmt.Sprint(codes) != "[401 401 429]" {
			t.Errorf("per IP: got %v, want [401 401 429] (5 per minute, 3 spent: the attempt refused per email did not count)", codes)
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
