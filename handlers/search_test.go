package handlers_test

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/client/rest"
)

// search calls GET /search as u and returns the hits; the server checks
// the answer against the spec.
func search(t *testing.T, s *apptest.Server, u apptest.User, p rest.SearchMessagesParams) []rest.SearchHit {
	t.Helper()
	r, err := s.Client.SearchMessagesWithResponse(bg, &p, u.Auth())
	wantStatus(t, r, err, 200)
	return *r.JSON200
}

func hitTexts(hits []rest.SearchHit) []string {
	out := []string{}
	for _, h := range hits {
		out = append(out, h.Message.Text)
	}
	return out
}

func TestSearchMessages(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob, carol := s.NewUser(t, "Alice"), s.NewUser(t, "Bob"), s.NewUser(t, "Carol")
		g := group(t, s, alice, "search", bob.ID, carol.ID).ID
		r, err := private(t, s, alice, bob.ID)
		wantStatus(t, r, err, 201)
		p := r.JSON201.ID

		greeting := send(t, s, alice, g, "s-1", "Привет всем!")
		wantStatus(t, greeting, nil, 201)
		wantStatus(t, send(t, s, bob, g, "s-2", "hello World"), nil, 201)
		wantStatus(t, send(t, s, alice, p, "s-3", "hello private Bob"), nil, 201)

		// Cyrillic prefix, any case: the hit carries the Message as
		// elsewhere, with its chat.
		hits := search(t, s, bob, rest.SearchMessagesParams{Q: "ПРИВ"})
		if len(hits) != 1 || hits[0].ChatID != g || !reflect.DeepEqual(hits[0].Message, *greeting.JSON201) {
			t.Fatalf("bob searches ПРИВ: got %+v, want the greeting %+v in chat %d", hits, *greeting.JSON201, g)
		}
		if hits[0].Message.Read {
			t.Errorf("greeting read before anyone read it")
		}
		// The read flag is derived as elsewhere: once bob and carol have
		// read it, it is read.
		for _, u := range []apptest.User{bob, carol} {
			mr, err := s.Client.MarkReadWithResponse(bg, g, rest.ReadRequest{Seq: 1}, u.Auth())
			wantStatus(t, mr, err, 204)
		}
		if hits := search(t, s, carol, rest.SearchMessagesParams{Q: "всем"}); len(hits) != 1 || !hits[0].Message.Read {
			t.Errorf("carol searches всем after everyone read it: got %+v, want it read", hits)
		}

		// Newest first, across the caller's chats; only the caller's.
		if got, want := hitTexts(search(t, s, bob, rest.SearchMessagesParams{Q: "hello"})), []string{"hello private Bob", "hello World"}; !slices.Equal(got, want) {
			t.Errorf("bob searches hello: got %q, want %q", got, want)
		}
		if got, want := hitTexts(search(t, s, carol, rest.SearchMessagesParams{Q: "hello"})), []string{"hello World"}; !slices.Equal(got, want) {
			t.Errorf("carol (not in the private chat) searches hello: got %q, want %q", got, want)
		}
		if got, want := hitTexts(search(t, s, bob, rest.SearchMessagesParams{Q: "hello", ChatID: &p})), []string{"hello private Bob"}; !slices.Equal(got, want) {
			t.Errorf("bob searches hello in the private chat: got %q, want %q", got, want)
		}
		// Operators and punctuation are words or nothing, never errors.
		if got := hitTexts(search(t, s, bob, rest.SearchMessagesParams{Q: `hello & !(wor* | "x`})); len(got) != 0 {
			t.Errorf(`bob searches hello & !(wor* | "x: got %q, want nothing (x is in no message)`, got)
		}
		if got := hitTexts(search(t, s, bob, rest.SearchMessagesParams{Q: `"hello" & !(wor*`})); !slices.Equal(got, []string{"hello World"}) {
			t.Errorf(`bob searches "hello" & !(wor*: got %q, want hello World`, got)
		}
		if got := search(t, s, bob, rest.SearchMessagesParams{Q: `?!* & | :* "`}); len(got) != 0 {
			t.Errorf("punctuation only: got %+v, want nothing", got)
		}

		// A member who leaves finds nothing more of that chat.
		rm, err := s.Client.RemoveGroupMemberWithResponse(bg, g, carol.ID, carol.Auth())
		wantStatus(t, rm, err, 200)
		if got := search(t, s, carol, rest.SearchMessagesParams{Q: "hello"}); len(got) != 0 {
			t.Errorf("carol after leaving: got %+v, want nothing", got)
		}
		code, hdr, body := s.Do(t, "GET", fmt.Sprintf("/search?q=hello&chat_id=%d", g), "", nil, carol.Token)
		wantProblem(t, code, hdr, body, 403, rest.ProblemCodeForbidden)
		code, hdr, body = s.Do(t, "GET", "/search?q=hello&chat_id=99999", "", nil, carol.Token)
		wantProblem(t, code, hdr, body, 404, rest.ProblemCodeNotFound)

		// Bad input is a 422 naming the parameter, or a 400 when it does
		// not parse.
		for _, tc := range []struct{ name, query, field string }{
			{"no q", "", "q"},
			{"empty q", "q=", "q"},
			{"blank q", "q=%20%20%09", "q"},
			{"201 characters", "q=" + strings.Repeat("a", 201), "q"},
			{"201 Cyrillic characters", "q=" + url.QueryEscape(strings.Repeat("я", 201)), "q"},
			{"17 words", "q=" + url.QueryEscape(strings.Repeat("w ", 17)), "q"},
			{"not UTF-8", "q=%FF", "q"},
			{"limit 0", "q=a&limit=0", "limit"},
			{"limit 51", "q=a&limit=51", "limit"},
			{"before_seq without chat_id", "q=a&before_seq=3", "before_seq"},
			{"before_seq 0", fmt.Sprintf("q=a&chat_id=%d&before_seq=0", g), "before_seq"},
			{"before_id 0", "q=a&before_id=0", "before_id"},
			{"chat_id 0", "q=a&chat_id=0", "chat_id"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, hdr, body := s.Do(t, "GET", "/search?"+tc.query, "", nil, bob.Token)
				wantProblem(t, code, hdr, body, 422, rest.ProblemCodeValidationFailed)
				if !strings.Contains(string(body), `"field":"`+tc.field+`"`) {
					t.Errorf("got %s, want the field %s named", body, tc.field)
				}
			})
		}
		for _, q := range []string{"q=a&chat_id=abc", "q=a&limit=x", "q=a&before_id=1.5"} {
			code, hdr, body := s.Do(t, "GET", "/search?"+q, "", nil, bob.Token)
			wantProblem(t, code, hdr, body, 400, rest.ProblemCodeBadRequest)
		}
		// The longest query allowed is fine.
		if got := search(t, s, bob, rest.SearchMessagesParams{Q: strings.Repeat("я", 200)}); len(got) != 0 {
			t.Errorf("200 characters: got %+v, want nothing", got)
		}
		code, hdr, body = s.Do(t, "GET", "/search?q=hello", "", nil, "")
		wantProblem(t, code, hdr, body, 401, rest.ProblemCodeUnauthorized)
	})
}

func TestSearchMessagesPaging(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		s := env.Start(t)
		alice, bob := s.NewUser(t, "Alice"), s.NewUser(t, "Bob")
		g := group(t, s, alice, "paging", bob.ID).ID
		r, err := private(t, s, alice, bob.ID)
		wantStatus(t, r, err, 201)
		p := r.JSON201.ID
		var want []string // newest first
		for i := range 25 {
			chat := g
			if i%4 == 0 {
				chat = p
			}
			text := fmt.Sprintf("paging message %d", i)
			wantStatus(t, send(t, s, alice, chat, fmt.Sprintf("pg-%d", i), text), nil, 201)
			want = append([]string{text}, want...)
		}
		if got := search(t, s, bob, rest.SearchMessagesParams{Q: "paging"}); len(got) != 20 {
			t.Errorf("default limit: got %d hits, want 20", len(got))
		}

		var got []string
		params := rest.SearchMessagesParams{Q: "pag mess", Limit: ptr(7)}
		for pages := 1; ; pages++ {
			hits := search(t, s, bob, params)
			got = append(got, hitTexts(hits)...)
			if len(hits) < 7 {
				if pages != 4 {
					t.Errorf("got %d pages of 7 for 25 messages, want 4", pages)
				}
				break
			}
			params.BeforeID = &hits[len(hits)-1].Message.ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged by before_id: got %q, want %q", got, want)
		}

		// Within one chat, by seq.
		var wantG []string
		for _, text := range want {
			var i int
			fmt.Sscanf(text, "paging message %d", &i)
			if i%4 != 0 {
				wantG = append(wantG, text)
			}
		}
		got = nil
		params = rest.SearchMessagesParams{Q: "paging", ChatID: &g, Limit: ptr(5)}
		for {
			hits := search(t, s, bob, params)
			if len(hits) == 0 {
				break
			}
			got = append(got, hitTexts(hits)...)
			params.BeforeSeq = &hits[len(hits)-1].Message.Seq
		}
		if !slices.Equal(got, wantG) {
			t.Errorf("paged by before_seq in the group: got %q, want %q", got, wantG)
		}
	})
}
