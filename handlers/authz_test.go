package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// This file is the authorization matrix (issue "Reliability", item 2): every
// operation of api/openapi.yaml, called with every kind of credential, must
// answer the status its row names. The operations come from the spec, so an
// operation added there without a row here fails the test, and so does a row
// whose operation is gone.

// tokenKind is the credential a request carries.
type tokenKind string

const (
	kindNone      tokenKind = "none"      // no Authorization header
	kindMalformed tokenKind = "malformed" // "Bearer not-a-jwt"
	kindExpired   tokenKind = "expired"   // the member's token, expired an hour ago
	kindUnknown   tokenKind = "unknown"   // valid signature, a user id that does not exist
	kindRevoked   tokenKind = "revoked"   // the member's token of a session it revoked (DELETE /sessions/{id})
	kindNonMember tokenKind = "nonMember" // the outsider: a real user, not in the group
	kindMember    tokenKind = "member"    // a plain member of the group
	kindOwner     tokenKind = "owner"     // the group's owner (creator)
	// kindNoChat is the member's token on a chat/group id that does not
	// exist; only operations with a chat_id or group_id path parameter
	// have it.
	kindNoChat tokenKind = "noChat"
)

// authzKinds is the column order of the matrix.
var authzKinds = []tokenKind{kindNone, kindMalformed, kindExpired, kindUnknown, kindRevoked, kindNonMember, kindMember, kindOwner, kindNoChat}

// baseKinds are the columns every row has (all but noChat).
var baseKinds = authzKinds[:len(authzKinds)-1]

// credentialKinds are the kinds that fail authentication on a secured
// operation: each must be a 401 there.
var credentialKinds = []tokenKind{kindNone, kindMalformed, kindExpired, kindUnknown, kindRevoked}

// missingID is a chat/group id no fixture reaches.
const missingID = int64(1) << 40

// authzFixture is the world every row runs against, one per dialect:
//
//   - group G: owner O, members M and T (T is a bystander that removals by
//     rejected credentials name, so a wrongly accepted one would show);
//   - private chat P between M and the outsider X (so X is a user with chats
//     of its own, just not G; O is an outsider of P);
//   - L, a registered user the login rows log in as.
type authzFixture struct {
	s                   *apptest.Server
	owner, member       apptest.User
	outsider, bystander apptest.User
	loginEmail          string
	loginPassword       string
	groupID             int64
	privateID           int64
	memberSeq           int64 // a message of the member in the group
	revokedSession      int64 // the member's session behind kindRevoked
	tokens              map[tokenKind]string
}

// authzReq is one request of a row: the path parameters the spec's path
// template names, a query string, a body. after, when set, runs once the
// response is checked: it verifies side effects and restores the fixture.
type authzReq struct {
	params      map[string]int64
	query       string
	body        string
	contentType string
	// token, when set, is sent instead of the kind's token (a fresh
	// session of the same user, for rows that end sessions).
	token string
	after func(t *testing.T, status int)
}

// authzRow is the expected status of one operation per token kind, and how
// to build its request for a kind (nil: no body, default path parameters).
type authzRow struct {
	want map[tokenKind]int
	req  func(t *testing.T, f *authzFixture, k tokenKind) authzReq
}

// secured is the row of an operation that needs a token: 401 for every
// credential kind, then the given statuses.
func secured(nonMember, member, owner int, noChat ...int) map[tokenKind]int {
	w := map[tokenKind]int{kindNone: 401, kindMalformed: 401, kindExpired: 401, kindUnknown: 401, kindRevoked: 401,
		kindNonMember: nonMember, kindMember: member, kindOwner: owner}
	if len(noChat) > 0 {
		w[kindNoChat] = noChat[0]
	}
	return w
}

// public is the row of an operation that needs no token: the same status
// whatever credential is sent.
func public(status int) map[tokenKind]int {
	w := map[tokenKind]int{}
	for _, k := range baseKinds {
		w[k] = status
	}
	return w
}

// authzRows is the matrix, keyed by operationId. The acting user of a kind
// is: nonMember = X, member = M, owner = O, noChat = M (on missingID); the
// credential kinds act as M would if they were accepted. Path parameters
// default to chat_id = group_id = G and user_id = M.
var authzRows = map[string]authzRow{
	// Public operations: the credential sent is ignored.
	"register": {want: public(201), req: func(_ *testing.T, _ *authzFixture, _ tokenKind) authzReq {
		// A fresh email per call, so each is a new account.
		return jsonReq(fmt.Sprintf(`{"name":"Reg","email":"reg-%s@example.com","password":"password-123"}`, apptest.RandomID()))
	}},
	"login": {want: public(200), req: func(_ *testing.T, f *authzFixture, _ tokenKind) authzReq {
		// L's correct credentials (7 attempts; the per-email limit is off in
		// tests and at least 10 by default).
		return authzReq{contentType: "application/x-www-form-urlencoded", body: formBody("username", f.loginEmail, "password", f.loginPassword)}
	}},
	"healthz": {want: public(200)},
	"readyz":  {want: public(200)},

	// Any authenticated user.
	"getMe":       {want: secured(200, 200, 200)},
	"searchUsers": {want: secured(200, 200, 200), req: func(*testing.T, *authzFixture, tokenKind) authzReq { return authzReq{query: "q=a&limit=5"} }},
	"listChats":   {want: secured(200, 200, 200)},
	// createChat: a private chat with a freshly registered user, so every
	// accepted call creates one (201). Reopening an existing pair (200) is
	// an extra below.
	"createChat": {want: secured(201, 201, 201), req: func(t *testing.T, f *authzFixture, _ tokenKind) authzReq {
		return jsonReq(fmt.Sprintf(`{"type":"private","user_id":%d}`, f.freshUser(t).ID))
	}},

	// Chat-scoped: members only (G).
	"getChat":     {want: secured(403, 200, 200, 404)},
	"getHistory":  {want: secured(403, 200, 200, 404), req: func(*testing.T, *authzFixture, tokenKind) authzReq { return authzReq{query: "limit=10"} }},
	"getPresence": {want: secured(403, 200, 200, 404)},
	// sendMessage: a fresh client_msg_id per call, so an accepted one is a
	// new message (201); after a rejected one G holds no message with it.
	"sendMessage": {want: secured(403, 201, 201, 404), req: func(_ *testing.T, f *authzFixture, _ tokenKind) authzReq {
		cmid := "authz-" + apptest.RandomID()
		r := jsonReq(fmt.Sprintf(`{"client_msg_id":%q,"text":"authz matrix"}`, cmid))
		r.after = func(t *testing.T, status int) {
			if stored := f.groupHasMessage(t, cmid); stored != (status/100 == 2) {
				t.Errorf("status %d but message %q stored in G: %v", status, cmid, stored)
			}
		}
		return r
	}},
	"markRead": {want: secured(403, 204, 204, 404), req: func(*testing.T, *authzFixture, tokenKind) authzReq {
		return jsonReq(`{"seq":0}`)
	}},
	// editMessage: M's own message in G, to a fresh text per call (so an
	// accepted edit changes it). Only its sender edits it: O gets 403.
	"editMessage": {want: secured(403, 200, 403, 404), req: func(_ *testing.T, f *authzFixture, _ tokenKind) authzReq {
		text := "edited " + apptest.RandomID()
		r := jsonReq(fmt.Sprintf(`{"text":%q}`, text))
		r.params = map[string]int64{"seq": f.memberSeq}
		r.after = func(t *testing.T, status int) {
			if edited := f.groupMessageText(t, f.memberSeq) == text; edited != (status == 200) {
				t.Errorf("status %d but the message edited: %v", status, edited)
			}
		}
		return r
	}},
	// deleteMessage: a fresh message of M per call; its sender and the
	// group's owner may delete it.
	"deleteMessage": {want: secured(403, 200, 200, 404), req: func(t *testing.T, f *authzFixture, _ tokenKind) authzReq {
		seq := f.memberMessage(t)
		return authzReq{params: map[string]int64{"seq": seq}, after: func(t *testing.T, status int) {
			if deleted := f.groupMessageText(t, seq) == ""; deleted != (status == 200) {
				t.Errorf("status %d but the message deleted: %v", status, deleted)
			}
		}}
	}},
	// Reactions on O's first message (never deleted): any member.
	"addReaction":    {want: secured(403, 200, 200, 404), req: reactionReq},
	"removeReaction": {want: secured(403, 200, 200, 404), req: reactionReq},
	// searchMessages narrowed to G by the chat_id query parameter (the path
	// names no chat, so there is no noChat column: a missing chat and the
	// unnarrowed search are extras).
	"searchMessages": {want: secured(403, 200, 200), req: func(_ *testing.T, f *authzFixture, _ tokenKind) authzReq {
		return authzReq{query: fmt.Sprintf("q=hello&chat_id=%d", f.groupID)}
	}},

	// addGroupMember (owner only). Targets:
	//   nonMember: X adds itself (a self-join attempt) → 403, X stays out;
	//   member:    M adds a fresh user → 403, the user stays out;
	//   owner:     O adds a fresh user → 200;
	//   credential kinds and noChat: target M.
	"addGroupMember": {want: secured(403, 403, 200, 404), req: func(t *testing.T, f *authzFixture, k tokenKind) authzReq {
		target := f.member.ID
		switch k {
		case kindNonMember:
			target = f.outsider.ID
		case kindMember, kindOwner:
			target = f.freshUser(t).ID
		}
		return authzReq{params: map[string]int64{"user_id": target}, after: func(t *testing.T, status int) {
			if k == kindNoChat || slices.Contains(credentialKinds, k) {
				return
			}
			if in := f.inGroup(t, target); in != (status == 200) {
				t.Errorf("status %d but target %d in G afterwards: %v", status, target, in)
			}
		}}
	}},
	// removeGroupMember (the owner removes anyone but itself; a member only
	// itself). Targets:
	//   credential kinds: T → 401, T stays;
	//   nonMember: X removes M → 403, M stays;
	//   member:    M removes itself → 200; O re-adds M afterwards;
	//   owner:     O removes a throwaway member added just before → 200;
	//   noChat:    M removes itself from a missing group → 404.
	// Owner removing the owner (409) and the other domain cases are extras.
	"removeGroupMember": {want: secured(403, 200, 200, 404), req: func(t *testing.T, f *authzFixture, k tokenKind) authzReq {
		target := f.member.ID
		wantIn := true
		switch {
		case slices.Contains(credentialKinds, k):
			target = f.bystander.ID
		case k == kindMember:
			wantIn = false
		case k == kindOwner:
			target = f.freshUser(t).ID
			f.add(t, target)
			wantIn = false
		}
		return authzReq{params: map[string]int64{"user_id": target}, after: func(t *testing.T, status int) {
			if k == kindNoChat {
				return
			}
			if in := f.inGroup(t, target); in != wantIn {
				t.Errorf("status %d: target %d in G afterwards = %v, want %v", status, target, in, wantIn)
			}
			if k == kindMember {
				f.add(t, f.member.ID) // restore M for the rows that follow
			}
		}}
	}},
	// Sessions (SPEC §12). refreshToken is public: its credential is the
	// refresh token in the body, a fresh one of L per call.
	"refreshToken": {want: public(200), req: func(t *testing.T, f *authzFixture, _ tokenKind) authzReq {
		tok := f.s.LoginToken(t, f.loginEmail, f.loginPassword)
		return jsonReq(fmt.Sprintf(`{"refresh_token":%q}`, tok.RefreshToken))
	}},
	"listSessions": {want: secured(200, 200, 200)},
	// logout and revokeSession end a fresh session of the acting user (a
	// second login), so the fixture's tokens live on; after checks that the
	// session's token works exactly when the call was refused.
	"logout": {want: secured(204, 204, 204), req: func(t *testing.T, f *authzFixture, k tokenKind) authzReq {
		if slices.Contains(credentialKinds, k) {
			return authzReq{}
		}
		u := f.s.Session(t, f.actor(k))
		return authzReq{token: u.Token, after: func(t *testing.T, status int) { f.wantSessionLive(t, u.Token, status != 204) }}
	}},
	"revokeSession": {want: secured(204, 204, 204), req: func(t *testing.T, f *authzFixture, k tokenKind) authzReq {
		u := f.s.Session(t, f.actor(k))
		return authzReq{params: map[string]int64{"session_id": u.SessionID}, after: func(t *testing.T, status int) {
			f.wantSessionLive(t, u.Token, status != 204)
		}}
	}},
	// updateMe: a fresh name per call, which the acting user has exactly
	// when the call was accepted.
	"updateMe": {want: secured(200, 200, 200), req: func(_ *testing.T, f *authzFixture, k tokenKind) authzReq {
		name := "Renamed " + apptest.RandomID()
		r := jsonReq(fmt.Sprintf(`{"name":%q}`, name))
		r.after = func(t *testing.T, status int) {
			me, err := f.s.Client.GetMeWithResponse(bg, f.actor(k).Auth())
			wantStatus(t, me, err, 200)
			if renamed := me.JSON200.Name == name; renamed != (status == 200) {
				t.Errorf("status %d but renamed: %v", status, renamed)
			}
		}
		return r
	}},
	// changePassword keeps the password (new = current) but revokes the
	// acting user's other sessions: a second session made just before must
	// die exactly when the call was accepted.
	"changePassword": {want: secured(204, 204, 204), req: func(t *testing.T, f *authzFixture, k tokenKind) authzReq {
		u := f.actor(k)
		other := f.s.Session(t, u)
		r := jsonReq(fmt.Sprintf(`{"current_password":%q,"new_password":%q}`, u.Password, u.Password))
		r.after = func(t *testing.T, status int) { f.wantSessionLive(t, other.Token, status != 204) }
		return r
	}},
	"getUser": {want: secured(200, 200, 200)},
}

// authzExtra is a domain case beyond the kind columns: another target or
// another chat for one operation.
type authzExtra struct {
	name string
	op   string
	kind tokenKind
	req  func(t *testing.T, f *authzFixture) authzReq
	want int
	code rest.ProblemCode // for non-2xx
}

var authzExtras = []authzExtra{
	// Sessions and accounts.
	{"member revokes the owner's session", "revokeSession", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"session_id": f.owner.SessionID}, after: func(t *testing.T, _ int) {
			f.wantSessionLive(t, f.owner.Token, true)
		}}
	}, 404, rest.ProblemCodeNotFound},
	{"member revokes a session that does not exist", "revokeSession", kindMember, func(*testing.T, *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"session_id": missingID}}
	}, 404, rest.ProblemCodeNotFound},
	{"member revokes its revoked session again", "revokeSession", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"session_id": f.revokedSession}}
	}, 404, rest.ProblemCodeNotFound},
	{"member changes its password with a wrong current one", "changePassword", kindMember, func(t *testing.T, f *authzFixture) authzReq {
		other := f.s.Session(t, f.member)
		r := jsonReq(`{"current_password":"not-the-password","new_password":"whatever-123"}`)
		r.after = func(t *testing.T, _ int) { f.wantSessionLive(t, other.Token, true) }
		return r
	}, 401, rest.ProblemCodeInvalidCredentials},
	{"refresh with a rotated refresh token", "refreshToken", kindNone, func(t *testing.T, f *authzFixture) authzReq {
		tok := f.s.LoginToken(t, f.loginEmail, f.loginPassword)
		code, _, body := f.s.Do(t, "POST", "/token/refresh", "application/json", strings.NewReader(fmt.Sprintf(`{"refresh_token":%q}`, tok.RefreshToken)), "")
		if code != 200 {
			t.Fatalf("first refresh: got %d %s", code, body)
		}
		return jsonReq(fmt.Sprintf(`{"refresh_token":%q}`, tok.RefreshToken))
	}, 401, rest.ProblemCodeInvalidCredentials},
	{"refresh with an access token", "refreshToken", kindNone, func(_ *testing.T, f *authzFixture) authzReq {
		return jsonReq(fmt.Sprintf(`{"refresh_token":%q}`, f.member.Token))
	}, 401, rest.ProblemCodeInvalidCredentials},
	{"member looks up a user that does not exist", "getUser", kindMember, func(*testing.T, *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"user_id": missingID}}
	}, 404, rest.ProblemCodeNotFound},
	{"member searches with an empty q", "searchUsers", kindMember, func(*testing.T, *authzFixture) authzReq {
		return authzReq{query: "q="}
	}, 422, rest.ProblemCodeValidationFailed},
	{"owner removes the owner", "removeGroupMember", kindOwner, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"user_id": f.owner.ID}}
	}, 409, rest.ProblemCodeOwnerCannotBeRemoved},
	{"member removes another member", "removeGroupMember", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"user_id": f.bystander.ID}}
	}, 403, rest.ProblemCodeForbidden},
	{"outsider removes itself", "removeGroupMember", kindNonMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"user_id": f.outsider.ID}}
	}, 403, rest.ProblemCodeForbidden},
	{"member removes from a private chat", "removeGroupMember", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"group_id": f.privateID, "user_id": f.outsider.ID}}
	}, 409, rest.ProblemCodeNotAGroup},
	{"member adds to a private chat", "addGroupMember", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"group_id": f.privateID, "user_id": f.owner.ID}}
	}, 409, rest.ProblemCodeNotAGroup},
	{"owner adds an unknown user", "addGroupMember", kindOwner, func(_ *testing.T, _ *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"user_id": missingID}}
	}, 404, rest.ProblemCodeNotFound},
	{"outsider reopens its private chat with the member", "createChat", kindNonMember, func(_ *testing.T, f *authzFixture) authzReq {
		return jsonReq(fmt.Sprintf(`{"type":"private","user_id":%d}`, f.member.ID))
	}, 200, ""},
	// O owns G but is an outsider of the private chat P (M and X).
	{"group owner reads a foreign private chat", "getChat", kindOwner, privateChat, 403, rest.ProblemCodeForbidden},
	{"group owner reads foreign private history", "getHistory", kindOwner, privateChat, 403, rest.ProblemCodeForbidden},
	{"group owner watches foreign presence", "getPresence", kindOwner, privateChat, 403, rest.ProblemCodeForbidden},
	{"group owner marks a foreign chat read", "markRead", kindOwner, func(t *testing.T, f *authzFixture) authzReq {
		r := privateChat(t, f)
		r.contentType, r.body = "application/json", `{"seq":0}`
		return r
	}, 403, rest.ProblemCodeForbidden},
	{"group owner sends to a foreign private chat", "sendMessage", kindOwner, func(t *testing.T, f *authzFixture) authzReq {
		r := privateChat(t, f)
		r.contentType, r.body = "application/json", `{"client_msg_id":"authz-foreign","text":"let me in"}`
		return r
	}, 403, rest.ProblemCodeForbidden},
	{"member reads its private chat", "getHistory", kindMember, privateChat, 200, ""},
	{"member deletes the owner's message", "deleteMessage", kindMember, func(_ *testing.T, _ *authzFixture) authzReq {
		return authzReq{params: map[string]int64{"seq": 1}}
	}, 403, rest.ProblemCodeForbidden},
	{"member edits a deleted message", "editMessage", kindMember, func(t *testing.T, f *authzFixture) authzReq {
		seq := f.memberMessage(t)
		if status := f.deleteAs(t, f.member, seq); status != 200 {
			t.Fatalf("delete: got %d", status)
		}
		r := jsonReq(`{"text":"back"}`)
		r.params = map[string]int64{"seq": seq}
		return r
	}, 409, rest.ProblemCodeMessageDeleted},
	{"member edits a message that is not there", "editMessage", kindMember, func(_ *testing.T, _ *authzFixture) authzReq {
		r := jsonReq(`{"text":"nothing"}`)
		r.params = map[string]int64{"seq": 1 << 30}
		return r
	}, 404, rest.ProblemCodeNotFound},
	{"group owner reacts in a foreign private chat", "addReaction", kindOwner, privateChat, 403, rest.ProblemCodeForbidden},
	// Odd input (issue 15): the body's shape is judged before the token.
	{"JSON posted to the login form", "login", kindNone, func(_ *testing.T, f *authzFixture) authzReq {
		return jsonReq(fmt.Sprintf(`{"username":%q,"password":%q}`, f.loginEmail, f.loginPassword))
	}, 415, rest.ProblemCodeUnsupportedMediaType},
	{"oversized body without a token", "createChat", kindNone, func(*testing.T, *authzFixture) authzReq {
		return jsonReq(`{"type":"group","name":"` + strings.Repeat("n", 70_000) + `"}`)
	}, 422, rest.ProblemCodePayloadTooLarge},
	{"trailing bytes after the body", "sendMessage", kindMember, func(*testing.T, *authzFixture) authzReq {
		return jsonReq(`{"client_msg_id":"authz-trailing","text":"x"} {}`)
	}, 400, rest.ProblemCodeBadRequest},
	{"member searches a chat that does not exist", "searchMessages", kindMember, func(*testing.T, *authzFixture) authzReq {
		return authzReq{query: fmt.Sprintf("q=hello&chat_id=%d", missingID)}
	}, 404, rest.ProblemCodeNotFound},
	{"group owner searches a foreign private chat", "searchMessages", kindOwner, func(_ *testing.T, f *authzFixture) authzReq {
		return authzReq{query: fmt.Sprintf("q=hello&chat_id=%d", f.privateID)}
	}, 403, rest.ProblemCodeForbidden},
	// Unnarrowed, each finds the seed message of its own chats only.
	{"outsider searches all its chats", "searchMessages", kindNonMember, func(_ *testing.T, f *authzFixture) authzReq {
		return f.searchFinds(kindNonMember, f.privateID)
	}, 200, ""},
	{"group owner searches all its chats", "searchMessages", kindOwner, func(_ *testing.T, f *authzFixture) authzReq {
		return f.searchFinds(kindOwner, f.groupID)
	}, 200, ""},
	{"member searches all its chats", "searchMessages", kindMember, func(_ *testing.T, f *authzFixture) authzReq {
		return f.searchFinds(kindMember, f.groupID, f.privateID)
	}, 200, ""},
}

// searchFinds is an unnarrowed search for the seed messages ("hello …") as
// kind k, which must find exactly the seed messages of chats.
func (f *authzFixture) searchFinds(k tokenKind, chats ...int64) authzReq {
	return authzReq{query: "q=hello", after: func(t *testing.T, status int) {
		if status != 200 {
			return
		}
		r, err := f.s.Client.SearchMessagesWithResponse(bg, &rest.SearchMessagesParams{Q: "hello"}, apptest.Bearer(f.tokens[k]))
		wantStatus(t, r, err, 200)
		var got []int64
		for _, h := range *r.JSON200 {
			if strings.HasPrefix(h.Message.ClientMsgID, "seed-") {
				got = append(got, h.ChatID)
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(chats))
		if !slices.Equal(got, want) {
			t.Errorf("%s searches hello: found seed messages of chats %v, want %v", k, got, want)
		}
	}}
}

// reactionReq targets O's first message in G.
func reactionReq(*testing.T, *authzFixture, tokenKind) authzReq {
	return authzReq{params: map[string]int64{"seq": 1}}
}

func privateChat(_ *testing.T, f *authzFixture) authzReq {
	return authzReq{params: map[string]int64{"chat_id": f.privateID}}
}

func jsonReq(body string) authzReq { return authzReq{contentType: "application/json", body: body} }

func formBody(kv ...string) string {
	b, _ := io.ReadAll(apptest.Form(kv...))
	return string(b)
}

// authzOp is one operation of the spec.
type authzOp struct {
	id, method, path string
	item             *openapi3.PathItem
	op               *openapi3.Operation
	public           bool // security: [] overrides the global requirement
}

func loadAuthzSpec(t *testing.T) (*openapi3.T, []authzOp) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("../api/openapi.yaml")
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate spec: %v", err)
	}
	var ops []authzOp
	for _, path := range doc.Paths.Keys() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
				continue
			}
			sec := op.Security
			if sec == nil {
				sec = &doc.Security
			}
			ops = append(ops, authzOp{id: op.OperationID, method: method, path: path, item: item, op: op, public: len(*sec) == 0})
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].path != ops[j].path {
			return ops[i].path < ops[j].path
		}
		return ops[i].method < ops[j].method
	})
	return doc, ops
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestAuthorizationMatrixCoversSpec checks the table against the spec
// without a server: a row per operation and an operation per row, the
// credential columns consistent with the operation's security, the noChat
// column exactly for chat-scoped operations, and every expected status
// documented by the operation.
func TestAuthorizationMatrixCoversSpec(t *testing.T) {
	_, ops := loadAuthzSpec(t)
	checkAuthzTable(t, ops)
}

func checkAuthzTable(t *testing.T, ops []authzOp) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range ops {
		seen[o.id] = true
		row, ok := authzRows[o.id]
		if !ok {
			t.Errorf("operation %s (%s %s) has no authorization rows", o.id, o.method, o.path)
			continue
		}
		scoped := strings.Contains(o.path, "{chat_id}") || strings.Contains(o.path, "{group_id}")
		if _, has := row.want[kindNoChat]; has != scoped {
			t.Errorf("%s: noChat column present = %v, want %v (chat-scoped path %s)", o.id, has, scoped, o.path)
		}
		for _, k := range baseKinds {
			if _, ok := row.want[k]; !ok {
				t.Errorf("%s: no expectation for %s", o.id, k)
			}
		}
		for _, k := range credentialKinds {
			if got := row.want[k]; o.public && got == 401 || !o.public && got != 401 {
				t.Errorf("%s: %s expects %d, but the spec marks the operation public=%v", o.id, k, got, o.public)
			}
		}
		for k, status := range row.want {
			if o.op.Responses.Value(strconv.Itoa(status)) == nil {
				t.Errorf("%s: %s expects %d, which the spec does not document for %s %s", o.id, k, status, o.method, o.path)
			}
		}
		if o.op.RequestBody != nil && o.op.RequestBody.Value.Required && row.req == nil {
			t.Errorf("%s: the operation requires a body but its row builds none", o.id)
		}
	}
	for id := range authzRows {
		if !seen[id] {
			t.Errorf("authorization row %s names no operation of the spec", id)
		}
	}
	for _, x := range authzExtras {
		if !seen[x.op] {
			t.Errorf("extra %q names no operation of the spec: %s", x.name, x.op)
		}
	}
}

func TestAuthorizationMatrix(t *testing.T) {
	doc, ops := loadAuthzSpec(t)
	checkAuthzTable(t, ops)
	if t.Failed() {
		t.FailNow()
	}
	byID := map[string]authzOp{}
	for _, o := range ops {
		byID[o.id] = o
	}
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		f := newAuthzFixture(t, env.Start(t))
		got := map[string]map[tokenKind]int{}
		for _, o := range ops {
			row := authzRows[o.id]
			got[o.id] = map[tokenKind]int{}
			for _, k := range authzKinds {
				want, ok := row.want[k]
				if !ok {
					continue
				}
				t.Run(o.id+"/"+string(k), func(t *testing.T) {
					var r authzReq
					if row.req != nil {
						r = row.req(t, f, k)
					}
					status := f.call(t, doc, o, k, r, want, "")
					got[o.id][k] = status
				})
			}
		}
		for _, x := range authzExtras {
			t.Run("extra/"+x.name, func(t *testing.T) {
				f.call(t, doc, byID[x.op], x.kind, x.req(t, f), x.want, x.code)
			})
		}
		t.Logf("observed matrix (%s):\n%s", env.Dialect, formatMatrix(ops, got))
	})
}

func newAuthzFixture(t *testing.T, s *apptest.Server) *authzFixture {
	t.Helper()
	f := &authzFixture{s: s}
	f.owner, f.member = s.NewUser(t, "Owner"), s.NewUser(t, "Member")
	f.outsider, f.bystander = s.NewUser(t, "Outsider"), s.NewUser(t, "Bystander")
	login := f.freshUser(t)
	f.loginEmail, f.loginPassword = login.Email, "password-123"
	f.groupID = group(t, s, f.owner, "authz", f.member.ID, f.bystander.ID).ID
	r, err := private(t, s, f.member, f.outsider.ID)
	wantStatus(t, r, err, 201)
	f.privateID = r.JSON201.ID
	// A message in each chat, so history and read have something to hide.
	wantStatus(t, send(t, s, f.owner, f.groupID, "seed-g", "hello group"), nil, 201)
	wantStatus(t, send(t, s, f.member, f.privateID, "seed-p", "hello private"), nil, 201)
	f.memberSeq = f.memberMessage(t)

	revoked := s.Session(t, f.member)
	f.revokedSession = revoked.SessionID
	rr, err := s.Client.RevokeSessionWithResponse(bg, revoked.SessionID, f.member.Auth())
	wantStatus(t, rr, err, 204)

	expired, _, err := s.Service.Tokens().IssueAt(f.member.ID, f.member.SessionID, time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _, err := s.Service.Tokens().Issue(missingID, 1) // well signed, no such user
	if err != nil {
		t.Fatal(err)
	}
	f.tokens = map[tokenKind]string{
		kindNone: "", kindMalformed: "not-a-jwt", kindExpired: expired, kindUnknown: unknown, kindRevoked: revoked.Token,
		kindNonMember: f.outsider.Token, kindMember: f.member.Token, kindOwner: f.owner.Token, kindNoChat: f.member.Token,
	}
	return f
}

// actor is the user a kind acts as: the member for the credential kinds.
func (f *authzFixture) actor(k tokenKind) apptest.User {
	switch k {
	case kindNonMember:
		return f.outsider
	case kindOwner:
		return f.owner
	}
	return f.member
}

// wantSessionLive checks that token authenticates (live) or gets 401
// session_revoked.
func (f *authzFixture) wantSessionLive(t *testing.T, token string, live bool) {
	t.Helper()
	code, hdr, body := f.s.Do(t, "GET", "/users/me", "", nil, token)
	switch {
	case live && code != 200:
		t.Errorf("session token: got %d %s, want 200 (the session lives)", code, body)
	case !live:
		wantProblem(t, code, hdr, body, 401, rest.ProblemCodeSessionRevoked)
	}
}

// freshUser registers a user (without logging it in) whose password is
// "password-123".
func (f *authzFixture) freshUser(t *testing.T) rest.User {
	t.Helper()
	r, err := f.s.Client.RegisterWithResponse(bg, rest.RegisterRequest{Name: "Fresh", Email: "fresh-" + apptest.RandomID() + "@example.com", Password: "password-123"})
	wantStatus(t, r, err, 201)
	return *r.JSON201
}

// add makes userID a member of G, as the owner.
func (f *authzFixture) add(t *testing.T, userID int64) {
	t.Helper()
	r, err := f.s.Client.AddGroupMemberWithResponse(bg, f.groupID, userID, f.owner.Auth())
	wantStatus(t, r, err, 200)
}

// inGroup reports whether userID is a member of G, as the owner sees it.
func (f *authzFixture) inGroup(t *testing.T, userID int64) bool {
	t.Helper()
	r, err := f.s.Client.GetChatWithResponse(bg, f.groupID, f.owner.Auth())
	wantStatus(t, r, err, 200)
	return slices.ContainsFunc(r.JSON200.Members, func(m rest.ChatMember) bool { return m.UserID == userID })
}

// memberMessage sends a fresh message of M to G and returns its seq.
func (f *authzFixture) memberMessage(t *testing.T) int64 {
	t.Helper()
	r := send(t, f.s, f.member, f.groupID, "m-"+apptest.RandomID(), "mine")
	if r.JSON201 == nil {
		t.Fatalf("send: got %d", r.StatusCode())
	}
	return r.JSON201.Seq
}

// deleteAs deletes message seq of G as u and returns the status.
func (f *authzFixture) deleteAs(t *testing.T, u apptest.User, seq int64) int {
	t.Helper()
	r, err := f.s.Client.DeleteMessageWithResponse(bg, f.groupID, seq, u.Auth())
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode()
}

// groupMessageText is the text of message seq of G, as the owner sees it.
func (f *authzFixture) groupMessageText(t *testing.T, seq int64) string {
	t.Helper()
	r, err := f.s.Client.GetHistoryWithResponse(bg, f.groupID, &rest.GetHistoryParams{AfterSeq: ptr(seq - 1), Limit: ptr(1)}, f.owner.Auth())
	wantStatus(t, r, err, 200)
	if len(*r.JSON200) != 1 {
		t.Fatalf("message %d of G not found", seq)
	}
	return (*r.JSON200)[0].Text
}

// groupHasMessage reports whether G holds a message with client_msg_id cmid.
func (f *authzFixture) groupHasMessage(t *testing.T, cmid string) bool {
	t.Helper()
	r, err := f.s.Client.GetHistoryWithResponse(bg, f.groupID, &rest.GetHistoryParams{Limit: ptr(100), BeforeSeq: ptr(int64(1) << 40)}, f.owner.Auth())
	wantStatus(t, r, err, 200)
	return slices.ContainsFunc(*r.JSON200, func(m rest.Message) bool { return m.ClientMsgID == cmid })
}

// call sends o's request as kind k, checks the status (want), the problem
// document of a non-2xx (code, when given, else the status's usual code),
// and the response against the spec; it returns the status.
func (f *authzFixture) call(t *testing.T, doc *openapi3.T, o authzOp, k tokenKind, r authzReq, want int, code rest.ProblemCode) int {
	t.Helper()
	params := map[string]int64{"chat_id": f.groupID, "group_id": f.groupID, "user_id": f.member.ID, "seq": 1}
	// String path parameters: the emoji (👍, escaped).
	strParams := map[string]string{"emoji": "%F0%9F%91%8D"}
	if k == kindNoChat {
		params["chat_id"], params["group_id"] = missingID, missingID
	}
	for name, v := range r.params {
		params[name] = v
	}
	var missing []string
	path := pathParam.ReplaceAllStringFunc(o.path, func(m string) string {
		name := m[1 : len(m)-1]
		if v, ok := strParams[name]; ok {
			return v
		}
		v, ok := params[name]
		if !ok {
			missing = append(missing, name)
		}
		return strconv.FormatInt(v, 10)
	})
	if len(missing) > 0 {
		t.Fatalf("%s: no fixture value for path parameters %v", o.id, missing)
	}
	if r.query != "" {
		path += "?" + r.query
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	token := f.tokens[k]
	if r.token != "" {
		token = r.token
	}
	status, hdr, respBody := f.s.Do(t, strings.ToUpper(o.method), path, r.contentType, body, token)
	if status != want {
		t.Errorf("%s %s as %s: got %d, want %d (body %s)", o.method, path, k, status, want, respBody)
	}
	// Nothing the API answers may be kept by a cache: tokens, private data.
	if cc := hdr.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s %s as %s: got Cache-Control %q, want no-store", o.method, path, k, cc)
	}
	if status/100 != 2 {
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Errorf("%s %s as %s: status %d with Content-Type %q, want application/problem+json", o.method, path, k, status, ct)
		}
		var p rest.Problem
		if err := json.Unmarshal(respBody, &p); err != nil {
			t.Errorf("%s %s as %s: problem body %s: %v", o.method, path, k, respBody, err)
		}
		wantCode := code
		if wantCode == "" {
			wantCode = map[int]rest.ProblemCode{401: rest.ProblemCodeUnauthorized, 403: rest.ProblemCodeForbidden, 404: rest.ProblemCodeNotFound}[status]
			if k == kindRevoked && status == 401 {
				wantCode = rest.ProblemCodeSessionRevoked
			}
		}
		if p.Status != status || (wantCode != "" && p.Code != wantCode) || p.Title == "" || p.Type == "" {
			t.Errorf("%s %s as %s: got problem %+v, want status %d code %q with title and type", o.method, path, k, p, status, wantCode)
		}
		if status == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s as %s: 401 without WWW-Authenticate", o.method, path, k)
		}
	}
	// The response, whatever it is, matches what the spec documents for it.
	req, _ := http.NewRequest(strings.ToUpper(o.method), f.s.URL+path, nil)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req,
			Route:   &routers.Route{Spec: doc, Path: o.path, PathItem: o.item, Method: strings.ToUpper(o.method), Operation: o.op},
		},
		Status:  status,
		Header:  hdr,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	in.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s as %s: response %d does not match the spec: %v", o.method, path, k, status, err)
	}
	if r.after != nil {
		r.after(t, status)
	}
	return status
}

// formatMatrix renders the observed statuses, one operation a line.
func formatMatrix(ops []authzOp, got map[string]map[tokenKind]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s", "operation")
	for _, k := range authzKinds {
		fmt.Fprintf(&b, " %9s", k)
	}
	b.WriteString("\n")
	for _, o := range ops {
		fmt.Fprintf(&b, "%-18s", o.id)
		for _, k := range authzKinds {
			if s, ok := got[o.id][k]; ok {
				fmt.Fprintf(&b, " %9d", s)
			} else {
				fmt.Fprintf(&b, " %9s", "-")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestMethodNotAllowedFollowsSpec: on every path of the spec, a method the
// path does not have (a standard one, OPTIONS, or a made-up one) is 405
// with an Allow header naming exactly the spec's methods, whatever the
// credential.
func TestMethodNotAllowedFollowsSpec(t *testing.T) {
	doc, _ := loadAuthzSpec(t)
	env := apptest.NewEnv(t, "sqlite")
	s := env.Start(t)
	u := s.NewUser(t, "Methods")
	for _, path := range doc.Paths.Keys() {
		item := doc.Paths.Value(path)
		var want []string
		for m := range item.Operations() {
			want = append(want, strings.ToUpper(m))
		}
		sort.Strings(want)
		target := pathParam.ReplaceAllString(path, "1")
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW", "X-" + strings.Repeat("Y", 100)} {
			if slices.Contains(want, method) {
				continue
			}
			for _, token := range []string{"", u.Token} {
				code, hdr, body := s.Do(t, method, target, "", nil, token)
				if code != 405 {
					t.Errorf("%s %s: got %d %s, want 405", method, target, code, body)
					continue
				}
				allow := strings.Split(hdr.Get("Allow"), ", ")
				sort.Strings(allow)
				if !slices.Equal(allow, want) {
					t.Errorf("%s %s: got Allow %q, want %v", method, target, hdr.Get("Allow"), want)
				}
			}
		}
	}
}
