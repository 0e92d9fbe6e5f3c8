package repo

import (
	"context"
	"time"

	"github.com/uptrace/bun"
)

// User is a registered account. Email is stored normalized (the caller
// lowercases it); the database only enforces uniqueness.
type User struct {
	bun.BaseModel `bun:"table:users,alias:u"`

	ID           int64     `bun:"id,pk,autoincrement"`
	Name         string    `bun:"name,notnull"`
	Email        string    `bun:"email,notnull"`
	PasswordHash string    `bun:"password_hash,notnull"`
	CreatedAt    time.Time `bun:"created_at,notnull"`
}

// AfterScanRow normalizes CreatedAt to UTC, since drivers return it in the
// session or a fixed zone.
func (u *User) AfterScanRow(context.Context) error {
	u.CreatedAt = u.CreatedAt.UTC()
	return nil
}

// Chat types.
const (
	ChatPrivate = "private"
	ChatGroup   = "group"
)

// Chat is a conversation: a private chat of two users or a group. LastSeq is
// the seq of its newest message, 0 when it has none; LastRev counts every
// change to its timeline (SPEC §11.1).
type Chat struct {
	bun.BaseModel `bun:"table:chats,alias:c"`

	ID        int64     `bun:"id,pk,autoincrement"`
	Name      *string   `bun:"name"`
	Type      string    `bun:"type,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
	LastSeq   int64     `bun:"last_seq,notnull"`
	LastRev   int64     `bun:"last_rev,notnull"`
}

// AfterScanRow normalizes CreatedAt to UTC.
func (c *Chat) AfterScanRow(context.Context) error {
	c.CreatedAt = c.CreatedAt.UTC()
	return nil
}

// Member roles.
const (
	RoleOwner  = "owner"
	RoleMember = "member"
)

// Member is a user's membership of a chat. LastReadSeq is the user's read
// watermark: every message with seq up to it counts as read by the user.
type Member struct {
	bun.BaseModel `bun:"table:chat_members,alias:cm"`

	ChatID      int64     `bun:"chat_id,pk"`
	UserID      int64     `bun:"user_id,pk"`
	Role        string    `bun:"role,notnull"`
	JoinedAt    time.Time `bun:"joined_at,notnull"`
	LastReadSeq int64     `bun:"last_read_seq,notnull"`
	// Name is the member's user name, read by Members and ChatsForUser
	// (chat members carry names so clients need no lookups); never written.
	Name string `bun:"name,scanonly"`
}

// AfterScanRow normalizes JoinedAt to UTC.
func (m *Member) AfterScanRow(context.Context) error {
	m.JoinedAt = m.JoinedAt.UTC()
	return nil
}

// Message is a stored chat message. Seq numbers a chat's messages 1, 2, 3…
// without gaps; Rev is the chat revision of its latest change and
// CreatedRev the one that created it. A deleted message stays as a
// tombstone (empty text, no reactions) so seqs keep no gaps.
type Message struct {
	bun.BaseModel `bun:"table:messages,alias:m"`

	ID          int64      `bun:"id,pk,autoincrement"`
	ChatID      int64      `bun:"chat_id,notnull"`
	Seq         int64      `bun:"seq,notnull"`
	SenderID    int64      `bun:"sender_id,notnull"`
	Text        string     `bun:"text,notnull"`
	ClientMsgID string     `bun:"client_msg_id,notnull"`
	CreatedAt   time.Time  `bun:"created_at,notnull"`
	Rev         int64      `bun:"rev,notnull"`
	CreatedRev  int64      `bun:"created_rev,notnull"`
	EditedAt    *time.Time `bun:"edited_at"`
	Deleted     bool       `bun:"deleted,notnull"`
	ReplyToSeq  *int64     `bun:"reply_to_seq"`
	// Reactions are loaded by the queries that return messages to users,
	// ordered by first use; not a column.
	Reactions []Reaction `bun:"-"`
}

// Reaction is one emoji on a message and who put it there, in the order
// they did.
type Reaction struct {
	Emoji   string
	UserIDs []int64
}

// AfterScanRow normalizes the times to UTC.
func (m *Message) AfterScanRow(context.Context) error {
	m.CreatedAt = m.CreatedAt.UTC()
	if m.EditedAt != nil {
		t := m.EditedAt.UTC()
		m.EditedAt = &t
	}
	return nil
}

// reactionRow is one user's emoji on a message.
type reactionRow struct {
	bun.BaseModel `bun:"table:message_reactions,alias:mr"`

	ChatID   int64  `bun:"chat_id,pk"`
	Seq      int64  `bun:"seq,pk"`
	Emoji    string `bun:"emoji,pk"`
	UserID   int64  `bun:"user_id,pk"`
	AddedRev int64  `bun:"added_rev,notnull"`
}
