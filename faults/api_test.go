package faults

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest/speccheck"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/testkit"
)

// The tests talk to the servers through the Go SDK: a client.Client per
// user for REST, and client.Conn (see device) or a raw client.Socket for
// WebSockets.

// user is a registered, logged-in user with a Client of the proxy.
type user struct {
	ID    int64
	Name  string
	Token string
	c     *client.Client
}

// specHTTP returns the HTTP client of the tests' SDK clients: every REST
// answer from a replica is checked against api/openapi.yaml, and a
// mismatch fails t. What nginx answers itself (a 502 while a replica is
// down) is not the server's and is left out, and so are WebSocket
// upgrades (their body is the connection).
func specHTTP(t testing.TB) *http.Client {
	t.Helper()
	tr := &speccheck.Transport{
		Checker: spec(t), R: speccheck.ForTest(t),
		Base: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second},
		Skip: func(resp *http.Response) string {
			switch {
			case resp.StatusCode == http.StatusSwitchingProtocols:
				return "a WebSocket upgrade"
			case resp.Header.Get("X-Windi-Replica") == "":
				return "answered by the proxy, not a replica"
			}
			return ""
		},
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: tr}
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

// newClient returns a Client of base (the proxy, or one replica) with
// token, over hc.
func newClient(t testing.TB, hc *http.Client, base, token string) *client.Client {
	t.Helper()
	c, err := client.New(base, client.WithHTTPClient(hc), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// register registers a user through base and logs in.
func register(t testing.TB, hc *http.Client, base, name string) *user {
	t.Helper()
	c, err := client.New(base, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	email := fmt.Sprintf("faults-%s-%s@example.com", strings.ToLower(name), testkit.RandomHex(5))
	const password = "faults correct horse"
	u, err := c.Register(ctx, name, email, password)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	tok, err := c.Login(ctx, email, password)
	if err != nil {
		t.Fatalf("log in %s: %v", name, err)
	}
	return &user{ID: u.ID, Name: name, Token: tok.AccessToken, c: c}
}

// createGroup makes a group of owner with the other members; it returns
// its id.
func createGroup(t testing.TB, owner *user, name string, members ...int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ch, err := owner.c.CreateGroup(ctx, name, members...)
	if err != nil {
		t.Fatalf("create group %q: %v", name, err)
	}
	return ch.ID
}

// privateChat makes the private chat of a and b; it returns its id.
func privateChat(t testing.TB, a, b *user) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ch, err := a.c.PrivateChat(ctx, b.ID)
	if err != nil {
		t.Fatalf("private chat of %s and %s: %v", a.Name, b.Name, err)
	}
	return ch.ID
}

// history reads a chat's whole history, oldest first, page by page with
// after_seq.
func history(ctx context.Context, c *client.Client, chatID int64) ([]rest.Message, error) {
	var all []rest.Message
	limit, after := 100, int64(0)
	for {
		page, err := c.History(ctx, chatID, &rest.GetHistoryParams{Limit: &limit, AfterSeq: &after})
		if err != nil {
			return nil, fmt.Errorf("history of chat %d: %w", chatID, err)
		}
		all = append(all, page...)
		if len(page) < limit {
			return all, nil
		}
		after = page[len(page)-1].Seq
	}
}

// presence returns the online members of a chat.
func presence(ctx context.Context, c *client.Client, chatID int64) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r, err := c.REST.GetPresenceWithResponse(ctx, chatID)
	if err != nil {
		return nil, err
	}
	if r.JSON200 == nil {
		return nil, fmt.Errorf("presence of chat %d: %w", chatID, client.ResponseError(r.HTTPResponse, r.Body))
	}
	on := map[int64]bool{}
	for _, id := range *r.JSON200 {
		on[id] = true
	}
	return on, nil
}

// sendREST sends a message over REST (POST /chats/{id}/messages); it
// returns the status and body.
func sendREST(ctx context.Context, c *client.Client, chatID int64, cmid, text string) (int, string, *rest.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r, err := c.REST.SendMessageWithResponse(ctx, chatID, rest.SendMessageRequest{ClientMsgID: cmid, Text: text})
	if err != nil {
		return 0, "", nil, err
	}
	m := r.JSON200
	if m == nil {
		m = r.JSON201
	}
	return r.StatusCode(), string(r.Body), m, nil
}
