package repo_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// FuzzSearchText searches arbitrary text on both dialects: no text is an
// error (quotes, operators, backslashes and control bytes are never query
// syntax), a text without words finds nothing, nothing is found outside
// the searcher's chats, and a message made of Latin, Greek or Cyrillic
// words with any punctuation is found by its own text.
func FuzzSearchText(f *testing.F) {
	type world struct {
		s       *repo.Store
		user    int64
		mine    int64
		n       int
		foreign int64
	}
	var worlds []*world
	for _, s := range []*repo.Store{repotest.OpenSQLite(f), repotest.OpenPostgres(f)} {
		ctx := context.Background()
		a, err := s.CreateUser(ctx, "a", "a@example.com", "hash")
		if err != nil {
			f.Fatal(err)
		}
		z, err := s.CreateUser(ctx, "z", "z@example.com", "hash")
		if err != nil {
			f.Fatal(err)
		}
		mine, err := s.CreateGroup(ctx, "mine", a.ID, nil)
		if err != nil {
			f.Fatal(err)
		}
		foreign, err := s.CreateGroup(ctx, "foreign", z.ID, nil)
		if err != nil {
			f.Fatal(err)
		}
		w := &world{s: s, user: a.ID, mine: mine.ID, foreign: foreign.ID}
		for i, text := range []string{"hello world", "Привет, мир", `quotes ' " \ and :* & | ! ( )`, "e-mail x@y.com 3.14"} {
			for _, chat := range []struct{ id, sender int64 }{{w.mine, a.ID}, {w.foreign, z.ID}} {
				if _, err := insertOne(ctx, s, chat.id, chat.sender, fmt.Sprintf("seed-%d", i), text); err != nil {
					f.Fatal(err)
				}
			}
		}
		worlds = append(worlds, w)
	}
	for _, seed := range []string{"hel", "ПРИВ", `"`, `'`, `\`, "a & !b | (c) <-> d:*", "NEAR(a b)", "text:hello", "x@y.com", "3.14", "\x00", "\xff", "\u0301", "½ Ⅻ"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ctx := context.Background()
		words := repo.SearchTerms(text)
		for _, w := range worlds {
			msgs, err := w.s.Search(ctx, repo.SearchQuery{UserID: w.user, Text: text, Limit: 50})
			if err != nil {
				t.Fatalf("%s: search %q: %v", w.s.Dialect(), text, err)
			}
			if len(words) == 0 && len(msgs) > 0 {
				t.Fatalf("%s: search %q (no words) found %d messages", w.s.Dialect(), text, len(msgs))
			}
			for _, m := range msgs {
				if m.ChatID != w.mine || m.Text == "" {
					t.Fatalf("%s: search %q found %+v, outside the searcher's chat %d", w.s.Dialect(), text, m, w.mine)
				}
			}
		}

		// A message in the scripts both dialects split alike (Latin, Greek
		// and Cyrillic letters as old as SQLite's Unicode 6.1 tables, ASCII
		// digits) is found by its own text.
		stored := strings.TrimSpace(text)
		if !utf8.ValidString(stored) || stored == "" || len(words) == 0 || len(words) > 16 || utf8.RuneCountInString(stored) > 200 {
			return
		}
		for _, r := range stored {
			if unicode.IsLetter(r) && (r >= 0x0528 || !unicode.In(r, unicode.Latin, unicode.Greek, unicode.Cyrillic)) ||
				unicode.IsNumber(r) && (r < '0' || r > '9') || unicode.IsMark(r) || unicode.Is(unicode.Co, r) ||
				r == 0 || !unicode.IsPrint(r) && !unicode.IsSpace(r) {
				return
			}
		}
		for _, w := range worlds {
			w.n++
			m, err := insertOne(ctx, w.s, w.mine, w.user, fmt.Sprintf("fuzz-%d", w.n), stored)
			if err != nil {
				t.Fatalf("%s: store %q: %v", w.s.Dialect(), stored, err)
			}
			msgs, err := w.s.Search(ctx, repo.SearchQuery{UserID: w.user, Text: stored, ChatID: &w.mine, BeforeSeq: ptr(m.Message.Seq + 1), Limit: 1})
			if err != nil {
				t.Fatalf("%s: search %q: %v", w.s.Dialect(), stored, err)
			}
			if len(msgs) != 1 || msgs[0].ID != m.Message.ID {
				t.Fatalf("%s: search %q: got %+v, want the message just stored with that text", w.s.Dialect(), stored, msgs)
			}
		}
	})
}
