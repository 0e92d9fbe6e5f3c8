package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/handlers"
)

// FuzzRequests sends arbitrary requests (register and login bodies, query
// parameters, search queries, paths) through the whole HTTP stack of a real server: no
// input may cause a 500, every error must be an RFC 9457 problem, and
// every answer must match api/openapi.yaml.
func FuzzRequests(f *testing.F) {
	env := apptest.NewEnv(f, "sqlite")
	s := env.Start(f)
	u := s.NewUser(f, "Fuzz")
	// A group of u's (chat 1, the id the seeds use), so that requests on
	// /chats/1/…, /history/1, /groups/1/… and /search?chat_id=1 reach the
	// message and membership code, not only the 404 for a chat that does
	// not exist.
	peer := s.NewUser(f, "Peer")
	var group rest.CreateChatRequest
	_ = group.FromCreateGroupChat(rest.CreateGroupChat{Type: rest.CreateGroupChatTypeGroup, Name: "fuzz", MemberIds: &[]int64{peer.ID}})
	if r, err := s.Client.CreateChatWithResponse(context.Background(), group, u.Auth()); err != nil || r.JSON201 == nil || r.JSON201.ID != 1 {
		f.Fatalf("create the group: %v %v", err, r)
	}
	// Messages for searches to find.
	for i, text := range []string{"hi there", "Привет, мир", `quotes ' " \ and :* & | !`} {
		body := rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("fuzz-%d", i), Text: text}
		if r, err := s.Client.SendMessageWithResponse(context.Background(), 1, body, u.Auth()); err != nil || r.JSON201 == nil {
			f.Fatalf("send %q: %v %v", text, err, r)
		}
	}
	seeds := []struct{ method, target, ctype, body string }{
		{"POST", "/register", "application/json", `{"name":"a","email":"a@b.io","password":"12345678"}`},
		{"POST", "/register", "application/json", `{"name":"","email":"x","password":""}`},
		{"POST", "/login", "application/x-www-form-urlencoded", "username=a%40b.io&password=12345678"},
		{"POST", "/login", "application/json", `{"username":"a"}`},
		{"GET", "/users?q=a%25_&limit=5", "", ""},
		{"GET", "/history/1?limit=5&offset=2&after_seq=1&before_seq=9", "", ""},
		{"GET", "/history/1?limit=-1&offset=abc", "", ""},
		{"POST", "/chats", "application/json", `{"type":"group","name":"g","member_ids":[1,2,3]}`},
		{"POST", "/chats", "application/json", `{"type":"private","user_id":-5}`},
		{"POST", "/chats/1/messages", "application/json", `{"client_msg_id":"x","text":"hi"}`},
		{"POST", "/chats/1/read", "application/json", `{"seq":99999999999999999999}`},
		{"POST", "/groups/1/add_user/2", "", ""},
		{"GET", "/chats/%ff", "", ""},
		// Odd input (issue 15): odd methods, bytes after the JSON value,
		// invalid UTF-8 in a string, an oversized body.
		{"BREW", "/register", "", ""},
		{"OPTIONS", "/chats/1", "", ""},
		{"PATCH", "/login", "", ""},
		{"PUT", "/nowhere", "application/json", "1 2"},
		{"DELETE", "/register", "application/json", `{"x":1} trailing`},
		{"POST", "/register", "application/json", `{"name":"a","email":"t@b.io","password":"12345678"} {}`},
		{"POST", "/register", "application/json", "{\"name\":\"\xff\",\"email\":\"u@b.io\",\"password\":\"12345678\"}"},
		{"POST", "/chats", "application/json", `{"type":"group","name":"` + strings.Repeat("x", 70000) + `"}`},
		{"POST", "/register", "application/json", `{"name":"a","email":"p\u0430ypal@b.io","password":"12345678"}`},
		{"GET", "/search?q=hi", "", ""},
		{"GET", "/search?q=%D0%BF%D1%80%D0%B8%D0%B2+%22a%22*+%26+!(b%7Cc)+%3A*&chat_id=1&limit=3&before_seq=5&before_id=9", "", ""},
		{"GET", "/search?q=%27%5C%00%ff&limit=50", "", ""},
		{"GET", "/search?q=+&chat_id=-1&before_seq=0", "", ""},
	}
	for _, sd := range seeds {
		f.Add(sd.method, sd.target, sd.ctype, sd.body, true)
	}
	f.Fuzz(func(t *testing.T, method, target, ctype, body string, auth bool) {
		if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "/ws") {
			return // WebSocket upgrades are fuzzed at the frame level
		}
		req, err := http.NewRequest(method, "http://windi"+target, strings.NewReader(body))
		if err != nil {
			return // not a method token or not a URL: net/http refuses it before the server
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+u.Token)
		}
		rec := httptest.NewRecorder()
		s.Echo.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s (%s) %q: got %d %s", method, target, ctype, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
			t.Fatalf("%s %s: error %d without a problem body: %q", method, target, rec.Code, rec.Body)
		}
		// The handler is called directly, past the server's own check.
		if _, err := s.Spec.CheckResponse(req, rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
			t.Fatalf("%s (%s) %q: %v", method, ctype, body, err)
		}
		if rec.Code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
			t.Fatalf("%s %s: 405 without Allow", method, target)
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") && rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("%s %s: API answer %d without Cache-Control: no-store", method, target, rec.Code)
		}
		// A JSON body that is not exactly one JSON value, or that holds
		// invalid UTF-8, is never accepted (encoding/json would take the
		// first value, or replace the bytes, silently).
		if mt, _, _ := mime.ParseMediaType(ctype); mt == "application/json" && body != "" && rec.Code < 400 &&
			(!json.Valid([]byte(body)) || !utf8.ValidString(body)) {
			t.Fatalf("%s %s: body %q accepted with %d", method, target, body, rec.Code)
		}
		if len(body) > handlers.MaxBodyBytes && rec.Code < 400 {
			t.Fatalf("%s %s: a %d-byte body accepted with %d", method, target, len(body), rec.Code)
		}
	})
}
