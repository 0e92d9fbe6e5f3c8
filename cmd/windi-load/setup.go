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

	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// user is a registered, logged-in user, with the SDK client (carrying its
// token) of the server it registered on.
type user struct {
	id    int64
	token string
	api   *client.Client
}

// servers is a run's server base URLs and the HTTP client that every SDK
// client of the run shares, for REST and for WebSocket handshakes.
type servers struct {
	urls []string
	http *http.Client
}

func newServers(urls []string, conc int) (*servers, error) {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * conc * len(urls),
		MaxIdleConnsPerHost: 2 * conc,
		IdleConnTimeout:     30 * time.Second,
	}
	s := &servers{urls: urls, http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
	// A URL the SDK refuses fails the run before any request.
	for _, u := range urls {
		if _, err := s.client(u, ""); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *servers) close() { s.http.CloseIdleConnections() }

// client returns an SDK client for the server at url that carries token
// ("" for none).
func (s *servers) client(url, token string) (*client.Client, error) {
	opts := []client.Option{client.WithHTTPClient(s.http)}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return client.New(url, opts...)
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
// suffix, user i on the next server in turn; registration hashes the
// password on the server (argon2id), so the pool bounds how many the
// server hashes at once. It calls the generated REST client rather than
// Client.Register and Client.Login because a 429 or 503 is retried after
// its Retry-After, which only the response has.
func (s *servers) createUsers(ctx context.Context, n, conc int, runID string, progress func(done int), warn func(string, ...any)) ([]user, error) {
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
		api, err := s.client(s.urls[i%len(s.urls)], "")
		if err != nil {
			return err
		}
		email := fmt.Sprintf("load-%s-%d@example.com", runID, i)
		name := fmt.Sprintf("load %s %d", runID, i)
		for attempt := 0; ; attempt++ {
			res, err := api.REST.RegisterWithResponse(ctx, rest.RegisterRequest{Name: name, Email: email, Password: pw})
			if err != nil {
				return fmt.Errorf("register user %d: %w", i, err)
			}
			if res.JSON201 != nil {
				users[i].id = res.JSON201.ID
				break
			}
			d, ok := retryable(res.HTTPResponse, attempt)
			if !ok {
				return fmt.Errorf("register user %d: %w", i, client.ResponseError(res.HTTPResponse, res.Body))
			}
			limited("registrations", d)
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
		}
		for attempt := 0; ; attempt++ {
			res, err := api.REST.LoginWithFormdataBodyWithResponse(ctx, rest.LoginForm{Username: email, Password: pw})
			if err != nil {
				return fmt.Errorf("login user %d: %w", i, err)
			}
			if res.JSON200 != nil {
				users[i].token = res.JSON200.AccessToken
				break
			}
			d, ok := retryable(res.HTTPResponse, attempt)
			if !ok {
				return fmt.Errorf("login user %d: %w", i, client.ResponseError(res.HTTPResponse, res.Body))
			}
			limited("logins", d)
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
		}
		// Only the access token is kept: the tool never refreshes, so a
		// run must end within the tokens' life (JWT_TTL).
		api.SetToken(users[i].token)
		users[i].api = api
		if progress != nil {
			progress(int(done.Add(1)))
		}
		return nil
	})
	return users, err
}

// createPrivate opens the private chat of a and b (as a).
func createPrivate(ctx context.Context, i int, a, b user) (int64, error) {
	ch, err := a.api.PrivateChat(ctx, b.id)
	if err != nil {
		return 0, fmt.Errorf("create private chat %d: %w", i, err)
	}
	return ch.ID, nil
}

// createGroup creates a group owned by users[0] with every other user.
func createGroup(ctx context.Context, name string, users []user) (int64, error) {
	ids := make([]int64, 0, len(users)-1)
	for _, u := range users[1:] {
		ids = append(ids, u.id)
	}
	ch, err := users[0].api.CreateGroup(ctx, name, ids...)
	if err != nil {
		return 0, fmt.Errorf("create group: %w", err)
	}
	return ch.ID, nil
}
