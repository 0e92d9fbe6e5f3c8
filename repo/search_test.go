package repo_test

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/uptrace/bun/migrate"

	"github.com/windi-chat/windi/migrations"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// searchWorld is the fixture of the search tests: group G of a (owner) and
// b, group H of a and c, private chat P of b and c, each with messages.
type searchWorld struct {
	s       *repo.Store
	a, b, c repo.User
	g, h, p int64
	// byText maps each fixture text to its message.
	byText map[string]repo.Message
}

func newSearchWorld(t *testing.T, s *repo.Store) *searchWorld {
	t.Helper()
	ctx := context.Background()
	w := &searchWorld{s: s, byText: map[string]repo.Message{}}
	w.a, w.b, w.c = mustUser(t, s, "a"), mustUser(t, s, "b"), mustUser(t, s, "c")
	w.g = mustGroup(t, s, "G", w.a.ID, w.b.ID).ID
	w.h = mustGroup(t, s, "H", w.a.ID, w.c.ID).ID
	p, _, err := s.GetOrCreatePrivateChat(ctx, w.b.ID, w.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	w.p = p.ID
	for i, m := range []struct {
		chat   int64
		sender int64
		text   string
	}{
		{w.g, w.a.ID, "Привет, МИР!"},
		{w.g, w.b.ID, "hello World"},
		{w.h, w.a.ID, "hello from H"},
		{w.p, w.b.ID, "hello private"},
		{w.g, w.a.ID, "Hello again, worldwide"},
		{w.g, w.b.ID, "don't panic: it's only 42"},
		{w.g, w.a.ID, "Καλημέρα κόσμε"},
		{w.h, w.c.ID, "AND OR NOT NEAR are plain words here"},
	} {
		w.byText[m.text] = mustSend(t, s, m.chat, m.sender, fmt.Sprintf("w%d", i), m.text)
	}
	return w
}

// search runs a search as user and returns the texts found, in order.
func (w *searchWorld) search(t *testing.T, q repo.SearchQuery) []string {
	t.Helper()
	msgs, err := w.s.Search(context.Background(), q)
	if err != nil {
		t.Fatalf("search %+v: %v", q, err)
	}
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.Text)
	}
	return out
}

func TestSearchMatchesWordsAndPrefixes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		w := newSearchWorld(t, s)
		for _, tc := range []struct {
			name, q string
			want    []string // newest first
		}{
			{"whole word", "hello", []string{"Hello again, worldwide", "hello from H", "hello World"}},
			{"prefix", "hel", []string{"Hello again, worldwide", "hello from H", "hello World"}},
			{"upper case query", "HELLO", []string{"Hello again, worldwide", "hello from H", "hello World"}},
			{"every word must match", "hello wor", []string{"Hello again, worldwide", "hello World"}},
			{"word order does not matter", "wor HEL", []string{"Hello again, worldwide", "hello World"}},
			{"prefix of a longer word", "worldw", []string{"Hello again, worldwide"}},
			{"no prefix in the middle of a word", "orld", []string{}},
			{"cyrillic prefix, lower case query", "прив", []string{"Привет, МИР!"}},
			{"cyrillic, mixed case query", "пРиВеТ", []string{"Привет, МИР!"}},
			{"cyrillic upper-case text", "мир", []string{"Привет, МИР!"}},
			{"greek", "καλημέρα", []string{"Καλημέρα κόσμε"}},
			{"greek prefix, upper case", "ΚΌΣ", []string{"Καλημέρα κόσμε"}},
			{"punctuation in the query separates words", "привет,мир!!!", []string{"Привет, МИР!"}},
			{"apostrophe", "don't", []string{"don't panic: it's only 42"}},
			{"digits", "42", []string{"don't panic: it's only 42"}},
			{"operator words are words", "and or not near", []string{"AND OR NOT NEAR are plain words here"}},
			{"no match", "goodbye", []string{}},
			{"a word missing", "hello goodbye", []string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: tc.q})
				if !slices.Equal(got, tc.want) {
					t.Errorf("a searches %q: got %q, want %q", tc.q, got, tc.want)
				}
			})
		}
	})
}

func TestSearchQuerySyntaxIsNeverSyntax(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		w := newSearchWorld(t, s)
		for _, q := range []string{
			"", "   ", "!!!", "*", `"`, `'`, `\`, `''`, `\'`, `"hello`, "hello*", "hel:*", "hello & !world",
			"hello | world", "(hello", "hello <-> world", "NEAR(hello world)", "text:hello", "-hello", "^hello",
			"hello AND", "OR", "{hello}", "hello\\", "'hello'", "h'e\"l\\l:o*", "\u00a0\u2003", "—«»…",
			"x@y.com", "3.14", "e-mail", "😀", "hello\u0000world", "\xff\xfe",
		} {
			t.Run(q, func(t *testing.T) {
				msgs, err := s.Search(context.Background(), repo.SearchQuery{UserID: w.a.ID, Text: q})
				if err != nil {
					t.Fatalf("search %q: got error %v, want none", q, err)
				}
				if len(repo.SearchTerms(q)) == 0 && len(msgs) != 0 {
					t.Errorf("search %q (no words): got %d messages, want none", q, len(msgs))
				}
			})
		}
		// Punctuation around a word leaves the word.
		for _, q := range []string{`"hello"`, "hello*", "(hello)", "hello & !", "'hello'", "hel:*", "-hello-", `\hello\`} {
			got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: q})
			if len(got) != 3 {
				t.Errorf("search %q: got %q, want the 3 hello messages", q, got)
			}
		}
	})
}

func TestSearchMembersOnly(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		w := newSearchWorld(t, s)
		// c is in H and P, not in G.
		if got, want := w.search(t, repo.SearchQuery{UserID: w.c.ID, Text: "hello"}), []string{"hello private", "hello from H"}; !slices.Equal(got, want) {
			t.Errorf("c searches hello: got %q, want %q", got, want)
		}
		// Narrowing to a chat c is not in finds nothing, even by id.
		if got := w.search(t, repo.SearchQuery{UserID: w.c.ID, Text: "hello", ChatID: &w.g}); len(got) != 0 {
			t.Errorf("c searches G: got %q, want nothing", got)
		}
		// A stranger in no chat finds nothing.
		d := mustUser(t, s, "d")
		if got := w.search(t, repo.SearchQuery{UserID: d.ID, Text: "hello"}); len(got) != 0 {
			t.Errorf("d searches: got %q, want nothing", got)
		}

		// b leaves G: G's messages disappear from b's results, its own
		// included, and P's stay.
		if got := w.search(t, repo.SearchQuery{UserID: w.b.ID, Text: "hello"}); len(got) != 3 {
			t.Fatalf("b before leaving: got %q, want 3 messages", got)
		}
		if removed, err := s.RemoveMember(ctx, w.g, w.b.ID); err != nil || !removed {
			t.Fatalf("remove b: %v %v", removed, err)
		}
		if got, want := w.search(t, repo.SearchQuery{UserID: w.b.ID, Text: "hello"}), []string{"hello private"}; !slices.Equal(got, want) {
			t.Errorf("b after leaving G: got %q, want %q", got, want)
		}
		if got := w.search(t, repo.SearchQuery{UserID: w.b.ID, Text: "hello", ChatID: &w.g}); len(got) != 0 {
			t.Errorf("b searches G after leaving: got %q, want nothing", got)
		}
		// Added back, b sees G's history again (membership is checked now,
		// not at the time of the message).
		if _, err := s.AddMember(ctx, w.g, w.b.ID); err != nil {
			t.Fatal(err)
		}
		if got := w.search(t, repo.SearchQuery{UserID: w.b.ID, Text: "hello"}); len(got) != 3 {
			t.Errorf("b added back: got %q, want 3 messages", got)
		}
	})
}

func TestSearchNarrowsToChat(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		w := newSearchWorld(t, s)
		if got, want := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello", ChatID: &w.h}), []string{"hello from H"}; !slices.Equal(got, want) {
			t.Errorf("a searches H: got %q, want %q", got, want)
		}
		if got, want := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello", ChatID: &w.g}), []string{"Hello again, worldwide", "hello World"}; !slices.Equal(got, want) {
			t.Errorf("a searches G: got %q, want %q", got, want)
		}
		missing := int64(1) << 40
		if got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello", ChatID: &missing}); len(got) != 0 {
			t.Errorf("a searches a missing chat: got %q, want nothing", got)
		}
	})
}

// TestSearchSeesCurrentText changes messages behind the store's back, as
// edits and tombstones will: the index follows within the same statement.
func TestSearchSeesCurrentText(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		w := newSearchWorld(t, s)
		m := w.byText["hello World"]
		setText := func(text string) {
			t.Helper()
			if _, err := s.DB().NewUpdate().Table("messages").Set("text = ?", text).Where("id = ?", m.ID).Exec(ctx); err != nil {
				t.Fatalf("update text: %v", err)
			}
		}
		setText("goodbye Moon")
		if got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello world"}); len(got) != 1 || got[0] != "Hello again, worldwide" {
			t.Errorf("old words after an edit: got %q, want only the other message", got)
		}
		if got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "moo"}); !slices.Equal(got, []string{"goodbye Moon"}) {
			t.Errorf("new words after an edit: got %q, want the edited message", got)
		}
		// A tombstone's empty text matches nothing, not even an empty
		// query's nothing.
		setText("")
		for _, q := range []string{"moon", "goodbye", "hello world", "a", ""} {
			for _, got := range w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: q}) {
				if got == "" {
					t.Errorf("search %q after the text was emptied: found the empty message", q)
				}
			}
		}
		// Setting the same text again is no edit at all; the index stays
		// consistent (SQLite's external-content index must not be asked
		// to delete words it does not hold).
		setText("")
		setText("hello World")
		if got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello world"}); len(got) != 2 {
			t.Errorf("text restored: got %q, want 2 messages", got)
		}
		// A removed row leaves the index too.
		if _, err := s.DB().NewDelete().Table("messages").Where("id = ?", m.ID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if got := w.search(t, repo.SearchQuery{UserID: w.a.ID, Text: "hello world"}); !slices.Equal(got, []string{"Hello again, worldwide"}) {
			t.Errorf("after deleting the row: got %q, want only the other message", got)
		}
		if s.Dialect() == repo.DialectSQLite {
			// FTS5's own consistency check of an external-content index
			// against its content table.
			if _, err := s.DB().ExecContext(ctx, "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"); err != nil {
				t.Errorf("fts integrity check: %v", err)
			}
		}
	})
}

func TestSearchPagesNewestFirst(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		w := newSearchWorld(t, s)
		// Messages in G and H interleaved, some sent several to a batch:
		// ids follow seqs within a chat either way.
		chatOf := func(i int) int64 {
			if i%3 == 1 {
				return w.h
			}
			return w.g
		}
		var want []string // newest first
		for _, batch := range [][]int{{0}, {1}, {2, 3}, {4}, {5, 6, 7}, {8}} {
			var reqs []repo.SendRequest
			for _, i := range batch {
				text := fmt.Sprintf("page %d", i)
				want = append([]string{text}, want...)
				reqs = append(reqs, repo.SendRequest{ChatID: chatOf(i), SenderID: w.a.ID, ClientMsgID: fmt.Sprintf("p%d", i), Text: text})
			}
			if _, err := s.InsertMessages(ctx, reqs, repo.InsertOptions{}); err != nil {
				t.Fatal(err)
			}
		}

		// Across chats, paged by id.
		var got []string
		var before *int64
		for pages := 0; ; pages++ {
			msgs, err := s.Search(ctx, repo.SearchQuery{UserID: w.a.ID, Text: "page", Limit: 4, BeforeID: before})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) > 4 {
				t.Fatalf("got a page of %d, want at most 4", len(msgs))
			}
			if len(msgs) == 0 {
				if pages != 3 {
					t.Errorf("got %d pages, want 3", pages)
				}
				break
			}
			for _, m := range msgs {
				got = append(got, m.Text)
			}
			before = ptr(msgs[len(msgs)-1].ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged by id: got %q, want %q", got, want)
		}

		// Within G, paged by seq, and by id: the same pages.
		var wantG []string
		for _, text := range want {
			if n := text[len(text)-1] - '0'; n%3 != 1 {
				wantG = append(wantG, text)
			}
		}
		for _, bySeq := range []bool{true, false} {
			var got []string
			q := repo.SearchQuery{UserID: w.a.ID, Text: "page", Limit: 2, ChatID: &w.g}
			for {
				msgs, err := s.Search(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(msgs) == 0 {
					break
				}
				for i, m := range msgs {
					got = append(got, m.Text)
					if i > 0 && (m.Seq >= msgs[i-1].Seq || m.ID >= msgs[i-1].ID) {
						t.Errorf("G page: seq %d id %d after seq %d id %d, want both smaller", m.Seq, m.ID, msgs[i-1].Seq, msgs[i-1].ID)
					}
				}
				last := msgs[len(msgs)-1]
				if bySeq {
					q.BeforeSeq = ptr(last.Seq)
				} else {
					q.BeforeID = ptr(last.ID)
				}
			}
			if !slices.Equal(got, wantG) {
				t.Errorf("G paged (by seq %v): got %q, want %q", bySeq, got, wantG)
			}
		}
	})
}

func TestSearchLimit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a := mustUser(t, s, "a")
		g := mustGroup(t, s, "G", a.ID)
		reqs := make([]repo.SendRequest, 60)
		for i := range reqs {
			reqs[i] = repo.SendRequest{ChatID: g.ID, SenderID: a.ID, ClientMsgID: fmt.Sprintf("l%d", i), Text: fmt.Sprintf("limit %d", i)}
		}
		if _, err := s.InsertMessages(ctx, reqs, repo.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ limit, want int }{{0, 20}, {-3, 20}, {1, 1}, {50, 50}, {100, 60}} {
			msgs, err := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: "limit", Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != tc.want {
				t.Errorf("limit %d: got %d messages, want %d", tc.limit, len(msgs), tc.want)
			}
			if len(msgs) > 0 && msgs[0].Seq != 60 {
				t.Errorf("limit %d: newest first: got seq %d first, want 60", tc.limit, msgs[0].Seq)
			}
		}
	})
}

// TestSearchDuringConcurrentSends searches while messages are sent: every
// committed message is found, none twice (the index is written in the
// sending transaction, not after it).
func TestSearchDuringConcurrentSends(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a := mustUser(t, s, "a")
		g := mustGroup(t, s, "G", a.ID)
		const n = 40
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := insertOne(ctx, s, g.ID, a.ID, fmt.Sprintf("c%d", i), fmt.Sprintf("concurrent %d", i)); err != nil {
					t.Errorf("send %d: %v", i, err)
				}
			}()
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				// Whatever is committed is findable: a search never sees
				// fewer messages than a count taken before it.
				c, err := s.ChatByID(ctx, g.ID)
				if err != nil {
					t.Error(err)
					return
				}
				msgs, err := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: "concurrent", Limit: 50})
				if err != nil {
					t.Error(err)
					return
				}
				if int64(len(msgs)) < c.LastSeq {
					t.Errorf("search found %d messages, but %d were committed before it", len(msgs), c.LastSeq)
					return
				}
				if c.LastSeq == n {
					return
				}
			}
		}()
		wg.Wait()
		<-done
		msgs, err := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: "concurrent", Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != n {
			t.Errorf("got %d messages, want %d", len(msgs), n)
		}
	})
}

func TestSearchTerms(t *testing.T) {
	for q, want := range map[string][]string{
		"":                    {},
		"  !!! ?? ":           {},
		"Hello, world!":       {"Hello", "world"},
		"прив-мир":            {"прив", "мир"},
		`a&b|c!d(e)f:*"g"`:    {"a", "b", "c", "d", "e", "f", "g"},
		"x@y.com 3.14":        {"x", "y", "com", "3", "14"},
		"приве\u0301т":        {"приве\u0301т"},
		"hello\u0000world":    {"hello", "world"},
		"x \u0301 y":          {"x", "y"},
		"a\ue000b":            {"a\ue000b"},
		"tab\tnew\nline\r\n ": {"tab", "new", "line"},
	} {
		if got := repo.SearchTerms(q); !slices.Equal(got, want) {
			t.Errorf("SearchTerms(%q): got %q, want %q", q, got, want)
		}
	}
}

func TestMinReadSeqs(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		w := newSearchWorld(t, s)
		got, err := s.MinReadSeqs(ctx, []int64{w.g, w.h, 1 << 40})
		if err != nil {
			t.Fatal(err)
		}
		for _, chat := range []int64{w.g, w.h} {
			want, err := s.MinReadSeq(ctx, chat)
			if err != nil {
				t.Fatal(err)
			}
			if got[chat] != want {
				t.Errorf("chat %d: got %d, want %d", chat, got[chat], want)
			}
		}
		if _, ok := got[1<<40]; ok || len(got) != 2 {
			t.Errorf("got %v, want G and H only", got)
		}
	})
}

// TestMigrateMakesOldMessagesSearchable upgrades a database created by the
// first schema (only 00001 applied) that already holds messages: the
// search migration indexes them in place, and later sends are indexed too.
func TestMigrateMakesOldMessagesSearchable(t *testing.T) {
	targets := map[string]func(t *testing.T) (string, string){
		repo.DialectSQLite:   func(t *testing.T) (string, string) { return "", t.TempDir() },
		repo.DialectPostgres: func(t *testing.T) (string, string) { return repotest.NewPostgresURL(t), "" },
	}
	for _, dialect := range []string{repo.DialectSQLite, repo.DialectPostgres} {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			url, dir := targets[dialect](t)
			s := openUnmigrated(t, url, dir)
			migrateFirstOnly(t, s)
			if _, err := s.Search(ctx, repo.SearchQuery{UserID: 1, Text: "old"}); err == nil {
				t.Fatalf("search before the migration: got no error, want a missing index")
			}

			// Rows as the first schema holds them (the current models name
			// columns of later migrations).
			a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
			old := []string{"Старое сообщение", "an old message", "oldies but goldies"}
			for _, q := range []string{
				"INSERT INTO chats (name, type, last_seq) VALUES ('G', 'group', 3)",
				fmt.Sprintf("INSERT INTO groups (id, name, creator_id) VALUES (1, 'G', %d)", a.ID),
				fmt.Sprintf("INSERT INTO chat_members (chat_id, user_id, role, last_read_seq) VALUES (1, %d, 'owner', 3), (1, %d, 'member', 0)", a.ID, b.ID),
			} {
				if _, err := s.DB().ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			for i, text := range old {
				if _, err := s.DB().ExecContext(ctx, "INSERT INTO messages (chat_id, seq, sender_id, text, client_msg_id) VALUES (1, ?, ?, ?, ?)",
					i+1, a.ID, text, fmt.Sprintf("old%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			g := repo.Chat{ID: 1}

			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			for q, want := range map[string][]string{
				"стар":   {"Старое сообщение"},
				"old":    {"oldies but goldies", "an old message"},
				"GOLDIE": {"oldies but goldies"},
			} {
				msgs, err := s.Search(ctx, repo.SearchQuery{UserID: b.ID, Text: q})
				if err != nil {
					t.Fatalf("search %q: %v", q, err)
				}
				var got []string
				for _, m := range msgs {
					got = append(got, m.Text)
				}
				if !slices.Equal(got, want) {
					t.Errorf("search %q after the upgrade: got %q, want %q", q, got, want)
				}
			}
			mustSend(t, s, g.ID, b.ID, "new", "a new message after the upgrade")
			msgs, err := s.Search(ctx, repo.SearchQuery{UserID: a.ID, Text: "message"})
			if err != nil || len(msgs) != 2 || msgs[0].Text != "a new message after the upgrade" {
				t.Errorf("search after a new send: got %+v (%v), want the new message, then the old", msgs, err)
			}
		})
	}
}

// migrateFirstOnly applies migration 00001 alone, as the first release did.
func migrateFirstOnly(t *testing.T, s *repo.Store) {
	t.Helper()
	ctx := context.Background()
	all, err := migrations.ForDialect(s.Dialect())
	if err != nil {
		t.Fatal(err)
	}
	first := fstest.MapFS{}
	err = fs.WalkDir(all, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(path, "00001_") {
			return err
		}
		b, err := fs.ReadFile(all, path)
		first[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil || len(first) != 2 {
		t.Fatalf("got 00001 files %v (%v), want up and down", first, err)
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(first); err != nil {
		t.Fatal(err)
	}
	m := migrate.NewMigrator(s.DB(), ms, migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Migrate(ctx); err != nil {
		t.Fatalf("migrate 00001: %v", err)
	}
}
