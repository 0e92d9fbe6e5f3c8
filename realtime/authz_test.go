package realtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client"
	"github.com/windi-chat/windi/client/rest"
)

// This file is the WebSocket half of the authorization matrix (issue
// "Reliability", item 2): both endpoints × every kind of credential before
// the upgrade; every client frame type naming a chat the user is not in (or
// no chat at all) after it; and a token that expires on a live connection.

// wsKind is the credential a handshake carries.
type wsKind string

const (
	wsNone      wsKind = "none"      // no token at all
	wsMalformed wsKind = "malformed" // "not-a-jwt"
	wsExpired   wsKind = "expired"   // the member's token, expired an hour ago
	wsUnknown   wsKind = "unknown"   // valid signature, a user id that does not exist
	wsRevoked   wsKind = "revoked"   // the member's token of a session it revoked
	wsNonMember wsKind = "nonMember" // a real user, not in the group
	wsMember    wsKind = "member"    // a plain member of the group
	wsOwner     wsKind = "owner"     // the group's owner
	wsNoChat    wsKind = "noChat"    // the member's token on a chat that does not exist
)

var wsKinds = []wsKind{wsNone, wsMalformed, wsExpired, wsUnknown, wsRevoked, wsNonMember, wsMember, wsOwner, wsNoChat}

// wsMissingChat is a chat id no fixture reaches.
const wsMissingChat = int64(1) << 40

// wsHandshakeRows: the status of the upgrade per endpoint and kind (101 =
// upgraded). {chat_id} is the group G; noChat puts wsMissingChat there.
var wsHandshakeRows = map[string]map[wsKind]int{
	"/ws": {wsNone: 401, wsMalformed: 401, wsExpired: 401, wsUnknown: 401, wsRevoked: 401,
		wsNonMember: 101, wsMember: 101, wsOwner: 101},
	"/ws/{chat_id}": {wsNone: 401, wsMalformed: 401, wsExpired: 401, wsUnknown: 401, wsRevoked: 401,
		wsNonMember: 403, wsMember: 101, wsOwner: 101, wsNoChat: 404},
}

// wsFrameRows build, per client frame type of the spec, a well-formed frame
// naming chatID; cmid is the send's client_msg_id (only message.send
// carries one). A frame type of the spec's ClientFrame without a row here,
// or a row without a frame type there, fails the test.
var wsFrameRows = map[string]func(chatID int64, cmid string) map[string]any{
	"message.send": func(chatID int64, cmid string) map[string]any {
		return map[string]any{"type": "message.send", "chat_id": chatID, "client_msg_id": cmid, "text": "let me in"}
	},
	"message.read": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "message.read", "chat_id": chatID, "seq": 1}
	},
	"sync": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "sync", "chat_id": chatID, "since_seq": 0}
	},
	"message.edit": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "message.edit", "chat_id": chatID, "seq": 1, "text": "mine now"}
	},
	"message.delete": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "message.delete", "chat_id": chatID, "seq": 1}
	},
	"reaction.add": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "reaction.add", "chat_id": chatID, "seq": 1, "emoji": "👀"}
	},
	"reaction.remove": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "reaction.remove", "chat_id": chatID, "seq": 1, "emoji": "👀"}
	},
	"typing": func(chatID int64, _ string) map[string]any {
		return map[string]any{"type": "typing", "chat_id": chatID}
	},
}

// clientFrameTypes returns the discriminator values of the spec's
// ClientFrame, and checks the error codes this file expects exist.
func clientFrameTypes(t *testing.T) []string {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("../api/openapi.yaml")
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate spec: %v", err)
	}
	cf := doc.Components.Schemas["ClientFrame"]
	if cf == nil || cf.Value == nil || cf.Value.Discriminator == nil || len(cf.Value.Discriminator.Mapping) == 0 {
		t.Fatal("spec: components.schemas.ClientFrame has no discriminator mapping")
	}
	var types []string
	for typ := range cf.Value.Discriminator.Mapping {
		types = append(types, typ)
	}
	sort.Strings(types)
	codes := doc.Components.Schemas["ErrorFrameCode"]
	if codes == nil || codes.Value == nil {
		t.Fatal("spec: no ErrorFrameCode schema")
	}
	for _, c := range []string{"forbidden", "not_found"} {
		if !slices.Contains(codes.Value.Enum, any(c)) {
			t.Errorf("spec: ErrorFrameCode has no %q", c)
		}
	}
	return types
}

// TestWSAuthorizationCoversSpec checks the frame table against the spec.
func TestWSAuthorizationCoversSpec(t *testing.T) {
	checkFrameRows(t, clientFrameTypes(t))
}

func checkFrameRows(t *testing.T, types []string) {
	t.Helper()
	for _, typ := range types {
		if _, ok := wsFrameRows[typ]; !ok {
			t.Errorf("client frame type %s has no authorization rows", typ)
		}
	}
	for typ := range wsFrameRows {
		if !slices.Contains(types, typ) {
			t.Errorf("authorization row %s names no client frame type of the spec", typ)
		}
	}
}

// wsAuthzFixture: group G (owner O, member M); the outsider X owns the
// group FG with Y and has the private chat FP with Y; each foreign chat
// holds two messages.
type wsAuthzFixture struct {
	s                      *apptest.Server
	owner, member, x, y    apptest.User
	groupID                int64
	foreignGroup, foreignP int64
	tokens                 map[wsKind]string
}

func newWSAuthzFixture(t *testing.T, s *apptest.Server) *wsAuthzFixture {
	t.Helper()
	f := &wsAuthzFixture{s: s}
	f.owner, f.member, f.x, f.y = s.NewUser(t, "Owner"), s.NewUser(t, "Member"), s.NewUser(t, "Xavier"), s.NewUser(t, "Yvonne")
	f.groupID = groupChat(t, s, f.owner, f.member.ID)
	f.foreignGroup = groupChat(t, s, f.x, f.y.ID)
	f.foreignP = privateChat(t, s, f.x, f.y.ID)
	for _, c := range []int64{f.groupID, f.foreignGroup, f.foreignP} {
		u := f.x
		if c == f.groupID {
			u = f.owner
		}
		for i := 1; i <= 2; i++ {
			r, err := s.Client.SendMessageWithResponse(bg, c, rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("seed-%d", i), Text: "seed"}, u.Auth())
			if err != nil || r.StatusCode() != 201 {
				t.Fatalf("seed chat %d: %v %d", c, err, r.StatusCode())
			}
		}
	}
	revoked := s.Session(t, f.member)
	if r, err := s.Client.LogoutWithResponse(bg, revoked.Auth()); err != nil || r.StatusCode() != 204 {
		t.Fatalf("logout: %v %v", err, r)
	}
	expired, _, err := s.Service.Tokens().IssueAt(f.member.ID, f.member.SessionID, time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _, err := s.Service.Tokens().Issue(wsMissingChat, 1) // no such user
	if err != nil {
		t.Fatal(err)
	}
	f.tokens = map[wsKind]string{wsNone: "", wsMalformed: "not-a-jwt", wsExpired: expired, wsUnknown: unknown, wsRevoked: revoked.Token,
		wsNonMember: f.x.Token, wsMember: f.member.Token, wsOwner: f.owner.Token, wsNoChat: f.member.Token}
	return f
}

func TestWSAuthorizationHandshake(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		f := newWSAuthzFixture(t, s)
		endpoints := []string{"/ws", "/ws/{chat_id}"}
		var table strings.Builder
		fmt.Fprintf(&table, "%-14s %-6s", "endpoint", "via")
		for _, k := range wsKinds {
			fmt.Fprintf(&table, " %9s", k)
		}
		table.WriteString("\n")
		for _, ep := range endpoints {
			row := wsHandshakeRows[ep]
			// The token goes in ?token= and, separately, in Authorization.
			for _, via := range []string{"query", "header"} {
				fmt.Fprintf(&table, "%-14s %-6s", ep, via)
				for _, k := range wsKinds {
					want, ok := row[k]
					if !ok {
						fmt.Fprintf(&table, " %9s", "-")
						continue
					}
					chatID := f.groupID
					if k == wsNoChat {
						chatID = wsMissingChat
					}
					path := strings.ReplaceAll(ep, "{chat_id}", fmt.Sprint(chatID))
					got := 0
					t.Run(fmt.Sprintf("%s/%s/%s", ep, via, k), func(t *testing.T) {
						got = handshake(t, s, path, f.tokens[k], via, want)
					})
					fmt.Fprintf(&table, " %9d", got)
				}
				table.WriteString("\n")
			}
		}
		t.Logf("observed handshakes (%s):\n%s", env.Dialect, table.String())
	})
}

// handshake dials path with token (in the query or the Authorization
// header) and checks the status; a refusal must be a problem document.
func handshake(t *testing.T, s *apptest.Server, path, token, via string, want int) int {
	t.Helper()
	var hdr http.Header
	q := token
	if via == "header" && token != "" {
		hdr, q = http.Header{"Authorization": {"Bearer " + token}}, ""
	}
	w, resp, err := s.TryDialWS(path, q, hdr)
	if w != nil {
		defer w.Close()
	}
	got := 0
	if resp != nil {
		got = resp.StatusCode
	}
	if got != want {
		t.Errorf("dial %s via %s: got status %d (%v), want %d", path, via, got, err, want)
		return got
	}
	if want == 101 {
		// Upgraded and open: nothing closes it straight away.
		time.Sleep(50 * time.Millisecond)
		if w.IsClosed() {
			t.Errorf("dial %s via %s: upgraded, then closed at once", path, via)
		}
		return got
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("dial %s via %s: status %d with Content-Type %q, want application/problem+json", path, via, got, ct)
	}
	// The SDK reads the body: a problem document becomes the
	// HandshakeError's Problem.
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Problem == nil {
		t.Errorf("dial %s via %s: got error %v, want a *client.HandshakeError with the problem document", path, via, err)
		return got
	}
	p := he.Problem
	wantCode := map[int]rest.ProblemCode{401: rest.ProblemCodeUnauthorized, 403: rest.ProblemCodeForbidden, 404: rest.ProblemCodeNotFound}[want]
	if p.Status != want || p.Code != wantCode {
		t.Errorf("dial %s via %s: got problem %d %s, want status %d code %s", path, via, p.Status, p.Code, want, wantCode)
	}
	if want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("dial %s via %s: 401 without WWW-Authenticate", path, via)
	}
	return got
}

func TestWSAuthorizationForeignFrames(t *testing.T) {
	types := clientFrameTypes(t)
	checkFrameRows(t, types)
	if t.Failed() {
		t.FailNow()
	}
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		f := newWSAuthzFixture(t, s)
		foreign := map[int64]bool{f.foreignGroup: true, f.foreignP: true}
		before := map[int64]rest.Chat{}
		for c := range foreign {
			before[c] = f.chatAsX(t, c)
		}
		// The foreign chats' members watch, on both kinds of connection.
		observers := map[string]*apptest.WS{
			"x on /ws/FG": s.DialWS(t, fmt.Sprintf("/ws/%d", f.foreignGroup), f.x.Token),
			"x on /ws/FP": s.DialWS(t, fmt.Sprintf("/ws/%d", f.foreignP), f.x.Token),
			"y on /ws":    s.DialWS(t, "/ws", f.y.Token),
		}
		conns := map[string]*apptest.WS{
			"/ws":           s.DialWS(t, "/ws", f.member.Token),
			"/ws/{chat_id}": s.DialWS(t, fmt.Sprintf("/ws/%d", f.groupID), f.member.Token),
		}
		var all []*apptest.WS
		for _, w := range observers {
			all = append(all, w)
		}
		for _, w := range conns {
			all = append(all, w)
		}
		settle(all...)

		targets := []struct {
			name   string
			chatID int64
			code   string
		}{
			{"foreign group", f.foreignGroup, "forbidden"},
			{"foreign private", f.foreignP, "forbidden"},
			{"missing chat", wsMissingChat, "not_found"},
		}
		for _, connName := range []string{"/ws", "/ws/{chat_id}"} {
			w := conns[connName]
			for _, typ := range types {
				for _, tg := range targets {
					t.Run(fmt.Sprintf("%s/%s/%s", connName, typ, tg.name), func(t *testing.T) {
						cmid := ""
						if typ == "message.send" {
							cmid = "foreign-" + apptest.RandomID()
						}
						w.Send(t, wsFrameRows[typ](tg.chatID, cmid))
						e := untilClean(t, w, foreign, func(fr apptest.Frame) bool { return fr.Type == "error" })
						var ef struct {
							Message string `json:"message"`
							ChatID  *int64 `json:"chat_id"`
						}
						_ = json.Unmarshal(e.Raw, &ef)
						if e.Code != tg.code || e.ClientMsgID != cmid || ef.Message == "" || (ef.ChatID != nil && *ef.ChatID != tg.chatID) {
							t.Errorf("got %s, want error code %s client_msg_id %q with a message", e.Raw, tg.code, cmid)
						}
						// Still usable: a send to its own chat is acknowledged.
						own := "own-" + apptest.RandomID()
						w.Send(t, sendFrame(f.groupID, own, "still here"))
						untilClean(t, w, foreign, func(fr apptest.Frame) bool { return fr.Type == "message.ack" && fr.ClientMsgID == own })
					})
				}
			}
		}
		// Nothing leaked to the member, nothing reached the foreign members,
		// nothing changed in the foreign chats.
		time.Sleep(300 * time.Millisecond)
		for name, w := range conns {
			for _, fr := range w.Drain(100 * time.Millisecond) {
				if mentions(fr, foreign) || fr.Type == "error" {
					t.Errorf("member on %s: unexpected frame %s", name, fr.Raw)
				}
			}
		}
		for name, w := range observers {
			if frames := w.Drain(0); len(frames) > 0 {
				for _, fr := range frames {
					t.Errorf("%s received %s from the outsider's frames", name, fr.Raw)
				}
			}
		}
		for c := range foreign {
			after := f.chatAsX(t, c)
			if after.LastSeq == nil || *after.LastSeq != 2 || !slices.Equal(after.Members, before[c].Members) ||
				after.LastMessage == nil || after.LastMessage.Rev != before[c].LastMessage.Rev {
				t.Errorf("chat %d changed: before %+v after %+v", c, before[c], after)
			}
			h, err := s.Client.GetHistoryWithResponse(bg, c, nil, f.y.Auth())
			if err != nil || h.JSON200 == nil || len(*h.JSON200) != 2 {
				t.Errorf("chat %d: got history %v %s, want its two seed messages", c, err, h.Body)
			}
		}
	})
}

// chatAsX returns chat c as X sees it.
func (f *wsAuthzFixture) chatAsX(t *testing.T, c int64) rest.Chat {
	t.Helper()
	r, err := f.s.Client.GetChatWithResponse(bg, c, f.x.Auth())
	if err != nil || r.JSON200 == nil {
		t.Fatalf("get chat %d: %v %d", c, err, r.StatusCode())
	}
	return *r.JSON200
}

// mentions reports whether fr is about one of chats.
func mentions(fr apptest.Frame, chats map[int64]bool) bool {
	return chats[fr.ChatID] || (len(fr.Message) > 0 && chats[fr.Msg().ChatID])
}

// untilClean returns the first frame match accepts; the frames before it
// must be neither errors nor about the foreign chats.
func untilClean(t *testing.T, w *apptest.WS, foreign map[int64]bool, match func(apptest.Frame) bool) apptest.Frame {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		fr := w.Next(t, time.Until(deadline))
		if match(fr) {
			return fr
		}
		if fr.Type == "error" || mentions(fr, foreign) {
			t.Fatalf("unexpected frame %s", fr.Raw)
		}
	}
}

func TestWSAuthorizationTokenExpiry(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		owner, member := s.NewUser(t, "Owner"), s.NewUser(t, "Member")
		chatID := groupChat(t, s, owner, member.ID)
		// exp is whole seconds in the token: issue at a whole second so the
		// returned expiry is the one the server sees, 2..3 s from now.
		token, exp, err := s.Service.Tokens().IssueAt(member.ID, 1, time.Now().Truncate(time.Second), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns := map[string]*apptest.WS{
			"/ws":           s.DialWS(t, "/ws", token),
			"/ws/{chat_id}": s.DialWS(t, fmt.Sprintf("/ws/%d", chatID), token),
		}
		// Usable until it expires.
		for name, w := range conns {
			cmid := "before-expiry-" + apptest.RandomID()
			w.Send(t, sendFrame(chatID, cmid, "still valid"))
			if f, _ := w.Until(t, "message.ack", wait); f.ClientMsgID != cmid {
				t.Errorf("%s: got %s", name, f.Raw)
			}
		}
		// Closed by the server with 4501, not before the expiry.
		for _, name := range []string{"/ws", "/ws/{chat_id}"} {
			code := conns[name].WaitClosed(t, time.Until(exp)+wait)
			if code != 4501 {
				t.Errorf("%s: closed with %d, want 4501 (token expired)", name, code)
			}
			if now := time.Now(); now.Before(exp.Add(-100 * time.Millisecond)) {
				t.Errorf("%s: closed at %v, before the token expired at %v", name, now, exp)
			}
		}
		// The same token no longer opens anything.
		for _, path := range []string{"/ws", fmt.Sprintf("/ws/%d", chatID)} {
			if _, resp, err := s.TryDialWS(path, token, nil); resp == nil || resp.StatusCode != 401 {
				t.Errorf("redial %s with the expired token: got %v, want 401", path, err)
			}
		}
	})
}
