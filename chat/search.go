package chat

import (
	"context"
	"strings"
	"unicode/utf8"

	"github.com/windi-chat/windi/repo"
)

// Search limits (SPEC §11.5; the query's length and word count are ours).
const (
	DefaultSearchLimit = 20
	MaxSearchLimit     = 50
	MaxSearchChars     = 200 // characters of q after trimming
	MaxSearchWords     = 16  // words of q (runs of letters, marks and digits)
)

// SearchQuery is a full-text search of the caller's messages.
type SearchQuery struct {
	// Q is the text searched for: every word of it must begin a word of
	// the message, in any case.
	Q string
	// ChatID, when set, narrows the search to one chat of the caller.
	ChatID *int64
	// BeforeSeq pages within ChatID: messages with a smaller seq.
	BeforeSeq *int64
	// BeforeID pages anywhere: messages with a smaller id.
	BeforeID *int64
	// Limit is 1..MaxSearchLimit; 0 means DefaultSearchLimit.
	Limit int
}

// SearchHit is one message found, with the chat it belongs to.
type SearchHit struct {
	ChatID  int64
	Message Message
}

// ValidateSearch checks q without touching storage and returns its text
// trimmed. Errors: CodeInvalid naming the field.
func ValidateSearch(q SearchQuery) (SearchQuery, error) {
	if !utf8.ValidString(q.Q) {
		return q, invalid("q", "q must be valid UTF-8")
	}
	q.Q = strings.TrimSpace(q.Q)
	if n := utf8.RuneCountInString(q.Q); n < 1 || n > MaxSearchChars {
		return q, invalid("q", "q must be 1..%d characters, not only spaces", MaxSearchChars)
	}
	if n := len(repo.SearchTerms(q.Q)); n > MaxSearchWords {
		return q, invalid("q", "q may hold at most %d words", MaxSearchWords)
	}
	switch {
	case q.Limit == 0:
		q.Limit = DefaultSearchLimit
	case q.Limit < 1 || q.Limit > MaxSearchLimit:
		return q, invalid("limit", "limit must be 1..%d", MaxSearchLimit)
	}
	if q.BeforeSeq != nil && q.ChatID == nil {
		return q, invalid("before_seq", "before_seq pages within one chat: give chat_id too, or page with before_id")
	}
	if q.BeforeSeq != nil && *q.BeforeSeq < 1 {
		return q, invalid("before_seq", "before_seq must be >= 1")
	}
	if q.BeforeID != nil && *q.BeforeID < 1 {
		return q, invalid("before_id", "before_id must be >= 1")
	}
	return q, nil
}

// Search finds the messages of userID's chats whose current text holds
// every word of q.Q (as a word or the beginning of one, case-insensitively),
// newest first. Only chats userID is a member of at the time of the search
// are searched; a query made only of punctuation finds nothing. With
// q.ChatID: CodeNotFound for no such chat, CodeForbidden for a chat the
// user is not in. Errors: CodeInvalid, CodeUnavailable.
func (s *Service) Search(ctx context.Context, userID int64, q SearchQuery) ([]SearchHit, error) {
	q, err := ValidateSearch(q)
	if err != nil {
		return nil, err
	}
	if q.ChatID != nil {
		if _, _, err := s.authorize(ctx, userID, *q.ChatID); err != nil {
			return nil, err
		}
	}
	// The store checks membership again inside the query, so a chat left
	// since the check above yields nothing.
	ms, err := s.store.Search(ctx, repo.SearchQuery{
		UserID: userID, Text: q.Q, ChatID: q.ChatID, BeforeSeq: q.BeforeSeq, BeforeID: q.BeforeID, Limit: q.Limit,
	})
	if err != nil {
		return nil, classify(err)
	}
	var chatIDs []int64
	seen := map[int64]bool{}
	for _, m := range ms {
		if !seen[m.ChatID] {
			seen[m.ChatID] = true
			chatIDs = append(chatIDs, m.ChatID)
		}
	}
	low, err := s.store.MinReadSeqs(ctx, chatIDs)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]SearchHit, len(ms))
	for i, m := range ms {
		out[i] = SearchHit{ChatID: m.ChatID, Message: Message{Message: m, Read: m.Seq <= low[m.ChatID]}}
	}
	return out, nil
}
