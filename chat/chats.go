package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
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
	return gen.Message{
		ID: m.ID, ChatID: m.ChatID, Seq: m.Seq, SenderID: m.SenderID, Text: m.Text,
		ClientMsgID: m.ClientMsgID, CreatedAt: m.CreatedAt.UTC(), Read: m.Read,
	}
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
		c.Members[i] = gen.ChatMember{UserID: m.UserID, Role: gen.MemberRole(m.Role), LastReadSeq: m.LastReadSeq}
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
		s.events.MemberAdded(ctx, c.ID, userID)
		s.events.MemberAdded(ctx, c.ID, otherID)
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
	s.events.MemberAdded(ctx, c.ID, userID)
	for _, id := range ids {
		s.events.MemberAdded(ctx, c.ID, id)
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

// MessagesAfter returns up to limit messages with seq > after, for replay and
// gap filling. The caller has authorized the chat.
func (s *Service) MessagesAfter(ctx context.Context, chatID, after int64, limit int) ([]Message, error) {
	ms, err := s.store.MessagesAfter(ctx, chatID, after, limit)
	if err != nil {
		return nil, classify(err)
	}
	return s.withRead(ctx, chatID, ms)
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

// ValidateSend checks a send's fields without touching storage.
func ValidateSend(clientMsgID, text string) (string, error) {
	if n := len(clientMsgID); n < 1 || n > MaxClientMsgID {
		return "", invalid("client_msg_id", "client_msg_id must be 1..%d printable ASCII characters", MaxClientMsgID)
	}
	for i := 0; i < len(clientMsgID); i++ {
		if c := clientMsgID[i]; c < 0x20 || c > 0x7e {
			return "", invalid("client_msg_id", "client_msg_id must be 1..%d printable ASCII characters", MaxClientMsgID)
		}
	}
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

// Send stores a message from userID in chatID, or finds the original when
// (chat, sender, client_msg_id) was sent before (duplicate=true). The message
// is committed before Send returns and before any event goes out. Errors:
// CodeInvalid, CodeTooLarge, CodeNotFound, CodeForbidden, CodeUnavailable.
func (s *Service) Send(ctx context.Context, userID, chatID int64, clientMsgID, text string) (Message, bool, error) {
	text, err := ValidateSend(clientMsgID, text)
	if err != nil {
		return Message{}, false, err
	}
	// Membership is checked inside the transaction that stores the message
	// (under the chat's lock), which saves two queries a send and lets no
	// removal slip in between check and insert.
	if s.dedup != nil {
		key := fmt.Sprintf("dedup:%d:%d:%s", chatID, userID, clientMsgID)
		fresh, err := s.dedup.Claim(ctx, key)
		if err != nil {
			s.metrics.BrokerError("claim")
			s.log.WarnContext(ctx, "dedup guard failed; relying on the database key", "event", "dedup.error", "chat_id", chatID, "err", err)
		}
		if err == nil && !fresh {
			// A repeat: when the original has committed, answer with it and skip
			// the write path. Otherwise it is still in flight or failed, and the
			// insert below settles it through the unique key.
			if orig, err := s.store.MessageByClientID(ctx, chatID, userID, clientMsgID); err == nil {
				return s.duplicate(ctx, userID, orig)
			}
		}
	}
	var res repo.SendResult
	if s.committer != nil {
		res, err = s.committer.Insert(ctx, repo.SendRequest{ChatID: chatID, SenderID: userID, ClientMsgID: clientMsgID, Text: text})
	} else {
		res, err = s.store.InsertMessage(ctx, chatID, userID, clientMsgID, text)
	}
	switch {
	case errors.Is(err, repo.ErrNotMember):
		return Message{}, false, errorf(CodeForbidden, "not a member of chat %d", chatID)
	case errors.Is(err, repo.ErrNotFound):
		return Message{}, false, errorf(CodeNotFound, "chat %d not found", chatID)
	case err != nil:
		return Message{}, false, classify(err)
	}
	if res.Duplicate {
		return s.duplicate(ctx, userID, res.Message)
	}
	// The send raised the sender's own watermark; the message is read when
	// every other member's has reached it too, which for a new message means
	// only in a chat with no one else.
	m := Message{Message: res.Message, Read: res.MinAfter >= res.Message.Seq}
	s.log.InfoContext(ctx, "message stored", "event", "message.stored", "chat_id", chatID, "user_id", userID, "message_id", m.ID, "seq", m.Seq)
	s.metrics.MessageStored()
	if s.committer == nil {
		s.published([]repo.SendResult{res}) // with group commit the committer already did, in order
	}
	return m, false, nil
}

// duplicate answers a repeated send with the original message (both the
// fast guard and the database key end here).
func (s *Service) duplicate(ctx context.Context, userID int64, orig repo.Message) (Message, bool, error) {
	s.log.InfoContext(ctx, "duplicate dropped", "event", "message.duplicate", "chat_id", orig.ChatID, "user_id", userID, "message_id", orig.ID)
	s.metrics.Duplicate()
	out, err := s.withRead(ctx, orig.ChatID, []repo.Message{orig})
	if err != nil {
		return Message{}, false, err
	}
	return out[0], true, nil
}

// published announces committed messages: message.new for each, and
// chat.read where a send raised the chat's lowest watermark (the message
// itself implies the sender's own, so no message.read goes out).
func (s *Service) published(res []repo.SendResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range res {
		s.events.MessageStored(ctx, Message{Message: r.Message, Read: r.MinAfter >= r.Message.Seq})
		if r.MinAfter > r.MinBefore {
			low := r.MinAfter
			s.events.ReadMoved(ctx, r.Message.ChatID, 0, 0, &low)
		}
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
		s.events.ReadMoved(ctx, chatID, userID, r.Seq, chatRead)
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
		s.events.MemberAdded(ctx, groupID, targetID)
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
		s.events.MemberRemoved(ctx, groupID, targetID)
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
	if s.presence == nil {
		return []int64{}, nil
	}
	ids := make([]int64, len(members))
	for i, m := range members {
		ids[i] = m.UserID
	}
	online, err := s.presence.Online(ctx, ids)
	if err != nil {
		return nil, classify(err)
	}
	if online == nil {
		online = []int64{} // an empty list, never null
	}
	slices.Sort(online)
	return online, nil
}
