package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/windi-chat/windi/gen"
)

// user is a registered, logged-in user.
type user struct {
	id    int64
	token string
}

// rest is one generated API client per base URL.
type rest struct {
	clients []*gen.ClientWithResponses
	http    *http.Client
}

func newRest(urls []string, conc int) (*rest, error) {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * conc * len(urls),
		MaxIdleConnsPerHost: 2 * conc,
		IdleConnTimeout:     30 * time.Second,
	}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	r := &rest{http: hc}
	for _, u := range urls {
		c, err := gen.NewClientWithResponses(u, gen.WithHTTPClient(hc))
		if err != nil {
			return nil, err
		}
		r.clients = append(r.clients, c)
	}
	return r, nil
}

func (r *rest) close() { r.http.CloseIdleConnections() }

func (r *rest) client(i int) *gen.ClientWithResponses { return r.clients[i%len(r.clients)] }

func bearer(token string) gen.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// retryable answers whether a setup call should be repeated, and after how
// long: 429 (login limits per IP) and 503 honour Retry-After.
func retryable(resp *http.Response, attempt int) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) || attempt >= 60 {
		return 0, false
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		return min(time.Duration(s)*time.Second, 30*time.Second), true
	}
	return min(time.Duration(attempt+1)*250*time.Millisecond, 5*time.Second), true
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pool runs fn(i) for i in [0, n) on conc workers and returns the first
// error; the others stop taking work after it.
func pool(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && err != context.Canceled {
		return err
	}
	return ctx.Err()
}

// createUsers registers and logs in n users with a run-unique email
// suffix; registration hashes the password on the server (argon2id), so
// the pool bounds how many the server hashes at once.
func (r *rest) createUsers(ctx context.Context, n, conc int, runID string, progress func(done int), warn func(string, ...any)) ([]user, error) {
	users := make([]user, n)
	pw := "load-" + randomHex(8)
	var done atomic.Int64
	var warned sync.Once
	limited := func(what string, d time.Duration) {
		warned.Do(func() {
			warn("setup: the server limits %s (429/503); retrying after %v. For big setups start it with the login limits off "+
				"(WINDI_REGISTER_LIMIT_IP=0 WINDI_LOGIN_LIMIT_IP=0)", what, d)
		})
	}
	err := pool(ctx, n, conc, func(ctx context.Context, i int) error {
		c := r.client(i)
		email := fmt.Sprintf("load-%s-%d@example.com", runID, i)
		name := fmt.Sprintf("load %s %d", runID, i)
		for attempt := 0; ; attempt++ {
			res, err := c.RegisterWithResponse(ctx, gen.RegisterRequest{Name: name, Email: email, Password: pw})
			if err != nil {
				return fmt.Errorf("register user %d: %w", i, err)
			}
			if res.JSON201 != nil {
				users[i].id = res.JSON201.ID
				break
			}
			d, ok := retryable(res.HTTPResponse, attempt)
			if !ok {
				return fmt.Errorf("register user %d: status %d: %s", i, res.StatusCode(), res.Body)
			}
			limited("registrations", d)
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
		}
		for attempt := 0; ; attempt++ {
			res, err := c.LoginWithFormdataBodyWithResponse(ctx, gen.LoginForm{Username: email, Password: pw})
			if err != nil {
				return fmt.Errorf("login user %d: %w", i, err)
			}
			if res.JSON200 != nil {
				users[i].token = res.JSON200.AccessToken
				break
			}
			d, ok := retryable(res.HTTPResponse, attempt)
			if !ok {
				return fmt.Errorf("login user %d: status %d: %s", i, res.StatusCode(), res.Body)
			}
			limited("logins", d)
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(int(done.Add(1)))
		}
		return nil
	})
	return users, err
}

// createPrivate opens the private chat of a and b (as a).
func (r *rest) createPrivate(ctx context.Context, i int, a, b user) (int64, error) {
	var body gen.CreateChatRequest
	if err := body.FromCreatePrivateChat(gen.CreatePrivateChat{Type: "private", UserID: b.id}); err != nil {
		return 0, err
	}
	res, err := r.client(i).CreateChatWithResponse(ctx, body, bearer(a.token))
	if err != nil {
		return 0, fmt.Errorf("create private chat %d: %w", i, err)
	}
	switch {
	case res.JSON201 != nil:
		return res.JSON201.ID, nil
	case res.JSON200 != nil:
		return res.JSON200.ID, nil
	}
	return 0, fmt.Errorf("create private chat %d: status %d: %s", i, res.StatusCode(), res.Body)
}

// createGroup creates a group owned by users[0] with every other user.
func (r *rest) createGroup(ctx context.Context, name string, users []user) (int64, error) {
	ids := make([]int64, 0, len(users)-1)
	for _, u := range users[1:] {
		ids = append(ids, u.id)
	}
	var body gen.CreateChatRequest
	if err := body.FromCreateGroupChat(gen.CreateGroupChat{Type: "group", Name: name, MemberIds: &ids}); err != nil {
		return 0, err
	}
	res, err := r.client(0).CreateChatWithResponse(ctx, body, bearer(users[0].token))
	if err != nil {
		return 0, fmt.Errorf("create group: %w", err)
	}
	if res.JSON201 == nil {
		return 0, fmt.Errorf("create group: status %d: %s", res.StatusCode(), res.Body)
	}
	return res.JSON201.ID, nil
}
