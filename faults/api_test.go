package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest/speccheck"
)

// api is a REST client for one base URL (the proxy, or one replica).
type api struct {
	base string
	hc   *http.Client
}

// newAPI returns a client of base whose every answer from a replica is
// checked against api/openapi.yaml; a mismatch fails t. What nginx answers
// itself (a 502 while a replica is down) is not the server's and is left
// out.
func newAPI(t testing.TB, base string) *api {
	t.Helper()
	tr := &speccheck.Transport{Checker: spec(t), R: speccheck.ForTest(t), Skip: func(resp *http.Response) string {
		if resp.Header.Get("X-Windi-Replica") == "" {
			return "answered by the proxy, not a replica"
		}
		return ""
	}}
	return &api{base: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: 15 * time.Second, Transport: tr}}
}

// spec returns the checker of api/openapi.yaml.
func spec(t testing.TB) *speccheck.Checker {
	t.Helper()
	c, err := speccheck.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends a request and returns the status and body; no test helpers,
// so any goroutine may use it.
func (a *api) call(ctx context.Context, method, path, token string, body any) (int, []byte, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case url.Values:
		rd, ctype = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// must calls and fails the test unless the status is want; out (unless
// nil) receives the JSON answer. Only from the test's goroutine.
func (a *api) must(t testing.TB, method, path, token string, body any, want int, out any) {
	t.Helper()
	code, data, err := a.call(context.Background(), method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		t.Fatalf("%s %s: got status %d, want %d; body: %s", method, path, code, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

// user is a registered, logged-in user.
type user struct {
	ID    int64
	Name  string
	Token string
}

func (a *api) register(t testing.TB, name string) *user {
	t.Helper()
	email := fmt.Sprintf("faults-%s-%s@example.com", strings.ToLower(name), randomHex(5))
	const password = "faults correct horse"
	var u struct {
		ID int64 `json:"id"`
	}
	a.must(t, http.MethodPost, "/register", "", map[string]string{"name": name, "email": email, "password": password}, http.StatusCreated, &u)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	a.must(t, http.MethodPost, "/login", "", url.Values{"username": {email}, "password": {password}}, http.StatusOK, &tok)
	return &user{ID: u.ID, Name: name, Token: tok.AccessToken}
}

// message is the Message schema, the fields the tests look at.
type message struct {
	ID          int64  `json:"id"`
	ChatID      int64  `json:"chat_id"`
	Seq         int64  `json:"seq"`
	SenderID    int64  `json:"sender_id"`
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id"`
}

// history reads a chat's whole history, oldest first, page by page with
// after_seq.
func (a *api) history(ctx context.Context, token string, chatID int64) ([]message, error) {
	var all []message
	var after int64
	for {
		code, data, err := a.call(ctx, http.MethodGet, fmt.Sprintf("/history/%d?limit=100&after_seq=%d", chatID, after), token, nil)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("history of chat %d: status %d: %s", chatID, code, data)
		}
		var page []message
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 100 {
			return all, nil
		}
		after = page[len(page)-1].Seq
	}
}

// presence returns the online members of a chat.
func (a *api) presence(ctx context.Context, token string, chatID int64) (map[int64]bool, error) {
	code, data, err := a.call(ctx, http.MethodGet, fmt.Sprintf("/chats/%d/presence", chatID), token, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("presence of chat %d: status %d: %s", chatID, code, data)
	}
	var ids []int64
	if err := json.Unmarshal(data, &ids); err != nil {
		return nil, err
	}
	on := map[int64]bool{}
	for _, id := range ids {
		on[id] = true
	}
	return on, nil
}

// wsURL turns an http(s) base URL into the ws(s) URL of path.
func wsURL(base, path string) string {
	return "ws" + strings.TrimPrefix(strings.TrimRight(base, "/"), "http") + path
}
