package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/repo"
)

// Message is a stored message with its derived read flag (SPEC §6.3).
type Message struct {
	repo.Message
	Read bool
}

// API converts m to its wire form.
func (m Message) API() gen.Message {
	out := gen.Message{
		ID: m.ID, ChatID: m.ChatID, Seq: m.Seq, SenderID: m.SenderID, Text: m.Text,
		ClientMsgID: m.ClientMsgID, CreatedAt: m.CreatedAt.UTC(), Read: m.Read,
		Rev: m.Rev, Deleted: m.Deleted, ReplyToSeq: m.ReplyToSeq, Reactions: make([]gen.Reaction, len(m.Reactions)),
	}
	if m.EditedAt != nil {
		t := m.EditedAt.UTC()
		out.EditedAt = &t
	}
	for i, r := range m.Reactions {
		out.Reactions[i] = gen.Reaction{Emoji: r.Emoji, Count: len(r.UserIDs), UserIds: r.UserIDs}
	}
	return out
}

// View is a chat as one of its members sees it.
type View struct {
	Chat        repo.Chat
	Members     []repo.Member
	LastMessage *Message
	Unread      int64
}

// API converts v to its wire form.
func (v View) API() gen.Chat {
	c := gen.Chat{
		ID: v.Chat.ID, Type: gen.ChatType(v.Chat.Type), Name: v.Chat.Name, CreatedAt: v.Chat.CreatedAt.UTC(),
		Members: make([]gen.ChatMember, len(v.Members)), Unread: int(v.Unread),
	}
	lastSeq := v.Chat.LastSeq
	c.LastSeq = &lastSeq
	for i, m := range v.Members {
		c.Members[i] = gen.ChatMember{UserID: m.UserID, Name: m.Name, Role: gen.MemberRole(m.Role), LastReadSeq: m.LastReadSeq}
	}
	if v.LastMessage != nil {
		lm := v.LastMessage.API()
		c.LastMessage = &lm
	}
	return c
}

// minWatermark is the lowest read watermark among members: every message at
// or below it is read by everyone.
func minWatermark(ms []repo.Member) int64 {
	if len(ms) == 0 {
		return 0
	}
	low := ms[0].LastReadSeq
	for _, m := range ms[1:] {
		low = min(low, m.LastReadSeq)
	}
	return low
}

func newView(userID int64, c repo.Chat, members []repo.Member, last *repo.Message) View {
	v := View{Chat: c, Members: members}
	low := minWatermark(members)
	if last != nil {
		v.LastMessage = &Message{Message: *last, Read: last.Seq <= low}
	}
	for _, m := range members {
		if m.UserID == userID {
			v.Unread = max(0, c.LastSeq-m.LastReadSeq)
		}
	}
	return v
}

// authorize loads the chat and checks that userID is a member: CodeNotFound
// for no such chat, CodeForbidden for a non-member.
func (s *Service) authorize(ctx context.Context, userID, chatID int64) (repo.Chat, repo.Member, error) {
	c, err := s.store.ChatByID(ctx, chatID)
	if errors.Is(err, repo.ErrNotFound) {
		return repo.Chat{}, repo.Member{}, errorf(CodeNotFound, "chat %d not found", chatID)
	}
	if err != nil {
		return repo.Chat{}, repo.Member{}, classify(err)
	}
	m, err := s.store.Member(ctx, chatID, userID)
	if errors.Is(err, repo.ErrNotFound) {
		return repo.Chat{}, repo.Member{}, errorf(CodeForbidden, "not a member of chat %d", chatID)
	}
	if err != nil {
		return repo.Chat{}, repo.Member{}, classify(err)
	}
	return c, m, nil
}

// Authorize reports whether userID may use chatID (CodeNotFound,
// CodeForbidden) and returns the chat.
func (s *Service) Authorize(ctx context.Context, userID, chatID int64) (repo.Chat, error) {
	c, _, err := s.authorize(ctx, userID, chatID)
	return c, err
}

func (s *Service) view(ctx context.Context, userID int64, c repo.Chat) (View, error) {
	members, err := s.store.Members(ctx, c.ID)
	if err != nil {
		return View{}, classify(err)
	}
	var last *repo.Message
	if c.LastSeq > 0 {
		m, err := s.store.MessageBySeq(ctx, c.ID, c.LastSeq)
		if err != nil {
			return View{}, classify(err)
		}
		last = &m
	}
	return newView(userID, c, members, last), nil
}

// OpenPrivate returns the private chat of userID and otherID, creating it when
// missing (created reports which). Errors: CodeInvalid (yourself),
// CodeNotFound (no such user).
func (s *Service) OpenPrivate(ctx context.Context, userID, otherID int64) (View, bool, error) {
	if otherID == userID {
		return View{}, false, invalid("user_id", "cannot open a private chat with yourself")
	}
	if _, err := s.store.UserByID(ctx, otherID); err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return View{}, false, errorf(CodeNotFound, "user %d not found", otherID)
		}
		return View{}, false, classify(err)
	}
	c, created, err := s.store.GetOrCreatePrivateChat(ctx, userID, otherID)
	if err != nil {
		return View{}, false, classify(err)
	}
	if created {
		s.log.InfoContext(ctx, "chat created", "event", "chat.created", "chat_id", c.ID, "user_id", userID, "type", "private")
		s.memberAdded(ctx, c.ID, userID)
		s.memberAdded(ctx, c.ID, otherID)
	}
	v, err := s.view(ctx, userID, c)
	return v, created, err
}

// CreateGroup creates a group owned by userID with the given other members.
// The creator's own id in memberIDs is ignored. Errors: CodeInvalid,
// CodeNotFound (an unknown member id).
func (s *Service) CreateGroup(ctx context.Context, userID int64, name string, memberIDs []int64) (View, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameChars {
		return View{}, invalid("name", "name must be 1..%d characters", MaxNameChars)
	}
	if hasNUL(name) {
		return View{}, invalid("name", "name must not contain NUL characters")
	}
	ids := dedupIDs(memberIDs, userID)
	if len(ids)+1 > MaxGroupMembers {
		return View{}, invalid("member_ids", "a group has at most %d members", MaxGroupMembers)
	}
	missing, err := s.store.UsersExist(ctx, ids)
	if err != nil {
		return View{}, classify(err)
	}
	if len(missing) > 0 {
		return View{}, errorf(CodeNotFound, "unknown user ids %v", missing)
	}
	c, err := s.store.CreateGroup(ctx, name, userID, ids)
	if err != nil {
		return View{}, classify(err)
	}
	s.log.InfoContext(ctx, "group created", "event", "group.created", "chat_id", c.ID, "user_id", userID, "members", len(ids)+1)
	s.memberAdded(ctx, c.ID, userID)
	for _, id := range ids {
		s.memberAdded(ctx, c.ID, id)
	}
	return s.view(ctx, userID, c)
}

// ListChats returns the user's chats, newest activity first.
func (s *Service) ListChats(ctx context.Context, userID int64) ([]View, error) {
	sums, err := s.store.ChatsForUser(ctx, userID)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]View, len(sums))
	for i, cs := range sums {
		out[i] = newView(userID, cs.Chat, cs.Members, cs.LastMessage)
	}
	return out, nil
}

// GetChat returns one chat of the user.
func (s *Service) GetChat(ctx context.Context, userID, chatID int64) (View, error) {
	c, _, err := s.authorize(ctx, userID, chatID)
	if err != nil {
		return View{}, err
	}
	return s.view(ctx, userID, c)
}

// HistoryQuery selects a page of history; see repo.HistoryQuery.
type HistoryQuery = repo.HistoryQuery

// History returns a page of the chat's messages, ascending by seq.
func (s *Service) History(ctx context.Context, userID, chatID int64, q HistoryQuery) ([]Message, error) {
	if _, _, err := s.authorize(ctx, userID, chatID); err != nil {
		return nil, err
	}
	if q.Limit <= 0 || q.Limit > 100 {
		q.Limit = 50
	}
	q.Offset = max(0, q.Offset)
	ms, err := s.store.History(ctx, chatID, q)
	if err != nil {
		return nil, classify(err)
	}
	return s.withRead(ctx, chatID, ms)
}

// ChangesAfter returns the current state of the chat's messages changed
// after revision afterRev (only those with seq > minSeq when minSeq > 0),
// ascending by rev, and the chat's last rev as read first; see
// repo.ChangesAfter. The caller has authorized the chat.
func (s *Service) ChangesAfter(ctx context.Context, chatID, afterRev, minSeq int64, limit int) ([]Message, int64, error) {
	ms, head, err := s.store.ChangesAfter(ctx, chatID, afterRev, minSeq, limit)
	if err != nil {
		return nil, 0, classify(err)
	}
	out, err := s.withRead(ctx, chatID, ms)
	return out, head, err
}

// RevAtSeq is the revision a resume after message seq starts from.
func (s *Service) RevAtSeq(ctx context.Context, chatID, seq int64) (int64, error) {
	rev, err := s.store.RevAtSeq(ctx, chatID, seq)
	return rev, classify(err)
}

func (s *Service) withRead(ctx context.Context, chatID int64, ms []repo.Message) ([]Message, error) {
	low, err := s.store.MinReadSeq(ctx, chatID)
	if err != nil {
		return nil, classify(err)
	}
	out := make([]Message, len(ms))
	for i, m := range ms {
		out[i] = Message{Message: m, Read: m.Seq <= low}
	}
	return out, nil
}

// ValidateSend checks a send's fields without touching storage and
// returns the text as stored (trimmed).
func ValidateSend(clientMsgID, text string) (string, error) {
	if n := len(clientMsgID); n < 1 || n > MaxClientMsgID {
		return "", invalid("client_msg_id", "client_msg_id must be 1..%d printable ASCII characters", MaxClientMsgID)
	}
	for i := 0; i < len(clientMsgID); i++ {
		if c := clientMsgID[i]; c < 0x20 || c > 0x7e {
			return "", invalid("client_msg_id", "client_msg_id must be 1..%d printable ASCII characters", MaxClientMsgID)
		}
	}
	return ValidateText(text)
}

// ValidateText checks a message text (of a send or an edit) and returns it
// trimmed.
func ValidateText(text string) (string, error) {
	text = strings.TrimSpace(text)
	if !utf8.ValidString(text) {
		return "", invalid("text", "text must be valid UTF-8")
	}
	if hasNUL(text) {
		return "", invalid("text", "text must not contain NUL characters")
	}
	n := utf8.RuneCountInString(text)
	if n < 1 {
		return "", invalid("text", "text must not be empty")
	}
	if n > MaxTextChars {
		return "", &Error{Code: CodeTooLarge, Field: "text", Message: fmt.Sprintf("text is over %d characters", MaxTextChars)}
	}
	return text, nil
}

// MaxEmojiChars bounds a reaction's emoji (SPEC §11.3).
const MaxEmojiChars = 16

// ValidateEmoji checks a reaction's emoji: 1..16 characters, valid UTF-8,
// no whitespace or control characters.
func ValidateEmoji(emoji string) error {
	n := utf8.RuneCountInString(emoji)
	if !utf8.ValidString(emoji) || n < 1 || n > MaxEmojiChars {
		return invalid("emoji", "emoji must be 1..%d characters", MaxEmojiChars)
	}
	for _, r := range emoji {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return invalid("emoji", "emoji must not contain whitespace or control characters")
		}
	}
	return nil
}

// Send stores a message from userID in chatID and publishes it, or finds
// the original when (chat, sender, client_msg_id) was sent before
// (duplicate=true). It returns once the message is committed and published
// (see sequencer: claim, one transaction per batch, publish in rev order).
// replyTo, when set, names the message answered (in the same chat).
// Errors: CodeInvalid, CodeTooLarge, CodeNotFound, CodeForbidden,
// CodeUnavailable.
func (s *Service) Send(ctx context.Context, userID, chatID int64, clientMsgID, text string, replyTo *int64) (Message, bool, error) {
	o, err := s.wait(ctx, func(done func(Outcome)) error {
		return s.SendAsync(ctx, userID, chatID, clientMsgID, text, replyTo, done)
	})
	return o.Message, o.Duplicate, err
}

// SendAsync is Send for callers that must not wait, such as a WebSocket
// that keeps reading while its sends commit: it validates the send, queues
// it on its chat's sequencer shard (waiting only while the shard's queue
// is full) and returns; done is called exactly once with the outcome, on
// the sequencer's goroutine, after the message is published, so it must
// not block. One caller's operations on one chat are applied in the order
// submitted. An invalid send returns its error and done is not called.
func (s *Service) SendAsync(ctx context.Context, userID, chatID int64, clientMsgID, text string, replyTo *int64, done func(Outcome)) error {
	text, err := ValidateSend(clientMsgID, text)
	if err != nil {
		return err
	}
	if replyTo != nil && *replyTo < 1 {
		return invalid("reply_to_seq", "reply_to_seq must name a message of the chat")
	}
	// Membership is checked inside the transaction that stores the message,
	// under the chat's lock, so no removal slips in between check and insert.
	return s.submit(ctx, repo.Op{Kind: repo.OpSend, ChatID: chatID, UserID: userID, ClientMsgID: clientMsgID, Text: text, ReplyToSeq: replyTo}, done)
}

// Edit replaces the text of message seq of chatID; only its sender may
// (SPEC §11.2). An edit to the same text changes nothing. Errors:
// CodeInvalid, CodeTooLarge, CodeNotFound, CodeForbidden,
// CodeMessageDeleted, CodeUnavailable.
func (s *Service) Edit(ctx context.Context, userID, chatID, seq int64, text string) (Message, error) {
	o, err := s.wait(ctx, func(done func(Outcome)) error { return s.EditAsync(ctx, userID, chatID, seq, text, done) })
	return o.Message, err
}

// EditAsync is Edit for callers that must not wait (see SendAsync).
func (s *Service) EditAsync(ctx context.Context, userID, chatID, seq int64, text string, done func(Outcome)) error {
	text, err := ValidateText(text)
	if err != nil {
		return err
	}
	return s.submit(ctx, repo.Op{Kind: repo.OpEdit, ChatID: chatID, UserID: userID, Seq: seq, Text: text}, done)
}

// Delete tombstones message seq of chatID: its text becomes empty, its
// reactions go, its seq stays. Its sender or the group's owner may;
// deleting it again changes nothing. Errors: CodeNotFound, CodeForbidden,
// CodeUnavailable.
func (s *Service) Delete(ctx context.Context, userID, chatID, seq int64) (Message, error) {
	o, err := s.wait(ctx, func(done func(Outcome)) error { return s.DeleteAsync(ctx, userID, chatID, seq, done) })
	return o.Message, err
}

// DeleteAsync is Delete for callers that must not wait (see SendAsync).
func (s *Service) DeleteAsync(ctx context.Context, userID, chatID, seq int64, done func(Outcome)) error {
	return s.submit(ctx, repo.Op{Kind: repo.OpDelete, ChatID: chatID, UserID: userID, Seq: seq}, done)
}

// React adds (add=true) or removes userID's emoji on message seq of chatID
// (SPEC §11.3); adding twice or removing an absent one changes nothing.
// Errors: CodeInvalid, CodeNotFound, CodeForbidden, CodeMessageDeleted,
// CodeTooManyReactions, CodeUnavailable.
func (s *Service) React(ctx context.Context, userID, chatID, seq int64, emoji string, add bool) (Message, error) {
	o, err := s.wait(ctx, func(done func(Outcome)) error { return s.ReactAsync(ctx, userID, chatID, seq, emoji, add, done) })
	return o.Message, err
}

// ReactAsync is React for callers that must not wait (see SendAsync).
func (s *Service) ReactAsync(ctx context.Context, userID, chatID, seq int64, emoji string, add bool, done func(Outcome)) error {
	if err := ValidateEmoji(emoji); err != nil {
		return err
	}
	kind := repo.OpReactRemove
	if add {
		kind = repo.OpReactAdd
	}
	return s.submit(ctx, repo.Op{Kind: kind, ChatID: chatID, UserID: userID, Seq: seq, Emoji: emoji}, done)
}

// submit queues one operation on its chat's sequencer shard.
func (s *Service) submit(ctx context.Context, op repo.Op, done func(Outcome)) error {
	if err := s.seq.submit(&pending{ctx: ctx, op: op, done: done}); err != nil {
		return classify(err)
	}
	return nil
}

// wait runs an asynchronous operation and waits for its outcome.
func (s *Service) wait(ctx context.Context, start func(done func(Outcome)) error) (Outcome, error) {
	reply := make(chan Outcome, 1)
	if err := start(func(o Outcome) { reply <- o }); err != nil {
		return Outcome{}, err
	}
	select {
	case o := <-reply:
		return o, o.Err
	case <-ctx.Done():
		// The operation may still be applied; a retry of a send with the
		// same client_msg_id finds it.
		return Outcome{}, classify(ctx.Err())
	}
}

// MarkRead moves userID's watermark in chatID forward to seq (capped at the
// chat's last seq). It returns the watermark after the call.
func (s *Service) MarkRead(ctx context.Context, userID, chatID, seq int64) (int64, error) {
	if seq < 0 {
		return 0, invalid("seq", "seq must be >= 0")
	}
	if _, _, err := s.authorize(ctx, userID, chatID); err != nil {
		return 0, err
	}
	r, err := s.store.MarkRead(ctx, chatID, userID, seq)
	if err != nil {
		return 0, classify(err)
	}
	if r.Moved {
		var chatRead *int64
		if r.MinAfter > r.MinBefore {
			low := r.MinAfter
			chatRead = &low
		}
		s.readMoved(ctx, chatID, userID, r.Seq, chatRead)
	}
	return r.Seq, nil
}

// group loads a group for a membership change by actorID: CodeNotFound,
// CodeForbidden (not a member), CodeNotAGroup. It returns the actor's role.
func (s *Service) group(ctx context.Context, actorID, groupID, targetID int64) (string, error) {
	c, m, err := s.authorize(ctx, actorID, groupID)
	if err != nil {
		return "", err
	}
	if c.Type != "group" {
		return "", errorf(CodeNotAGroup, "chat %d is not a group", groupID)
	}
	if _, err := s.store.UserByID(ctx, targetID); err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return "", errorf(CodeNotFound, "user %d not found", targetID)
		}
		return "", classify(err)
	}
	return m.Role, nil
}

// AddMember adds targetID to the group; only the owner may. Adding a member
// again changes nothing (changed=false). Errors: CodeNotFound, CodeForbidden,
// CodeNotAGroup, CodeGroupFull.
func (s *Service) AddMember(ctx context.Context, actorID, groupID, targetID int64) (bool, error) {
	role, err := s.group(ctx, actorID, groupID, targetID)
	if err != nil {
		return false, err
	}
	if role != "owner" {
		return false, errorf(CodeForbidden, "only the owner adds members")
	}
	if _, err := s.store.Member(ctx, groupID, targetID); err == nil {
		return false, nil
	}
	n, err := s.store.MemberCount(ctx, groupID)
	if err != nil {
		return false, classify(err)
	}
	if n >= MaxGroupMembers {
		return false, errorf(CodeGroupFull, "a group has at most %d members", MaxGroupMembers)
	}
	added, err := s.store.AddMember(ctx, groupID, targetID)
	if err != nil {
		return false, classify(err)
	}
	if added {
		s.log.InfoContext(ctx, "member added", "event", "member.added", "chat_id", groupID, "user_id", targetID, "by", actorID)
		s.memberAdded(ctx, groupID, targetID)
	}
	return added, nil
}

// RemoveMember removes targetID from the group. The owner removes anyone but
// itself; a member removes only itself. Removing a non-member changes nothing
// (changed=false). Errors: CodeNotFound, CodeForbidden, CodeNotAGroup,
// CodeOwnerNotRemovable.
func (s *Service) RemoveMember(ctx context.Context, actorID, groupID, targetID int64) (bool, error) {
	role, err := s.group(ctx, actorID, groupID, targetID)
	if err != nil {
		return false, err
	}
	if actorID != targetID && role != "owner" {
		return false, errorf(CodeForbidden, "a member may remove only itself")
	}
	target, err := s.store.Member(ctx, groupID, targetID)
	if errors.Is(err, repo.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, classify(err)
	}
	if target.Role == "owner" {
		return false, errorf(CodeOwnerNotRemovable, "the owner cannot be removed")
	}
	removed, err := s.store.RemoveMember(ctx, groupID, targetID)
	if err != nil {
		return false, classify(err)
	}
	if removed {
		s.log.InfoContext(ctx, "member removed", "event", "member.removed", "chat_id", groupID, "user_id", targetID, "by", actorID)
		s.memberRemoved(ctx, groupID, targetID)
	}
	return removed, nil
}

// Presence returns the chat's members that are online now, ascending.
func (s *Service) Presence(ctx context.Context, userID, chatID int64) ([]int64, error) {
	if _, _, err := s.authorize(ctx, userID, chatID); err != nil {
		return nil, err
	}
	members, err := s.store.Members(ctx, chatID)
	if err != nil {
		return nil, classify(err)
	}
	ids := make([]int64, len(members))
	for i, m := range members {
		ids[i] = m.UserID
	}
	online, err := s.broker.Online(ctx, ids)
	if err != nil {
		return nil, classify(err)
	}
	if online == nil {
		online = []int64{} // an empty list, never null
	}
	slices.Sort(online)
	return online, nil
}
