package repo

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"
)

// errRollback makes RunInTx roll back a transaction whose outcome is not an
// error for the caller (a lost race, a duplicate); it never leaves the
// package.
var errRollback = errors.New("rollback")

// privateKey names the private chat of a pair independently of the order of
// the pair, so the unique column holds one row per pair.
func privateKey(a, b int64) string {
	return fmt.Sprintf("%d:%d", min(a, b), max(a, b))
}

// GetOrCreatePrivateChat returns the private chat of users a and b, creating
// it with both as members when it does not exist yet; created reports
// whether this call created it. The caller checks that a != b and both
// users exist (a missing user gives ErrNotFound). Concurrent calls for the
// same pair, in either order, return the same chat and exactly one of them
// reports created.
func (s *Store) GetOrCreatePrivateChat(ctx context.Context, a, b int64) (chat Chat, created bool, err error) {
	if a == b {
		return Chat{}, false, fmt.Errorf("repo: private chat needs two distinct users, got %d twice", a)
	}
	key := privateKey(a, b)
	chat, err = s.privateChatByKey(ctx, key)
	if err == nil {
		return chat, false, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return Chat{}, false, err
	}

	err = s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		c := Chat{Type: ChatPrivate, CreatedAt: now()}
		// A concurrent creator of the same pair makes this insert wait
		// (Postgres) or already see its row (SQLite, serialized writers);
		// either way the loser gets no row back and reads the winner's.
		err := tx.NewRaw(
			"INSERT INTO chats (type, created_at, last_seq, private_key) VALUES (?, ?, 0, ?) "+
				"ON CONFLICT (private_key) DO NOTHING RETURNING id",
			c.Type, c.CreatedAt, key,
		).Scan(ctx, &c.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return errRollback
		}
		if err != nil {
			return err
		}
		members := []Member{
			{ChatID: c.ID, UserID: min(a, b), Role: RoleMember, JoinedAt: c.CreatedAt},
			{ChatID: c.ID, UserID: max(a, b), Role: RoleMember, JoinedAt: c.CreatedAt},
		}
		if _, err := tx.NewInsert().Model(&members).Exec(ctx); err != nil {
			return err
		}
		chat = c
		return nil
	})
	switch {
	case err == nil:
		return chat, true, nil
	case errors.Is(err, errRollback):
		chat, err = s.privateChatByKey(ctx, key)
		if err != nil {
			return Chat{}, false, err
		}
		return chat, false, nil
	default:
		return Chat{}, false, wrap("create private chat", err)
	}
}

// privateChatByKey returns the private chat with the key, or ErrNotFound.
func (s *Store) privateChatByKey(ctx context.Context, key string) (Chat, error) {
	var c Chat
	if err := s.db.NewSelect().Model(&c).Where("c.private_key = ?", key).Scan(ctx); err != nil {
		return Chat{}, wrap("private chat by key", err)
	}
	return c, nil
}

// CreateGroup creates a group chat named name, owned by creatorID, with each
// distinct id of memberIDs other than the creator as a member, all in one
// transaction. A missing user gives ErrNotFound and creates nothing.
func (s *Store) CreateGroup(ctx context.Context, name string, creatorID int64, memberIDs []int64) (Chat, error) {
	c := Chat{Name: &name, Type: ChatGroup, CreatedAt: now()}
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(&c).Returning("id").Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewRaw("INSERT INTO groups (id, name, creator_id) VALUES (?, ?, ?)", c.ID, name, creatorID).Exec(ctx)
		if err != nil {
			return err
		}
		others := uniqueIDs(memberIDs, creatorID)
		members := make([]Member, 0, 1+len(others))
		members = append(members, Member{ChatID: c.ID, UserID: creatorID, Role: RoleOwner, JoinedAt: c.CreatedAt})
		for _, id := range others {
			members = append(members, Member{ChatID: c.ID, UserID: id, Role: RoleMember, JoinedAt: c.CreatedAt})
		}
		_, err = tx.NewInsert().Model(&members).Exec(ctx)
		return err
	})
	if err != nil {
		return Chat{}, wrap("create group", err)
	}
	return c, nil
}

// ChatByID returns the chat with the id, or ErrNotFound.
func (s *Store) ChatByID(ctx context.Context, id int64) (Chat, error) {
	var c Chat
	if err := s.db.NewSelect().Model(&c).Where("c.id = ?", id).Scan(ctx); err != nil {
		return Chat{}, wrap("chat by id", err)
	}
	return c, nil
}

// GroupCreator returns the id of the user who created the group chatID, or
// ErrNotFound when chatID is not a group.
func (s *Store) GroupCreator(ctx context.Context, chatID int64) (int64, error) {
	var id int64
	err := s.db.NewSelect().Table("groups").Column("creator_id").Where("id = ?", chatID).Scan(ctx, &id)
	if err != nil {
		return 0, wrap("group creator", err)
	}
	return id, nil
}

// Member returns userID's membership of chatID, or ErrNotFound when the
// user is not a member.
func (s *Store) Member(ctx context.Context, chatID, userID int64) (Member, error) {
	var m Member
	err := s.db.NewSelect().Model(&m).
		Where("cm.chat_id = ? AND cm.user_id = ?", chatID, userID).Scan(ctx)
	if err != nil {
		return Member{}, wrap("member", err)
	}
	return m, nil
}

// Members returns the members of chatID ordered by joined_at, then user id;
// an unknown chat has none.
func (s *Store) Members(ctx context.Context, chatID int64) ([]Member, error) {
	members := []Member{}
	err := s.db.NewSelect().Model(&members).ColumnExpr("cm.*").ColumnExpr("u.name AS name").
		Join("JOIN users AS u ON u.id = cm.user_id").Where("cm.chat_id = ?", chatID).
		OrderExpr("cm.joined_at ASC, cm.user_id ASC").Scan(ctx)
	if err != nil {
		return nil, wrap("members", err)
	}
	return members, nil
}

// MemberCount returns how many members chatID has.
func (s *Store) MemberCount(ctx context.Context, chatID int64) (int, error) {
	n, err := s.db.NewSelect().Model((*Member)(nil)).Where("cm.chat_id = ?", chatID).Count(ctx)
	if err != nil {
		return 0, wrap("member count", err)
	}
	return int(n), nil
}

// MemberChatIDs returns the ids of the chats userID belongs to, ascending.
func (s *Store) MemberChatIDs(ctx context.Context, userID int64) ([]int64, error) {
	ids := []int64{}
	err := s.db.NewSelect().Model((*Member)(nil)).Column("cm.chat_id").
		Where("cm.user_id = ?", userID).OrderExpr("cm.chat_id ASC").Scan(ctx, &ids)
	if err != nil {
		return nil, wrap("member chat ids", err)
	}
	return ids, nil
}

// AddMember makes userID a member of chatID with role member and watermark
// 0; added is false, without error, when the user already is a member. A
// missing chat or user gives ErrNotFound.
func (s *Store) AddMember(ctx context.Context, chatID, userID int64) (added bool, err error) {
	m := Member{ChatID: chatID, UserID: userID, Role: RoleMember, JoinedAt: now()}
	res, err := s.db.NewInsert().Model(&m).On("CONFLICT (chat_id, user_id) DO NOTHING").Exec(ctx)
	if err != nil {
		return false, wrap("add member", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, wrap("add member", err)
	}
	return n == 1, nil
}

// RemoveMember removes userID from chatID; removed is false, without error,
// when the user was not a member.
func (s *Store) RemoveMember(ctx context.Context, chatID, userID int64) (removed bool, err error) {
	// Under the chat's lock, like sends: a send of the removed member either
	// committed before the removal or finds it no longer a member.
	err = s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := s.lockChat(ctx, tx, chatID); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		}
		res, err := tx.NewDelete().Model((*Member)(nil)).
			Where("chat_id = ? AND user_id = ?", chatID, userID).Exec(ctx)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		removed = n == 1
		return err
	})
	if err != nil {
		return false, wrap("remove member", err)
	}
	return removed, nil
}

// ChatSummary is one entry of a user's chat list.
type ChatSummary struct {
	Chat Chat
	// Members are ordered as Members orders them.
	Members []Member
	// LastMessage is nil when the chat has no messages.
	LastMessage *Message
	// MyLastReadSeq is the listing user's watermark in the chat.
	MyLastReadSeq int64
}

// lastActivity is when something last happened in the chat: its newest
// message, or its creation.
func (c ChatSummary) lastActivity() time.Time {
	if c.LastMessage != nil {
		return c.LastMessage.CreatedAt
	}
	return c.Chat.CreatedAt
}

// ChatsForUser lists the chats userID belongs to, with their members and
// last message, most recent activity first (ties by chat id, newest first).
// It runs a fixed number of queries however many chats there are.
func (s *Store) ChatsForUser(ctx context.Context, userID int64) ([]ChatSummary, error) {
	var mine []Member
	if err := s.db.NewSelect().Model(&mine).Where("cm.user_id = ?", userID).Scan(ctx); err != nil {
		return nil, wrap("chats for user: memberships", err)
	}
	if len(mine) == 0 {
		return []ChatSummary{}, nil
	}
	ids := make([]int64, len(mine))
	for i, m := range mine {
		ids[i] = m.ChatID
	}

	var chats []Chat
	if err := s.db.NewSelect().Model(&chats).Where("c.id IN (?)", bun.List(ids)).Scan(ctx); err != nil {
		return nil, wrap("chats for user: chats", err)
	}
	var members []Member
	err := s.db.NewSelect().Model(&members).ColumnExpr("cm.*").ColumnExpr("u.name AS name").
		Join("JOIN users AS u ON u.id = cm.user_id").Where("cm.chat_id IN (?)", bun.List(ids)).
		OrderExpr("cm.chat_id ASC, cm.joined_at ASC, cm.user_id ASC").Scan(ctx)
	if err != nil {
		return nil, wrap("chats for user: members", err)
	}
	var last []Message
	err = s.db.NewSelect().Model(&last).
		Join("JOIN chats AS c ON c.id = m.chat_id AND c.last_seq = m.seq").
		Where("m.chat_id IN (?)", bun.List(ids)).Scan(ctx)
	if err == nil {
		err = s.withReactions(ctx, last)
	}
	if err != nil {
		return nil, wrap("chats for user: last messages", err)
	}

	byChat := make(map[int64]*ChatSummary, len(chats))
	out := make([]ChatSummary, len(chats))
	for i, c := range chats {
		out[i] = ChatSummary{Chat: c, Members: []Member{}}
		byChat[c.ID] = &out[i]
	}
	for _, m := range mine {
		if cs := byChat[m.ChatID]; cs != nil {
			cs.MyLastReadSeq = m.LastReadSeq
		}
	}
	for _, m := range members {
		if cs := byChat[m.ChatID]; cs != nil {
			cs.Members = append(cs.Members, m)
		}
	}
	for i := range last {
		if cs := byChat[last[i].ChatID]; cs != nil {
			cs.LastMessage = &last[i]
		}
	}
	slices.SortFunc(out, func(x, y ChatSummary) int {
		if c := y.lastActivity().Compare(x.lastActivity()); c != 0 {
			return c
		}
		return cmp.Compare(y.Chat.ID, x.Chat.ID)
	})
	return out, nil
}

// ReadResult is the outcome of MarkRead.
type ReadResult struct {
	// Seq is the reader's watermark after the call.
	Seq int64
	// Moved reports whether the call raised the watermark.
	Moved bool
	// MinBefore and MinAfter are the lowest watermark among the chat's
	// current members before and after the call; a chat.read event is due
	// when MinAfter > MinBefore.
	MinBefore, MinAfter int64
}

// MarkRead raises userID's watermark in chatID to seq, capped at the chat's
// last_seq; a lower or equal seq changes nothing. It returns ErrNotFound
// when the user is not a member. The chat row is locked for the duration,
// so concurrent reads and sends to one chat see consistent minimums.
func (s *Store) MarkRead(ctx context.Context, chatID, userID, seq int64) (ReadResult, error) {
	var r ReadResult
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		lastSeq, err := s.lockChat(ctx, tx, chatID)
		if err != nil {
			return err
		}
		var current int64
		err = tx.NewSelect().Model((*Member)(nil)).Column("cm.last_read_seq").
			Where("cm.chat_id = ? AND cm.user_id = ?", chatID, userID).Scan(ctx, &current)
		if err != nil {
			return err
		}
		if r.MinBefore, err = minReadSeq(ctx, tx, chatID); err != nil {
			return err
		}
		r.Seq, r.MinAfter = current, r.MinBefore
		target := min(seq, lastSeq)
		if target <= current {
			return nil
		}
		_, err = tx.NewUpdate().Model((*Member)(nil)).Set("last_read_seq = ?", target).
			Where("chat_id = ? AND user_id = ?", chatID, userID).Exec(ctx)
		if err != nil {
			return err
		}
		r.Seq, r.Moved = target, true
		r.MinAfter, err = minReadSeq(ctx, tx, chatID)
		return err
	})
	if err != nil {
		return ReadResult{}, wrap("mark read", err)
	}
	return r, nil
}

// lockChat locks the chat row until the transaction ends and returns its
// last_seq, or sql.ErrNoRows when the chat does not exist. On SQLite the
// IMMEDIATE transaction already holds the database write lock.
func (s *Store) lockChat(ctx context.Context, tx bun.Tx, chatID int64) (int64, error) {
	q := tx.NewSelect().Model((*Chat)(nil)).Column("c.last_seq").Where("c.id = ?", chatID)
	if s.dialect == DialectPostgres {
		// NO KEY UPDATE conflicts with InsertMessages' lock and UPDATE of last_seq but
		// not with the KEY SHARE locks that foreign keys take.
		q = q.For("NO KEY UPDATE")
	}
	var lastSeq int64
	if err := q.Scan(ctx, &lastSeq); err != nil {
		return 0, err
	}
	return lastSeq, nil
}

// MinReadSeq returns the lowest watermark among chatID's members, 0 when it
// has none.
func (s *Store) MinReadSeq(ctx context.Context, chatID int64) (int64, error) {
	n, err := minReadSeq(ctx, s.db, chatID)
	if err != nil {
		return 0, wrap("min read seq", err)
	}
	return n, nil
}

func minReadSeq(ctx context.Context, db bun.IDB, chatID int64) (int64, error) {
	var n int64
	err := db.NewSelect().Model((*Member)(nil)).ColumnExpr("COALESCE(MIN(cm.last_read_seq), 0)").
		Where("cm.chat_id = ?", chatID).Scan(ctx, &n)
	return n, err
}

// ChatHead is a chat's id and counters.
type ChatHead struct {
	ChatID  int64 `bun:"chat_id"`
	LastSeq int64 `bun:"last_seq"`
	LastRev int64 `bun:"last_rev"`
}

// MemberChatHeads returns the last_rev of every chat userID belongs to, by
// chat id. WebSocket connections start from these.
func (s *Store) MemberChatHeads(ctx context.Context, userID int64) (map[int64]int64, error) {
	var rows []ChatHead
	err := s.db.NewSelect().Model((*Member)(nil)).
		ColumnExpr("cm.chat_id AS chat_id").ColumnExpr("c.last_seq AS last_seq").ColumnExpr("c.last_rev AS last_rev").
		Join("JOIN chats AS c ON c.id = cm.chat_id").
		Where("cm.user_id = ?", userID).Scan(ctx, &rows)
	if err != nil {
		return nil, wrap("member chat heads", err)
	}
	out := make(map[int64]int64, len(rows))
	for _, r := range rows {
		out[r.ChatID] = r.LastRev
	}
	return out, nil
}

// MemberHeads returns the counters of every chat userID belongs to.
func (s *Store) MemberHeads(ctx context.Context, userID int64) ([]ChatHead, error) {
	var rows []ChatHead
	err := s.db.NewSelect().Model((*Member)(nil)).
		ColumnExpr("cm.chat_id AS chat_id, c.last_seq AS last_seq, c.last_rev AS last_rev").
		Join("JOIN chats AS c ON c.id = cm.chat_id").
		Where("cm.user_id = ?", userID).Scan(ctx, &rows)
	if err != nil {
		return nil, wrap("member heads", err)
	}
	return rows, nil
}

// MemberHeadsOf returns, for each of userIDs, the last_rev of every chat
// it belongs to (user id to chat id to last rev); users without chats are
// missing. The realtime hub checks its connections with it.
func (s *Store) MemberHeadsOf(ctx context.Context, userIDs []int64) (map[int64]map[int64]int64, error) {
	if len(userIDs) == 0 {
		return map[int64]map[int64]int64{}, nil
	}
	var rows []struct {
		UserID  int64 `bun:"user_id"`
		ChatID  int64 `bun:"chat_id"`
		LastRev int64 `bun:"last_rev"`
	}
	err := s.db.NewSelect().Model((*Member)(nil)).
		ColumnExpr("cm.user_id AS user_id, cm.chat_id AS chat_id, c.last_rev AS last_rev").
		Join("JOIN chats AS c ON c.id = cm.chat_id").
		Where("cm.user_id IN (?)", bun.List(userIDs)).Scan(ctx, &rows)
	if err != nil {
		return nil, wrap("member heads", err)
	}
	out := make(map[int64]map[int64]int64)
	for _, r := range rows {
		m := out[r.UserID]
		if m == nil {
			m = map[int64]int64{}
			out[r.UserID] = m
		}
		m[r.ChatID] = r.LastRev
	}
	return out, nil
}
