package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/windi-chat/windi/client/rest"
)

// TokenFunc returns the access token for the next request or connection.
// expired reports that the server has just rejected the previous token (a
// 401 at the WebSocket handshake, or close code 4501): the func must then
// return a different token (refresh it, or log in again) or an error,
// which ends the Conn. With expired false it may return a cached token.
// It is called before every connection attempt and every REST request,
// and must be safe for concurrent use.
type TokenFunc func(ctx context.Context, expired bool) (string, error)

// ErrNoToken is returned when the server rejected a token and the Client
// has no TokenFunc to get another one.
var ErrNoToken = errors.New("client: token rejected and no TokenFunc to get a new one")

// Client talks to one WinDI Chat server: REST through the generated client,
// WebSockets through Dial. It is safe for concurrent use.
type Client struct {
	// REST is the client generated from api/openapi.yaml. Its requests
	// carry the Client's token (when it has one) as a bearer token.
	REST *rest.ClientWithResponses

	base *url.URL
	http *http.Client

	mu        sync.Mutex // guards token and tokenFunc
	token     string
	tokenFunc TokenFunc
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send requests (REST and WebSocket
// handshakes) through hc instead of http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithToken sets the access token, e.g. one kept from an earlier Login.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithTokenFunc makes the Client ask fn for tokens (see TokenFunc); it
// takes precedence over a token set with WithToken or Login.
func WithTokenFunc(fn TokenFunc) Option { return func(c *Client) { c.tokenFunc = fn } }

// New returns a Client for the server at baseURL (http:// or https://,
// e.g. "http://localhost:8000").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http://host[:port] or https://host[:port]", baseURL)
	}
	c := &Client{base: u, http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	c.REST, err = rest.NewClientWithResponses(u.String(), rest.WithHTTPClient(c.http),
		rest.WithRequestEditorFn(c.authorize))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c, nil
}

// BaseURL returns the server's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// SetToken replaces the access token (a TokenFunc still takes precedence).
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
}

// Token returns an access token: the TokenFunc's, or the one set.
func (c *Client) Token(ctx context.Context) (string, error) { return c.tokenFor(ctx, false) }

func (c *Client) tokenFor(ctx context.Context, expired bool) (string, error) {
	c.mu.Lock()
	fn, tok := c.tokenFunc, c.token
	c.mu.Unlock()
	if fn != nil {
		return fn(ctx, expired)
	}
	if expired {
		return "", ErrNoToken
	}
	return tok, nil
}

// authorize adds the bearer token to a REST request, if there is one. A
// request that already names its own Authorization keeps it.
func (c *Client) authorize(ctx context.Context, r *http.Request) error {
	if r.Header.Get("Authorization") != "" {
		return nil
	}
	tok, err := c.tokenFor(ctx, false)
	if err != nil {
		return err
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// Register creates an account (POST /register).
func (c *Client) Register(ctx context.Context, name, email, password string) (*rest.User, error) {
	r, err := c.REST.RegisterWithResponse(ctx, rest.RegisterRequest{Name: name, Email: email, Password: password})
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	if r.JSON201 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	return r.JSON201, nil
}

// Login exchanges an email and password for an access token (POST
// /login, the OAuth2 password form) and keeps the token for later
// requests and connections.
func (c *Client) Login(ctx context.Context, email, password string) (*rest.Token, error) {
	r, err := c.REST.LoginWithFormdataBodyWithResponse(ctx, rest.LoginForm{Username: email, Password: password})
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if r.JSON200 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	c.SetToken(r.JSON200.AccessToken)
	return r.JSON200, nil
}

// Me returns the logged-in user (GET /users/me).
func (c *Client) Me(ctx context.Context) (*rest.User, error) {
	r, err := c.REST.GetMeWithResponse(ctx)
	if err != nil {
		return nil, fmt.Errorf("get me: %w", err)
	}
	if r.JSON200 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	return r.JSON200, nil
}

// APIError is a REST answer other than the one expected, usually an RFC
// 9457 problem document.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Problem is the decoded problem document, nil when the body was not
	// one.
	Problem *rest.Problem
	// Body is the raw response body (at most what the client read).
	Body []byte
}

func (e *APIError) Error() string {
	if e.Problem != nil {
		msg := fmt.Sprintf("windi: %d %s: %s", e.Status, e.Problem.Code, e.Problem.Title)
		if e.Problem.Detail != nil && *e.Problem.Detail != "" {
			msg += ": " + *e.Problem.Detail
		}
		if e.Problem.Errors != nil {
			for _, fe := range *e.Problem.Errors {
				msg += fmt.Sprintf("; %s: %s", fe.Field, fe.Message)
			}
		}
		return msg
	}
	return fmt.Sprintf("windi: status %d: %.200s", e.Status, e.Body)
}

// ResponseError turns a response the caller did not expect into an
// *APIError. Generated responses carry both: ResponseError(r.HTTPResponse,
// r.Body).
func ResponseError(resp *http.Response, body []byte) error {
	e := &APIError{Body: body}
	if resp != nil {
		e.Status = resp.StatusCode
	}
	var p rest.Problem
	if json.Unmarshal(body, &p) == nil && p.Code != "" {
		e.Problem = &p
	}
	return e
}

// StatusOf returns the HTTP status of an *APIError or *HandshakeError in
// err's chain, 0 when there is none.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	var he *HandshakeError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

// wsURLRaw returns the WebSocket URL of path on the server with the
// query as given (already escaped).
func (c *Client) wsURLRaw(path, rawQuery string) string {
	u := *c.base
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = rawQuery
	return u.String()
}

// Chats lists the user's chats with members, last message and unread
// count (GET /chats).
func (c *Client) Chats(ctx context.Context) ([]rest.Chat, error) {
	r, err := c.REST.ListChatsWithResponse(ctx)
	if err != nil {
		return nil, fmt.Errorf("list chats: %w", err)
	}
	if r.JSON200 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	return *r.JSON200, nil
}

// CreateGroup creates a group owned by the user with the given other
// members (POST /chats).
func (c *Client) CreateGroup(ctx context.Context, name string, memberIDs ...int64) (*rest.Chat, error) {
	var body rest.CreateChatRequest
	if err := body.FromCreateGroupChat(rest.CreateGroupChat{Type: rest.CreateGroupChatTypeGroup, Name: name, MemberIds: &memberIDs}); err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	return c.createChat(ctx, body)
}

// PrivateChat opens the private chat with userID, or returns the existing
// one (POST /chats).
func (c *Client) PrivateChat(ctx context.Context, userID int64) (*rest.Chat, error) {
	var body rest.CreateChatRequest
	if err := body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: rest.CreatePrivateChatTypePrivate, UserID: userID}); err != nil {
		return nil, fmt.Errorf("private chat: %w", err)
	}
	return c.createChat(ctx, body)
}

func (c *Client) createChat(ctx context.Context, body rest.CreateChatRequest) (*rest.Chat, error) {
	r, err := c.REST.CreateChatWithResponse(ctx, body)
	if err != nil {
		return nil, fmt.Errorf("create chat: %w", err)
	}
	switch {
	case r.JSON201 != nil:
		return r.JSON201, nil
	case r.JSON200 != nil:
		return r.JSON200, nil
	}
	return nil, ResponseError(r.HTTPResponse, r.Body)
}

// History returns messages of a chat, oldest first (GET
// /history/{chat_id}); params may be nil.
func (c *Client) History(ctx context.Context, chatID int64, params *rest.GetHistoryParams) ([]rest.Message, error) {
	r, err := c.REST.GetHistoryWithResponse(ctx, chatID, params)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if r.JSON200 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	return *r.JSON200, nil
}
