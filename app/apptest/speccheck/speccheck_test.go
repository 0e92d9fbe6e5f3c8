package speccheck_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/windi-chat/windi/app/apptest/speccheck"
)

// recorder is a Reporter that keeps what it is told.
type recorder struct {
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.errs
	r.errs = nil
	return out
}

func checker(t *testing.T) *speccheck.Checker {
	t.Helper()
	c, err := speccheck.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	jsonCT    = "application/json"
	problemCT = "application/problem+json"
	user      = `{"id":1,"name":"Alice","email":"alice@example.com","created_at":"2026-12-01T10:00:00Z"}`
	message   = `{"id":7,"chat_id":1,"seq":7,"sender_id":1,"text":"hi","client_msg_id":"a-1","created_at":"2026-12-01T10:00:00Z","read":false,"rev":7,"edited_at":null,"deleted":false,"reply_to_seq":null,"reactions":[]}`
)

func problem(status int, code string) string {
	return `{"type":"about:blank","title":"x","status":` + strconv.Itoa(status) + `,"code":"` + code + `"}`
}

func chat(lastMessage string) string {
	return `{"id":1,"type":"private","name":null,"created_at":"2026-12-01T10:00:00Z","last_seq":0,` +
		`"members":[{"user_id":1,"name":"Alice","role":"owner","last_read_seq":0}],"last_message":` + lastMessage + `,"unread":0}`
}

// TestCheckResponse feeds the checker responses that match the spec and
// responses that break it in each way it checks: each mismatch must be
// reported, with the reason named, and nothing else.
func TestCheckResponse(t *testing.T) {
	c := checker(t)
	tests := []struct {
		name          string
		method, path  string
		status        int
		ctype, body   string
		header        map[string]string
		want          string // a part of the error; "" for a match
		wantSkipped   string // a part of the skip reason
		wantUnchanged bool
	}{
		{name: "user", method: "GET", path: "/users/me", status: 200, ctype: jsonCT, body: user},
		{name: "user with charset", method: "GET", path: "/users/me", status: 200, ctype: jsonCT + "; charset=utf-8", body: user},
		{name: "wrong body: field missing", method: "GET", path: "/users/me", status: 200, ctype: jsonCT, body: `{"id":1,"name":"Alice"}`, want: `property "email" is missing`},
		{name: "wrong body: wrong type", method: "GET", path: "/users/me", status: 200, ctype: jsonCT, body: strings.Replace(user, `"id":1`, `"id":"1"`, 1), want: "must be an integer"},
		{name: "wrong body: bad date-time", method: "GET", path: "/users/me", status: 200, ctype: jsonCT, body: strings.Replace(user, "2026-12-01T10:00:00Z", "yesterday", 1), want: "date-time"},
		{name: "wrong body: undocumented field", method: "GET", path: "/users/me", status: 200, ctype: jsonCT, body: strings.Replace(user, `{"id":1`, `{"password_hash":"x","id":1`, 1), want: `property "password_hash" is unsupported`},
		{name: "wrong body: enum", method: "GET", path: "/healthz", status: 200, ctype: jsonCT, body: `{"status":"fine"}`, want: "status"},
		{name: "wrong body: not JSON", method: "GET", path: "/healthz", status: 200, ctype: jsonCT, body: `ok`, want: "decode"},
		{name: "wrong content type", method: "GET", path: "/users/me", status: 200, ctype: "text/plain", body: user, want: `"text/plain"`},
		{name: "no content type", method: "GET", path: "/users/me", status: 200, body: user, want: "content"},
		{name: "wrong status", method: "POST", path: "/register", status: 418, ctype: problemCT, body: problem(418, "bad_request"), want: "status 418 is not declared"},
		{name: "wrong status: 2xx", method: "GET", path: "/users/me", status: 201, ctype: jsonCT, body: user, want: "status 201 is not declared"},
		{name: "unexpected error through default", method: "GET", path: "/users/me", status: 500, ctype: problemCT, body: problem(500, "internal")},
		{name: "problem", method: "GET", path: "/chats/3", status: 404, ctype: problemCT, body: problem(404, "not_found")},
		{name: "problem as plain JSON", method: "GET", path: "/chats/3", status: 404, ctype: jsonCT, body: problem(404, "not_found"), want: `"application/json"`},
		{name: "problem: code not in the enum", method: "GET", path: "/chats/3", status: 404, ctype: problemCT, body: problem(404, "gone"), want: "code"},
		{name: "problem: title missing", method: "GET", path: "/chats/3", status: 404, ctype: problemCT, body: `{"type":"about:blank","status":404,"code":"not_found"}`, want: `property "title" is missing`},
		{name: "declared header of the wrong type", method: "POST", path: "/login", status: 429, ctype: problemCT, body: problem(429, "rate_limited"), header: map[string]string{"Retry-After": "soon"}, want: "Retry-After"},
		{name: "declared header", method: "POST", path: "/login", status: 429, ctype: problemCT, body: problem(429, "rate_limited"), header: map[string]string{"Retry-After": "30"}},
		{name: "no content", method: "POST", path: "/chats/1/read", status: 204},
		{name: "a body where the spec has none", method: "POST", path: "/chats/1/read", status: 204, ctype: jsonCT, body: `{}`, want: "has no content in the spec"},
		{name: "chat without messages", method: "GET", path: "/chats/1", status: 200, ctype: jsonCT, body: chat("null")},
		{name: "chat with a message", method: "GET", path: "/chats/1", status: 200, ctype: jsonCT, body: chat(message)},
		{name: "chat: last_message not a message", method: "GET", path: "/chats/1", status: 200, ctype: jsonCT, body: chat(`{"id":7}`), want: "last_message"},
		{name: "chat: last_message missing", method: "GET", path: "/chats", status: 200, ctype: jsonCT, body: "[" + strings.Replace(chat("null"), `"last_message":null,`, "", 1) + "]", want: `property "last_message" is missing`},
		{name: "unknown route answered with a problem", method: "GET", path: "/no/such/route", status: 404, ctype: problemCT, body: problem(404, "not_found")},
		{name: "unknown method answered with a problem", method: "DELETE", path: "/chats", status: 405, ctype: problemCT, body: problem(405, "method_not_allowed")},
		{name: "unknown route answered in plain text", method: "GET", path: "/no/such/route", status: 404, ctype: "text/plain", body: "404 page not found", want: "no problem document"},
		{name: "unknown route answered 200", method: "GET", path: "/apple", status: 200, ctype: problemCT, body: problem(200, "not_found"), want: "want 404 or 405"},
		{name: "problem status differs from the response's", method: "GET", path: "/no/such/route", status: 404, ctype: problemCT, body: problem(400, "not_found"), want: "problem status"},
		{name: "WebSocket endpoint", method: "GET", path: "/ws/3", status: 101, wantSkipped: "outside the spec: /ws"},
		{name: "docs", method: "GET", path: "/docs/index.html", status: 200, ctype: "text/html", body: "<html>", wantSkipped: "outside the spec: /docs"},
		{name: "web client page", method: "GET", path: "/", status: 200, ctype: "text/html", body: "<html>", wantSkipped: "outside the spec: /"},
		{name: "web client asset", method: "GET", path: "/app/app.js", status: 200, ctype: "text/javascript", body: "x", wantSkipped: "outside the spec: /app"},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, ctype: "text/plain", body: "x", wantSkipped: "outside the spec: /metrics"},
		{name: "HEAD", method: "HEAD", path: "/chats", status: 405, wantSkipped: "HEAD"},
		{name: "the spec itself", method: "GET", path: "/openapi.json", status: 200, ctype: jsonCT, body: "{}", wantSkipped: "outside the spec: /openapi.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			h := http.Header{}
			if tc.ctype != "" {
				h.Set("Content-Type", tc.ctype)
			}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			skipped, err := c.CheckResponse(req, tc.status, h, []byte(tc.body))
			switch {
			case tc.wantSkipped != "":
				if !strings.Contains(skipped, tc.wantSkipped) || err != nil {
					t.Fatalf("got skipped %q, err %v; want skipped %q", skipped, err, tc.wantSkipped)
				}
			case tc.want == "":
				if err != nil || skipped != "" {
					t.Fatalf("got skipped %q, err %v; want a match", skipped, err)
				}
			default:
				if err == nil {
					t.Fatalf("got a match, want an error naming %q", tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got error %v\nwant it to name %q", err, tc.want)
				}
				if !strings.Contains(err.Error(), tc.method+" "+tc.path) {
					t.Errorf("error %v does not name the request", err)
				}
			}
		})
	}
}

// TestNullableReads checks that the checker reads `nullable` the way
// OpenAPI 3.0.3 (and Prism) does: beside allOf: [$ref] it admits no null;
// a branch that is null alone does.
func TestNullableReads(t *testing.T) {
	const spec = `openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /a:
    get:
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/A'}
components:
  schemas:
    Thing:
      type: object
      required: [id]
      properties: {id: {type: integer}}
    NullValue: {type: object, nullable: true, enum: [null]}
    A:
      type: object
      required: [void, honest, plain]
      properties:
        void: {type: object, nullable: true, allOf: [{$ref: '#/components/schemas/Thing'}]}
        honest: {anyOf: [{$ref: '#/components/schemas/Thing'}, {$ref: '#/components/schemas/NullValue'}]}
        plain: {type: string, nullable: true}
    ServerFrame:
      oneOf: [{$ref: '#/components/schemas/Thing'}]
      discriminator: {propertyName: type, mapping: {thing: '#/components/schemas/Thing'}}
    ClientFrame:
      oneOf: [{$ref: '#/components/schemas/Thing'}]
      discriminator: {propertyName: type, mapping: {thing: '#/components/schemas/Thing'}}
    Problem: {type: object}
`
	c, err := speccheck.LoadData([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	check := func(body string) error {
		_, err := c.CheckResponse(httptest.NewRequest("GET", "/a", nil), 200, http.Header{"Content-Type": {jsonCT}}, []byte(body))
		return err
	}
	if err := check(`{"void":{"id":1},"honest":null,"plain":null}`); err != nil {
		t.Errorf("honest null: got %v, want a match", err)
	}
	if err := check(`{"void":{"id":1},"honest":{"id":2},"plain":"x"}`); err != nil {
		t.Errorf("objects: got %v, want a match", err)
	}
	if err := check(`{"void":null,"honest":null,"plain":null}`); err == nil || !strings.Contains(err.Error(), "void") {
		t.Errorf("null where nullable sits beside allOf: got %v, want an error naming void", err)
	}
	if err := check(`{"void":{"id":1},"honest":{"id":"x"},"plain":null}`); err == nil {
		t.Error("honest: a wrong object matched")
	}
}

// TestFrames checks frames of each kind, good and bad, against the spec's
// ServerFrame and ClientFrame.
func TestFrames(t *testing.T) {
	c := checker(t)
	server := []struct {
		frame string
		want  string // a part of the error; "" for a match
	}{
		{frame: `{"type":"message.new","message":` + message + `}`},
		{frame: `{"type":"message.ack","client_msg_id":"a-1","duplicate":false,"message":` + message + `}`},
		{frame: `{"type":"presence","chat_id":1,"user_id":2,"online":true}`},
		{frame: `{"type":"error","code":"bad_request","message":"text must not be empty","client_msg_id":"a-2","chat_id":1}`},
		{frame: `{"type":"message.new","message":` + strings.Replace(message, `"seq":7,`, "", 1) + `}`, want: `property "seq" is missing`},
		{frame: `{"type":"presence","chat_id":1,"user_id":2,"online":"yes"}`, want: "boolean"},
		{frame: `{"type":"presence","chat_id":1,"user_id":2,"online":true,"replica":"r1"}`, want: `property "replica" is unsupported`},
		{frame: `{"type":"error","code":"oops","message":"x"}`, want: "code"},
		{frame: `{"type":"message.sent","message":` + message + `}`, want: `type "message.sent" is not one of ServerFrame's types`},
		{frame: `{"message":` + message + `}`, want: "is not one of ServerFrame's types"},
		{frame: `{"type":"message.send","client_msg_id":"a","text":"x"}`, want: "is not one of ServerFrame's types"},
		{frame: `[1]`, want: "not a JSON object"},
		{frame: `{"type":`, want: "not JSON"},
	}
	for _, tc := range server {
		err := c.CheckServerFrame([]byte(tc.frame))
		if tc.want == "" && err != nil {
			t.Errorf("server frame %s: got %v, want a match", tc.frame, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("server frame %s: got %v, want an error naming %q", tc.frame, err, tc.want)
		}
	}
	client := []struct {
		frame string
		want  string
	}{
		{frame: `{"type":"message.send","chat_id":1,"client_msg_id":"a-1","text":"hi"}`},
		{frame: `{"type":"message.send","client_msg_id":"a-1","text":"hi"}`},
		{frame: `{"type":"message.read","chat_id":1,"seq":3}`},
		{frame: `{"type":"sync","chat_id":1,"since_seq":0}`},
		{frame: `{"type":"message.send","client_msg_id":"a-1","text":""}`, want: "text"},
		{frame: `{"type":"message.send","client_msg_id":"a-1"}`, want: `property "text" is missing`},
		{frame: `{"type":"message.read","seq":-1}`, want: "seq"},
		{frame: `{"type":"sync","since_seq":1,"since":"x"}`, want: `property "since" is unsupported`},
		{frame: `{"type":"message.new","message":` + message + `}`, want: "is not one of ClientFrame's types"},
	}
	for _, tc := range client {
		err := c.CheckClientFrame([]byte(tc.frame))
		if tc.want == "" && err != nil {
			t.Errorf("client frame %s: got %v, want a match", tc.frame, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("client frame %s: got %v, want an error naming %q", tc.frame, err, tc.want)
		}
	}
}

// wrongServer answers some routes of the spec wrongly, each in one way,
// and /users/me rightly.
func wrongServer() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/me", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", jsonCT)
		_, _ = io.WriteString(w, user)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { // wrong body
		w.Header().Set("Content-Type", jsonCT)
		_, _ = io.WriteString(w, `{"status":"fine"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { // wrong status
		w.Header().Set("Content-Type", jsonCT)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /chats", func(w http.ResponseWriter, _ *http.Request) { // wrong content type
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, `[]`)
	})
	mux.HandleFunc("GET /docs/", func(w http.ResponseWriter, _ *http.Request) { // outside the spec
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<html>`)
	})
	return mux
}

// exchange is one request against wrongServer and what must come of it.
var exchanges = []struct {
	path   string
	status int
	want   string // a part of the one error reported; "" for none
}{
	{path: "/users/me", status: 200},
	{path: "/healthz", status: 200, want: "GET /healthz"},
	{path: "/readyz", status: 202, want: "status 202 is not declared"},
	{path: "/chats", status: 200, want: `"text/plain"`},
	{path: "/docs/index.html", status: 200},
	{path: "/nope", status: 404, want: "no problem document"}, // the mux's own plain-text 404
}

func runExchanges(t *testing.T, base string, hc *http.Client, rec *recorder) {
	t.Helper()
	for _, ex := range exchanges {
		resp, err := hc.Get(base + ex.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != ex.status || len(body) == 0 {
			t.Errorf("GET %s: got status %d body %q, want %d and the handler's body (the check must not change responses)", ex.path, resp.StatusCode, body, ex.status)
		}
		errs := rec.take()
		switch {
		case ex.want == "" && len(errs) != 0:
			t.Errorf("GET %s: got reports %q, want none", ex.path, errs)
		case ex.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], ex.want)):
			t.Errorf("GET %s: got reports %q, want one naming %q", ex.path, errs, ex.want)
		}
	}
}

// TestMiddleware runs wrongServer behind the middleware (as apptest does
// with the real server): every wrong answer is reported before the client
// has it, and the client gets it unchanged.
func TestMiddleware(t *testing.T) {
	c := checker(t)
	rec := &recorder{}
	srv := httptest.NewServer(c.Middleware(rec, wrongServer()))
	defer srv.Close()
	before := c.Stats()
	runExchanges(t, srv.URL, srv.Client(), rec)
	after := c.Stats()
	if got := after.Checked - before.Checked; got < 5 {
		t.Errorf("checked %d responses, want at least 5", got)
	}
	if after.Skipped["outside the spec: /docs"] <= before.Skipped["outside the spec: /docs"] {
		t.Errorf("the /docs request was not counted as skipped: %v", after.Skipped)
	}
}

// TestTransport runs the same exchanges through the client-side check (as
// the end-to-end tests do through nginx).
func TestTransport(t *testing.T) {
	c := checker(t)
	rec := &recorder{}
	srv := httptest.NewServer(wrongServer())
	defer srv.Close()
	hc := &http.Client{Transport: &speccheck.Transport{Checker: c, R: rec}}
	runExchanges(t, srv.URL, hc, rec)

	// Skip leaves out what it names, with its reason.
	hc = &http.Client{Transport: &speccheck.Transport{Checker: c, R: rec, Skip: func(*http.Response) string { return "test skip" }}}
	resp, err := hc.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if errs := rec.take(); len(errs) != 0 {
		t.Errorf("skipped response: got reports %q, want none", errs)
	}
	if c.Stats().Skipped["test skip"] == 0 {
		t.Error("skipped response not counted")
	}
}

// fakeT records Errorf like a test that has not ended yet.
type fakeT struct {
	recorder
	cleanups []func()
}

func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// TestForTest checks that the reporter fails the test until its cleanups
// ran, and drops reports after that instead of panicking.
func TestForTest(t *testing.T) {
	ft := &fakeT{}
	r := speccheck.ForTest(ft)
	r.Errorf("one %d", 1)
	for _, fn := range ft.cleanups {
		fn()
	}
	r.Errorf("two %d", 2)
	if got := ft.take(); len(got) != 1 || got[0] != "one 1" {
		t.Errorf("got %q, want only the report made before the end", got)
	}
}
