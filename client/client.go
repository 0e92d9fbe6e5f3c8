package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// has neither a TokenFunc nor a refresh token to get another one.
var ErrNoToken = errors.New("client: token rejected and no TokenFunc or refresh token to get a new one")

// ErrSessionEnded is returned when the server refused the refresh token:
// the session was revoked (logged out, signed out from another device, a
// password change, a reused refresh token) or expired. Log in again.
var ErrSessionEnded = errors.New("client: the session ended; log in again")

// Client talks to one WinDI Chat server: REST through the generated client,
// WebSockets through Dial. It is safe for concurrent use.
type Client struct {
	// REST is the client generated from api/openapi.yaml. Its requests
	// carry the Client's token (when it has one) as a bearer token.
	REST *rest.ClientWithResponses

	base *url.URL
	http *http.Client

	mu        sync.Mutex // guards the fields below
	token     string
	tokenFunc TokenFunc
	refresh   string // the session's refresh token, "" when none
	sessionID int64
	device    string
	onTokens  func(rest.Token)

	// renewing holds one token: whoever holds it refreshes, so one refresh
	// is in flight at a time and the others wait for its result.
	renewing chan struct{}
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send requests (REST and WebSocket
// handshakes) through hc instead of http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithToken sets the access token, e.g. one kept from an earlier Login.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithTokenFunc makes the Client ask fn for tokens (see TokenFunc); it
// takes precedence over a token set with WithToken or Login, and over the
// refresh token.
func WithTokenFunc(fn TokenFunc) Option { return func(c *Client) { c.tokenFunc = fn } }

// WithRefreshToken sets the refresh token of a session, e.g. one kept from
// an earlier Login: the Client refreshes with it when the server rejects
// the access token (or when there is none yet).
func WithRefreshToken(refresh string) Option { return func(c *Client) { c.refresh = refresh } }

// WithDevice names this program's sessions in the user's device list
// (GET /sessions); by default the server takes the User-Agent.
func WithDevice(name string) Option { return func(c *Client) { c.device = name } }

// WithOnTokens calls fn after every login and refresh with the new tokens,
// so the program can keep the refresh token (it changes on every refresh:
// the old one stops working). fn must not call the Client.
func WithOnTokens(fn func(rest.Token)) Option { return func(c *Client) { c.onTokens = fn } }

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
	c := &Client{base: u, http: http.DefaultClient, renewing: make(chan struct{}, 1)}
	for _, o := range opts {
		o(c)
	}
	c.REST, err = rest.NewClientWithResponses(u.String(), rest.WithHTTPClient(retrier{c}),
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

// Token returns an access token: the TokenFunc's, or the one set (or
// refreshed).
func (c *Client) Token(ctx context.Context) (string, error) { return c.tokenFor(ctx, false, "") }

// RefreshToken returns the session's current refresh token ("" when there
// is none): what a program keeps to resume the session after a restart.
func (c *Client) RefreshToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refresh
}

// tokenFor returns the token for the next request or connection. expired
// says the server rejected rejected (the token last used): the TokenFunc is
// asked for another, or the session is refreshed, once for every caller
// that saw the same token rejected.
func (c *Client) tokenFor(ctx context.Context, expired bool, rejected string) (string, error) {
	c.mu.Lock()
	fn, tok, refresh := c.tokenFunc, c.token, c.refresh
	c.mu.Unlock()
	switch {
	case fn != nil:
		return fn(ctx, expired)
	case expired || tok == "" && refresh != "":
		return c.renew(ctx, rejected)
	}
	return tok, nil
}

// renew refreshes the session unless someone already replaced rejected,
// and returns the current access token. One refresh runs at a time; those
// who wait for it get its token, or its error. Errors: ErrNoToken without
// a refresh token, ErrSessionEnded when the server refused it, anything
// else (a network error, a 503) is worth retrying later.
func (c *Client) renew(ctx context.Context, rejected string) (string, error) {
	select {
	case c.renewing <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-c.renewing }()
	c.mu.Lock()
	tok, refresh := c.token, c.refresh
	c.mu.Unlock()
	if tok != "" && tok != rejected {
		return tok, nil // refreshed while this caller waited
	}
	if refresh == "" {
		return "", ErrNoToken
	}
	t, err := c.refreshWith(ctx, refresh)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// Refresh trades the refresh token for a new access token and a new
// refresh token now (POST /token/refresh), as the Client does by itself
// when the server rejects the access token. Errors: ErrNoToken,
// ErrSessionEnded.
func (c *Client) Refresh(ctx context.Context) (*rest.Token, error) {
	select {
	case c.renewing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.renewing }()
	refresh := c.RefreshToken()
	if refresh == "" {
		return nil, ErrNoToken
	}
	return c.refreshWith(ctx, refresh)
}

// refreshWith runs one refresh; the caller holds renewing.
func (c *Client) refreshWith(ctx context.Context, refresh string) (*rest.Token, error) {
	r, err := c.REST.RefreshTokenWithResponse(ctx, rest.RefreshRequest{RefreshToken: refresh})
	if err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	if r.JSON200 == nil {
		err := ResponseError(r.HTTPResponse, r.Body)
		if r.StatusCode() == http.StatusUnauthorized {
			c.mu.Lock()
			if c.refresh == refresh {
				c.refresh, c.token = "", ""
			}
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrSessionEnded, err)
		}
		return nil, fmt.Errorf("refresh: %w", err)
	}
	c.keep(*r.JSON200)
	return r.JSON200, nil
}

// keep stores the tokens of a login or refresh and tells WithOnTokens.
func (c *Client) keep(t rest.Token) {
	c.mu.Lock()
	c.token, c.refresh, c.sessionID = t.AccessToken, t.RefreshToken, t.SessionID
	fn := c.onTokens
	c.mu.Unlock()
	if fn != nil {
		fn(t)
	}
}

// publicPath reports whether path is an operation that takes no bearer
// token (and whose 401 is no reason to refresh).
func publicPath(path string) bool {
	for _, p := range []string{"/login", "/register", "/token/refresh"} {
		if strings.HasSuffix(path, p) {
			return true
		}
	}
	return false
}

// retrier sends the REST requests: a request the server answers 401 with
// the Client's token is sent once more with a renewed token (refreshed, or
// the TokenFunc's), when the body can be replayed.
type retrier struct{ c *Client }

func (r retrier) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.c.http.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || publicPath(req.URL.Path) {
		return resp, err
	}
	used, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}
	tok, terr := r.c.tokenFor(req.Context(), true, used)
	if terr != nil || tok == "" || tok == used {
		return resp, nil // the caller sees the 401
	}
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	again.Header.Set("Authorization", "Bearer "+tok)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return r.c.http.Do(again)
}

// authorize adds the bearer token to a REST request, if there is one. A
// request that already names its own Authorization keeps it; register,
// login and refresh carry none.
func (c *Client) authorize(ctx context.Context, r *http.Request) error {
	if r.Header.Get("Authorization") != "" || publicPath(r.URL.Path) {
		return nil
	}
	tok, err := c.tokenFor(ctx, false, "")
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

// Login exchanges an email and password for a new session (POST /login,
// the OAuth2 password form) and keeps its access and refresh tokens for
// later requests and connections: an access token the server rejects is
// refreshed transparently, until the session ends (ErrSessionEnded).
func (c *Client) Login(ctx context.Context, email, password string) (*rest.Token, error) {
	form := rest.LoginForm{Username: email, Password: password}
	if c.device != "" {
		form.Device = &c.device
	}
	r, err := c.REST.LoginWithFormdataBodyWithResponse(ctx, form)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if r.JSON200 == nil {
		return nil, ResponseError(r.HTTPResponse, r.Body)
	}
	c.keep(*r.JSON200)
	return r.JSON200, nil
}

// Logout ends the session (POST /logout) on every replica, its
// WebSockets included (they close with 4401), and forgets its tokens.
func (c *Client) Logout(ctx context.Context) error {
	r, err := c.REST.LogoutWithResponse(ctx)
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if r.StatusCode() != http.StatusNoContent {
		return ResponseError(r.HTTPResponse, r.Body)
	}
	c.mu.Lock()
	c.token, c.refresh, c.sessionID = "", "", 0
	c.mu.Unlock()
	return nil
}

// SessionID is the id of the session Login or the last refresh started or
// continued (0 before).
func (c *Client) SessionID() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
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

func (c *Client) hasTokenFunc() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokenFunc != nil
}

// Do sends one raw request to path (with its query, e.g. "/chats?x=1") on
// the server, with the Client's token unless header names its own
// Authorization: for requests the generated client cannot express, such as
// the malformed ones of tests. The caller closes the response body.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if err := c.authorize(ctx, req); err != nil {
		return nil, err
	}
	return retrier{c}.Do(req)
}

// DialSocket opens one raw Socket to path ("/ws" or "/ws/{chat_id}", with
// its query) on the server: no reconnect, no resume (Dial returns a Conn
// that has them). The handshake carries the Client's token as a bearer
// token, unless opts.Header names its own Authorization or the path names
// a token= itself.
func (c *Client) DialSocket(ctx context.Context, path string, opts SocketOptions) (*Socket, *http.Response, error) {
	p, q, _ := strings.Cut(path, "?")
	h := opts.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("Authorization") == "" && !strings.Contains("&"+q, "&token=") {
		tok, err := c.tokenFor(ctx, false, "")
		if err != nil {
			return nil, nil, err
		}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
	}
	opts.Header = h
	if opts.HTTPClient == nil {
		opts.HTTPClient = c.http
	}
	return DialSocket(ctx, c.wsURLRaw(p, q), opts)
}
