package repo

import (
	"context"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/uptrace/bun"
)

// SearchQuery selects a page of full-text search results for one user.
type SearchQuery struct {
	// UserID is the searching user: only chats it is a member of are
	// searched.
	UserID int64
	// Text is what the user typed. Each of its words must appear in a
	// message, as a word or as the prefix of one, in any case.
	Text string
	// ChatID, when set, narrows the search to that chat; results are then
	// ordered by seq, newest first, and BeforeSeq may page them.
	ChatID *int64
	// BeforeSeq, when set, keeps messages with a smaller seq.
	BeforeSeq *int64
	// BeforeID, when set, keeps messages with a smaller id.
	BeforeID *int64
	// Limit is the page size; below one means defaultMessageSearchLimit.
	Limit int
}

// defaultMessageSearchLimit applies when Search gets a limit below one.
const defaultMessageSearchLimit = 20

// SearchTerms splits text into the words a search looks for, as SQLite's
// unicode61 tokenizer splits message text: the runs of letters, numbers,
// combining marks and private-use characters. Everything else, punctuation
// and query operators included, only separates words, and a run without a
// letter or a number (a stray combining mark) is no word. A text without
// any word matches nothing.
func SearchTerms(text string) []string {
	fields := strings.FieldsFunc(text, func(r rune) bool {
		return !unicode.In(r, unicode.L, unicode.N, unicode.M, unicode.Co)
	})
	terms := fields[:0]
	for _, f := range fields {
		if strings.IndexFunc(f, func(r rune) bool { return unicode.In(r, unicode.L, unicode.N, unicode.Co) }) >= 0 {
			terms = append(terms, f)
		}
	}
	return terms
}

// Search returns the messages matching q.Text in the chats q.UserID is a
// member of now, newest first: by seq within one chat (q.ChatID), by id
// across chats. Within a chat ids grow with seq, since a chat's messages
// are written one transaction at a time under its lock, in seq order, so
// both orders agree and BeforeID pages either. Membership is part of the
// query itself, so a chat the user has left yields nothing even while a
// caller's earlier check still thought otherwise. A text without words
// (SearchTerms) matches nothing.
//
// Postgres matches the generated tsvector column messages.text_tsv (GIN
// index) against a prefix query built from the words Postgres's own parser
// finds in the text, so query and messages are split alike. SQLite matches
// the FTS5 table messages_fts with one quoted prefix term per word.
func (s *Store) Search(ctx context.Context, q SearchQuery) ([]Message, error) {
	terms := SearchTerms(q.Text)
	msgs := []Message{}
	if len(terms) == 0 {
		return msgs, nil
	}
	limit := q.Limit
	if limit < 1 {
		limit = defaultMessageSearchLimit
	}
	sel := s.db.NewSelect().Model(&msgs).
		Join("JOIN chat_members AS cm ON cm.chat_id = m.chat_id AND cm.user_id = ?", q.UserID).
		// A tombstone's text is empty (SPEC §11.2) and holds no word, so it
		// never matches; both conditions state it for every way of matching.
		Where("m.text <> '' AND NOT m.deleted").
		Limit(int64(limit))
	switch s.dialect {
	case DialectPostgres:
		sel = sel.Where("m.text_tsv @@ ("+pgPrefixQuery+")", `\`, `\\`, plainText(q.Text))
	default:
		sel = sel.Join("JOIN messages_fts ON messages_fts.rowid = m.id").
			Where("messages_fts MATCH ?", ftsPrefixQuery(terms))
	}
	if q.ChatID != nil {
		sel = sel.Where("m.chat_id = ?", *q.ChatID).OrderExpr("m.seq DESC")
	} else {
		sel = sel.OrderExpr("m.id DESC")
	}
	if q.BeforeSeq != nil {
		sel = sel.Where("m.seq < ?", *q.BeforeSeq)
	}
	if q.BeforeID != nil {
		sel = sel.Where("m.id < ?", *q.BeforeID)
	}
	err := sel.Scan(ctx)
	if err == nil {
		err = s.withReactions(ctx, msgs)
	}
	if err != nil {
		return nil, wrap("search", err)
	}
	return msgs, nil
}

// pgPrefixQuery turns the text (its third argument) into a tsquery that
// ANDs every lexeme of to_tsvector('simple', text) as a prefix: "Прив
// мир!" becomes 'прив':* & 'мир':*. Taking the lexemes from to_tsvector
// means the query is split and lowercased exactly as the messages are, and
// whatever the text holds (quotes, operators, backslashes) ends up inside
// quoted lexemes rather than as tsquery syntax: backslashes (the first two
// arguments, passed as values so that no layer reinterprets them) and
// quotes are escaped as tsquery's input syntax wants. No lexeme gives NULL,
// which matches nothing.
const pgPrefixQuery = "SELECT string_agg('''' || replace(replace(lexeme, ?, ?), '''', '''''') || ''':*', ' & ')::tsquery" +
	" FROM unnest(to_tsvector('simple', ?::text))"

// plainText replaces control characters (NUL among them, which Postgres
// text cannot hold) and bytes that are not UTF-8 with spaces: they separate
// words anyway, and the query must not fail on them.
func plainText(text string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, text)
}

// ftsPrefixQuery renders terms as an FTS5 query: each term a string in
// double quotes (doubled inside, though SearchTerms leaves none) with the
// prefix star, separated by spaces, which FTS5 reads as AND. Quoting is
// what keeps words such as AND, OR, NOT and NEAR from being operators.
func ftsPrefixQuery(terms []string) string {
	var b strings.Builder
	for i, t := range terms {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(t, `"`, `""`))
		b.WriteString(`"*`)
	}
	return b.String()
}

// MinReadSeqs returns the lowest watermark among the members of each of
// chatIDs, by chat id; a chat without members is missing.
func (s *Store) MinReadSeqs(ctx context.Context, chatIDs []int64) (map[int64]int64, error) {
	out := make(map[int64]int64, len(chatIDs))
	if len(chatIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		ChatID int64 `bun:"chat_id"`
		Low    int64 `bun:"low"`
	}
	err := s.db.NewSelect().Model((*Member)(nil)).
		ColumnExpr("cm.chat_id AS chat_id, MIN(cm.last_read_seq) AS low").
		Where("cm.chat_id IN (?)", bun.List(chatIDs)).GroupExpr("cm.chat_id").Scan(ctx, &rows)
	if err != nil {
		return nil, wrap("min read seqs", err)
	}
	for _, r := range rows {
		out[r.ChatID] = r.Low
	}
	return out, nil
}
