package handlers_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/client/rest"
)

// This file holds the tests of issue 15 on the HTTP side: password
// hashing cannot exhaust the server, limits count before hashing and key
// on the real client address, limit keys stay short, and odd input gets
// the right answer.

// rawDo sends one request with extra headers and returns status, headers
// and body.
func rawDo(t *testing.T, s *apptest.Server, method, path, ctype, body string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// burst runs n calls at once (released together) and returns how many
// ended with each status.
func burst(n int, call func(i int) int) map[int]int {
	var mu sync.Mutex
	got := map[int]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			code := call(i)
			mu.Lock()
			got[code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return got
}

// freshWindow waits, when the current minute ends within need, for the
// next one: the limits count in fixed one-minute windows, and a burst cut
// in two by a window boundary would be counted twice.
func freshWindow(need time.Duration) {
	now := time.Now()
	if left := now.Truncate(time.Minute).Add(time.Minute).Sub(now); left < need {
		time.Sleep(left + 10*time.Millisecond)
	}
}

func loginForm(email, password string) string {
	return url.Values{"username": {email}, "password": {password}}.Encode()
}

const formType = "application/x-www-form-urlencoded"

// TestLoginAttemptsCountBeforeHashing fires concurrent bad logins: the
// limits hold exactly, so no more passwords are hashed than the limit
// allows, however many attempts arrive at once. On the code that counted
// failures after hashing, every attempt of the burst passed the check
// before the first failure was counted.
func TestLoginAttemptsCountBeforeHashing(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		limits := func(c *app.Config) { c.Limits = app.Limits{LoginPerEmail: 3, LoginPerIP: 4} }
		a, b := env.Start(t, limits), env.Start(t, limits)
		servers := []*apptest.Server{a, b}
		freshWindow(5 * time.Second)

		// One unknown email from many addresses: the per-email limit.
		got := burst(30, func(i int) int {
			code, _, _ := rawDo(t, servers[i%2], "POST", "/login", formType, loginForm("ghost@example.com", "wrong-password"),
				map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i+1)})
			return code
		})
		if got[401] != 3 || got[429] != 27 {
			t.Errorf("per email: got statuses %v, want exactly 3 × 401 (hashed) and 27 × 429", got)
		}
		// Many unknown emails from one address: the per-IP limit.
		got = burst(30, func(i int) int {
			code, _, _ := rawDo(t, servers[i%2], "POST", "/login", formType, loginForm(fmt.Sprintf("ghost%d@example.com", i), "wrong-password"),
				map[string]string{"X-Forwarded-For": "203.0.113.50"})
			return code
		})
		if got[401] != 4 || got[429] != 26 {
			t.Errorf("per IP: got statuses %v, want exactly 4 × 401 and 26 × 429", got)
		}
	})
}

// TestRegisterLimitedPerIP: registrations count per client address across
// replicas, before hashing; IPv6 addresses of one /64 count together.
func TestRegisterLimitedPerIP(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		limits := func(c *app.Config) { c.Limits = app.Limits{RegisterPerIP: 5} }
		a, b := env.Start(t, limits), env.Start(t, limits)
		servers := []*apptest.Server{a, b}
		freshWindow(5 * time.Second)
		register := func(s *apptest.Server, ip string) (int, http.Header, []byte) {
			body := fmt.Sprintf(`{"name":"R","email":"r-%s@example.com","password":"password-123"}`, apptest.RandomID())
			return rawDo(t, s, "POST", "/register", "application/json", body, map[string]string{"X-Forwarded-For": ip})
		}
		got := burst(20, func(i int) int {
			code, _, _ := register(servers[i%2], "192.0.2.10")
			return code
		})
		if got[201] != 5 || got[429] != 15 {
			t.Errorf("got statuses %v, want exactly 5 × 201 and 15 × 429", got)
		}
		code, hdr, body := register(a, "192.0.2.10")
		wantProblem(t, code, hdr, body, 429, rest.ProblemCodeRateLimited)
		if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 || n > 60 {
			t.Errorf("got Retry-After %q, want 1..60 seconds", hdr.Get("Retry-After"))
		}
		if code, _, body := register(b, "192.0.2.11"); code != 201 {
			t.Errorf("another address: got %d %s, want 201", code, body)
		}
		for i := range 5 {
			if code, _, body := register(servers[i%2], fmt.Sprintf("2001:db8:1:1::%x", i+1)); code != 201 {
				t.Fatalf("IPv6 registration %d: got %d %s, want 201", i, code, body)
			}
		}
		if code, _, _ := register(a, "2001:db8:1:1:ffff::9"); code != 429 {
			t.Errorf("6th registration from the same /64: got %d, want 429", code)
		}
		if code, _, body := register(a, "2001:db8:1:2::1"); code != 201 {
			t.Errorf("another /64: got %d %s, want 201", code, body)
		}
	})
}

// TestPasswordHashingIsBounded lets one hash run at a time and a caller
// wait only 20 ms: a burst of registrations and logins gets some answers
// and, for the rest, 503 unavailable with Retry-After, never anything
// else. Without the bound every request hashes at once (each holding the
// argon2 memory) and all of them succeed.
func TestPasswordHashingIsBounded(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.StartMain(t, func(m *app.Main) {
			// About 20–40 ms a hash here: long enough for a burst to queue.
			m.Argon2 = auth.Argon2Params{Memory: 8 * 1024, Time: 2, Threads: 1}
			m.HashSlots, m.HashWait = 1, 20*time.Millisecond
		})
		u := s.NewUser(t, "Hasher") // one registration and one login, alone: both pass
		var mu sync.Mutex
		var busy [][]byte
		check := func(code int, hdr http.Header, body []byte) int {
			if code == 503 {
				mu.Lock()
				defer mu.Unlock()
				busy = append(busy, body)
				if hdr.Get("Retry-After") != "1" {
					t.Errorf("503 with Retry-After %q, want 1", hdr.Get("Retry-After"))
				}
			}
			return code
		}
		got := burst(12, func(i int) int {
			body := fmt.Sprintf(`{"name":"B","email":"b-%s@example.com","password":"password-123"}`, apptest.RandomID())
			return check(rawDo(t, s, "POST", "/register", "application/json", body, nil))
		})
		if got[201] < 1 || got[503] < 1 || got[201]+got[503] != 12 {
			t.Errorf("registrations: got statuses %v, want some 201 and some 503, nothing else", got)
		}
		got = burst(12, func(int) int {
			return check(rawDo(t, s, "POST", "/login", formType, loginForm(u.Email, u.Password), nil))
		})
		if got[200] < 1 || got[503] < 1 || got[200]+got[503] != 12 {
			t.Errorf("logins: got statuses %v, want some 200 and some 503, nothing else", got)
		}
		for _, b := range busy {
			wantProblem(t, 503, http.Header{"Content-Type": {"application/problem+json"}}, b, 503, rest.ProblemCodeUnavailable)
		}
	})
}

// TestClientIPFromTrustedProxiesOnly: X-Forwarded-For counts only when the
// peer is a trusted proxy, and then only its right-most untrusted entry.
func TestClientIPFromTrustedProxiesOnly(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		freshWindow(5 * time.Second)
		// Nobody trusted: a rotating header is ignored, every attempt is
		// 127.0.0.1's.
		direct := env.Start(t, func(c *app.Config) {
			c.Limits = app.Limits{LoginPerIP: 3}
			c.TrustedProxies = []*net.IPNet{}
		})
		var codes []int
		for i := range 5 {
			code, _, _ := rawDo(t, direct, "POST", "/login", formType, loginForm(fmt.Sprintf("x%d@example.com", i), "wrong-password"),
				map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1)})
			codes = append(codes, code)
		}
		if fmt.Sprint(codes) != "[401 401 401 429 429]" {
			t.Errorf("untrusted peer, rotating X-Forwarded-For: got %v, want [401 401 401 429 429]", codes)
		}

		// Loopback trusted (the default): the proxy's entry (right-most)
		// is the client; what the client wrote before it does not count,
		// and a private address is a client like any other.
		proxied := env.Start(t, func(c *app.Config) { c.Limits = app.Limits{LoginPerIP: 3} })
		codes = codes[:0]
		for i := range 4 {
			code, _, _ := rawDo(t, proxied, "POST", "/login", formType, loginForm(fmt.Sprintf("y%d@example.com", i), "wrong-password"),
				map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d, 10.1.2.3", i+1)})
			codes = append(codes, code)
		}
		if fmt.Sprint(codes) != "[401 401 401 429]" {
			t.Errorf("spoofed left entries: got %v, want [401 401 401 429] (all from 10.1.2.3)", codes)
		}
		if code, _, body := rawDo(t, proxied, "POST", "/login", formType, loginForm("z@example.com", "wrong-password"),
			map[string]string{"X-Forwarded-For": "10.1.2.4"}); code != 401 {
			t.Errorf("another client behind the proxy: got %d %s, want 401", code, body)
		}
	})
}

// TestLimitKeysAreBounded: client input never becomes a limit key as it
// came. A 10 KB X-Forwarded-For and a 254-byte email leave only short
// keys in Redis, none holding the email; a 30 KB header is refused
// before anything runs.
func TestLimitKeysAreBounded(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t, func(c *app.Config) { c.Limits = app.Limits{LoginPerEmail: 10, LoginPerIP: 10, RegisterPerIP: 10} })
		email := strings.Repeat("e", 240) + "@example.com"
		junk := strings.Repeat("A", 10<<10)
		for _, xff := range []string{junk, "203.0.113.9, " + junk} {
			code, _, body := rawDo(t, s, "POST", "/login", formType, loginForm(email, "wrong-password"), map[string]string{"X-Forwarded-For": xff})
			if code != 401 {
				t.Fatalf("login with a long X-Forwarded-For: got %d %s, want 401", code, body)
			}
		}
		body := fmt.Sprintf(`{"name":"K","email":%q,"password":"password-123"}`, email)
		if code, _, resp := rawDo(t, s, "POST", "/register", "application/json", body, map[string]string{"X-Forwarded-For": junk}); code != 201 {
			t.Fatalf("register: got %d %s, want 201", code, resp)
		}
		code, _, _ := rawDo(t, s, "GET", "/healthz", "", "", map[string]string{"X-Forwarded-For": strings.Repeat("B", 30<<10)})
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("30 KB header: got %d, want 431", code)
		}
		if env.Dialect != "postgres" {
			return // the in-process broker keeps its keys to itself
		}
		opts, err := redis.ParseURL(env.RedisURL)
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		keys, err := rdb.Keys(context.Background(), env.Prefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var limitKeys []string
		for _, k := range keys {
			if strings.Contains(k, "login:") || strings.Contains(k, "register:") {
				limitKeys = append(limitKeys, k)
			}
			if len(k) > len(env.Prefix)+80 || strings.Contains(k, "eeee") || strings.Contains(k, "AAAA") {
				t.Errorf("key %.120q… (%d bytes) carries client input", k, len(k))
			}
		}
		// The junk is unparseable, so both logins count for the peer.
		slices.Sort(limitKeys)
		if len(limitKeys) != 3 {
			t.Errorf("got limit keys %q, want 3: login by email (hashed), login and registration by 127.0.0.1", limitKeys)
		}
	})
}

// chunked posts body with Transfer-Encoding: chunked (no Content-Length),
// as a client streaming it would.
func chunked(t *testing.T, s *apptest.Server, path, token, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+path, io.NopCloser(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) > 0 || resp.Request.ContentLength != -1 {
		t.Logf("request sent with Content-Length %d", resp.Request.ContentLength)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestOddInput: each odd request gets one clear, documented answer.
func TestOddInput(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		u := s.NewUser(t, "Odd")
		big := strings.Repeat("a", 70_000)

		t.Run("oversized chunked body", func(t *testing.T) {
			for _, c := range []struct{ path, token string }{
				{"/register", ""}, {"/chats", u.Token}, {"/chats", ""}, {"/chats", "not-a-jwt"},
			} {
				code, hdr, body := chunked(t, s, c.path, c.token, `{"name":"`+big+`"}`)
				wantProblem(t, code, hdr, body, 422, rest.ProblemCodePayloadTooLarge)
				if strings.Contains(string(body), "code=413") {
					t.Errorf("%s: internal detail leaks: %s", c.path, body)
				}
			}
			// Under the limit, chunked is fine.
			code, _, body := chunked(t, s, "/register", "", `{"name":"C","email":"chunked@example.com","password":"password-123"}`)
			if code != 201 {
				t.Errorf("small chunked body: got %d %s, want 201", code, body)
			}
		})
		t.Run("trailing bytes", func(t *testing.T) {
			for _, tail := range []string{" x", `{"name":"again"}`, "]", "\x00"} {
				code, hdr, body := s.Do(t, "POST", "/register", "application/json",
					strings.NewReader(`{"name":"T","email":"t@example.com","password":"password-123"}`+tail), "")
				wantProblem(t, code, hdr, body, 400, rest.ProblemCodeBadRequest)
			}
			code, _, body := s.Do(t, "POST", "/register", "application/json",
				strings.NewReader("{\"name\":\"T\",\"email\":\"t@example.com\",\"password\":\"password-123\"}\n\t "), "")
			if code != 201 {
				t.Errorf("trailing whitespace: got %d %s, want 201", code, body)
			}
		})
		t.Run("invalid UTF-8 in a string", func(t *testing.T) {
			for _, c := range []struct{ path, body, field string }{
				{"/register", "{\"name\":\"bad\xff\",\"email\":\"u8@example.com\",\"password\":\"password-123\"}", "name"},
				{"/chats", "{\"type\":\"group\",\"name\":\"g\xc3\",\"member_ids\":[]}", "name"},
				{"/chats", "{\"type\":\"group\",\"name\":\"g\",\"x\xfe\":1}", "x\ufffd"},
			} {
				code, hdr, body := s.Do(t, "POST", c.path, "application/json", strings.NewReader(c.body), u.Token)
				wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
				if want := fmt.Sprintf(`"field":%q`, c.field); !strings.Contains(string(body), want) {
					t.Errorf("%s: got %s, want errors naming %s", c.path, body, want)
				}
			}
			r, err := s.Client.SearchUsersWithResponse(bg, &rest.SearchUsersParams{Q: "bad"}, u.Auth())
			if err != nil || r.JSON200 == nil || len(*r.JSON200) != 0 {
				t.Errorf("a user with an invalid name was stored: %v %s", err, r.Body)
			}
		})
		t.Run("every bad field is listed", func(t *testing.T) {
			code, hdr, body := s.Do(t, "POST", "/register", "application/json",
				strings.NewReader(`{"name":"","email":"not-an-email","password":"short"}`), "")
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
			for _, f := range []string{"name", "email", "password"} {
				if !strings.Contains(string(body), fmt.Sprintf(`"field":%q`, f)) {
					t.Errorf("got %s, want %s among the errors", body, f)
				}
			}
			// A mixed-script email fails the same format check, beside a
			// field the schema catches.
			code, hdr, body = s.Do(t, "POST", "/register", "application/json",
				strings.NewReader(`{"name":"","email":"pаypal@example.com","password":"password-123"}`), "")
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
			for _, f := range []string{"name", "email"} {
				if !strings.Contains(string(body), fmt.Sprintf(`"field":%q`, f)) {
					t.Errorf("got %s, want %s among the errors", body, f)
				}
			}
			code, hdr, body = s.Do(t, "GET", "/history/1?limit=0&offset=-1", "", nil, u.Token)
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
			if !strings.Contains(string(body), `"field":"limit"`) || !strings.Contains(string(body), `"field":"offset"`) {
				t.Errorf("got %s, want limit and offset among the errors", body)
			}
			code, hdr, body = s.Do(t, "POST", "/chats", "application/json",
				strings.NewReader(`{"type":"group","name":"","member_ids":["x"]}`), u.Token)
			wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
			if !strings.Contains(string(body), `"field":"name"`) || !strings.Contains(string(body), `"field":"member_ids.0"`) {
				t.Errorf("got %s, want name and member_ids.0 among the errors", body)
			}
		})
		t.Run("405 names the allowed methods", func(t *testing.T) {
			for _, c := range []struct{ method, path, allow string }{
				{"BREW", "/register", "POST"}, {"GET", "/login", "POST"}, {"DELETE", "/chats/1", "GET"},
				{"PUT", "/chats", "GET, POST"}, {"OPTIONS", "/chats", "GET, POST"},
			} {
				code, hdr, body := s.Do(t, c.method, c.path, "", nil, u.Token)
				wantProblem(t, code, hdr, body, 405, rest.ProblemCodeMethodNotAllowed)
				if got := hdr.Get("Allow"); got != c.allow {
					t.Errorf("%s %s: got Allow %q, want %q", c.method, c.path, got, c.allow)
				}
			}
		})
		t.Run("tokens are not cached", func(t *testing.T) {
			code, hdr, body := s.Do(t, "POST", "/login", formType, strings.NewReader(loginForm(u.Email, u.Password)), "")
			if code != 200 || hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("login: got %d Cache-Control %q (%s), want 200 no-store", code, hdr.Get("Cache-Control"), body)
			}
			for _, path := range []string{"/users/me", "/chats"} {
				if _, hdr, _ := s.Do(t, "GET", path, "", nil, u.Token); hdr.Get("Cache-Control") != "no-store" {
					t.Errorf("%s: got Cache-Control %q, want no-store", path, hdr.Get("Cache-Control"))
				}
			}
		})
		t.Run("JSON posted to login", func(t *testing.T) {
			code, hdr, body := s.Do(t, "POST", "/login", "application/json",
				strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, u.Email, u.Password)), "")
			wantProblem(t, code, hdr, body, 415, rest.ProblemCodeUnsupportedMediaType)
			if !strings.Contains(string(body), "application/x-www-form-urlencoded") || !strings.Contains(string(body), "form") {
				t.Errorf("got %s, want a detail saying a form (application/x-www-form-urlencoded) is expected", body)
			}
		})
	})
}

// TestMetricsLabelsBounded: 1,000 requests with odd methods and unknown
// paths, unauthenticated, add at most a couple of series to /metrics.
func TestMetricsLabelsBounded(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		series := func() (int, string) {
			_, _, body := s.Do(t, "GET", "/metrics", "", nil, "")
			n := 0
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, "windi_http_request") {
					n++
				}
			}
			return n, string(body)
		}
		// Warm up the series the loop below is allowed to create: an odd
		// method on a known route and on an unknown one.
		s.Do(t, "WARMUP", "/register", "", nil, "")
		s.Do(t, "WARMUP", "/no/such/route", "", nil, "")
		s.Do(t, "GET", "/no/such/route", "", nil, "")
		series() // the scrape itself is counted after it answers
		before, _ := series()
		for i := range 1000 {
			method := fmt.Sprintf("M%04dX", i)
			path := "/register"
			switch i % 3 {
			case 1:
				path = fmt.Sprintf("/nowhere-%d", i)
			case 2:
				method, path = "GET", fmt.Sprintf("/nowhere/%d/deeper", i)
			}
			code, _, _ := s.Do(t, method, path, "", nil, "")
			if code != 405 && code != 404 {
				t.Fatalf("%s %s: got %d, want 404 or 405", method, path, code)
			}
		}
		after, body := series()
		if after != before {
			t.Errorf("/metrics has %d windi_http_request* lines after 1,000 odd requests, %d before; want no growth", after, before)
		}
		for _, want := range []string{`method="other",route="/register",status="405"`, `method="other",route="unmatched",status="404"`, `method="GET",route="unmatched",status="404"`} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks a series with %s", want)
			}
		}
		if strings.Contains(body, "M0999X") || strings.Contains(body, "nowhere") {
			t.Error("/metrics holds a label value taken from a request")
		}
	})
}

// TestEmailIdentity: addresses that read the same are one account, look-
// alike mixed-script addresses are refused, and an account stored in the
// old (pre-NFKC) form still logs in.
func TestEmailIdentity(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		reg := func(email string) (int, http.Header, []byte) {
			return s.Do(t, "POST", "/register", "application/json",
				strings.NewReader(fmt.Sprintf(`{"name":"I","email":%q,"password":"password-123"}`, email)), "")
		}
		if code, _, body := reg("Finn@Example.com"); code != 201 || !strings.Contains(string(body), `"email":"finn@example.com"`) {
			t.Fatalf("register: got %d %s", code, body)
		}
		for _, twin := range []string{"\ufb01nn@example.com", "ｆｉｎｎ@ｅｘａｍｐｌｅ.ｃｏｍ", " FINN@EXAMPLE.COM"} {
			code, hdr, body := reg(twin)
			wantProblem(t, code, hdr, body, 409, rest.ProblemCodeEmailTaken)
		}
		// Logging in with a form that reads the same reaches the account.
		if code, _, body := s.Do(t, "POST", "/login", formType, strings.NewReader(loginForm("ｆｉｎｎ@example.com", "password-123")), ""); code != 200 {
			t.Errorf("login with the fullwidth form: got %d %s, want 200", code, body)
		}
		code, hdr, body := reg("p\u0430ypal@example.com") // Cyrillic а among Latin letters
		wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
		if !strings.Contains(string(body), `"field":"email"`) || !strings.Contains(string(body), "scripts") {
			t.Errorf("mixed script: got %s, want an email error about scripts", body)
		}
		if code, _, body := reg("иван@example.com"); code != 201 {
			t.Errorf("an all-Cyrillic local part: got %d %s, want 201", code, body)
		}

		// An account in the old form (written by a replica of an older
		// version during a rolling upgrade, after the migration ran) logs in
		// by the old form.
		hash, err := auth.HashPassword("legacy-pass", auth.Argon2Params{Memory: 64, Time: 1, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Store.CreateUser(t.Context(), "Old", "\ufb01x@example.com", hash); err != nil {
			t.Fatal(err)
		}
		if code, _, body := s.Do(t, "POST", "/login", formType, strings.NewReader(loginForm("\ufb01x@example.com", "legacy-pass")), ""); code != 200 {
			t.Errorf("login of an old-form account: got %d %s, want 200", code, body)
		}
		// Its normal form cannot register beside it when typed in the old form.
		code, hdr, body = reg("\ufb01x@example.com")
		wantProblem(t, code, hdr, body, 409, rest.ProblemCodeEmailTaken)
	})
}
