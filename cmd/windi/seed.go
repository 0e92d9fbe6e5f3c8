package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/windi-chat/windi/app"
	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
)

// The demo data `windi seed` loads. Everything is keyed by something fixed
// (emails, the group's name and owner, client_msg_ids), so a second run
// finds what the first created instead of adding to it.
//
// The passwords are DEMO-ONLY: they are printed, documented in the README
// and committed here. Never seed a server that others can reach.

type demoUser struct {
	key, name, email, password string
}

var demoUsers = []demoUser{
	{"alice", "Alice", "alice@windi.test", "alice-demo-pass"},
	{"bob", "Bob", "bob@windi.test", "bob-demo-pass"},
	{"carol", "Carol", "carol@windi.test", "carol-demo-pass"},
	{"dave", "Dave", "dave@windi.test", "dave-demo-pass"},
}

const (
	// The private chat is between these two users.
	demoPrivateA, demoPrivateB = "alice", "bob"
	// The group is owned by demoGroupOwner; every other demo user is a
	// member.
	demoGroupName  = "Weekend hike"
	demoGroupOwner = "alice"
)

const (
	inPrivate = "private"
	inGroup   = "group"
)

type demoMessage struct {
	chat, from, clientMsgID, text string
}

var demoMessages = []demoMessage{
	{inPrivate, "alice", "seed-1", "Hi Bob! Did you get the slides I sent this morning?"},
	{inPrivate, "bob", "seed-2", "Got them, thanks. Slide 7 has a typo in the chart title."},
	{inPrivate, "alice", "seed-3", "Good catch, fixing it now."},
	{inPrivate, "bob", "seed-4", "Lunch at 12:30?"},
	{inPrivate, "alice", "seed-5", "Sounds good, see you at the usual place."},
	{inGroup, "alice", "seed-6", "Who's in for a hike on Saturday? I'm thinking of the ridge trail, about 12 km."},
	{inGroup, "carol", "seed-7", "I'm in! What time do we start?"},
	{inGroup, "bob", "seed-8", "Count me in too. 8:00 at the trailhead car park?"},
	{inGroup, "dave", "seed-9", "I can drive two people, leaving the station at 7:15."},
	{inGroup, "alice", "seed-10", "Perfect. Bring water and a rain jacket, the forecast is mixed."},
	{inGroup, "carol", "seed-11", "I'll bring snacks 🍫"},
	{inGroup, "dave", "seed-12", "See you all on Saturday!"},
}

// seedArgon2 is the password hashing cost of seeded accounts; the same as
// the server's.
var seedArgon2 = auth.DefaultArgon2

// seedUser is a demo user as found or created.
type seedUser struct {
	demoUser
	repo.User
	created bool
	// passwordOK is false for an account that existed before seeding with
	// another password; seeding never changes a password.
	passwordOK bool
}

// seedResult is what seeding found or created.
type seedResult struct {
	users           []seedUser
	privateID       int64
	groupID         int64
	groupMembers    []string // names, owner first
	created         struct{ users, chats, members, messages int }
	privateMessages int
	groupMessages   int
}

func seed(ctx context.Context, cfg app.Config, log *slog.Logger, stdout io.Writer) error {
	store, err := repo.Open(ctx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Seeding issues no tokens, but the service wants an issuer: give it one
	// with a throw-away secret.
	// The service publishes what it stores through the deployment's broker,
	// so connected clients of a scaled deployment see the seeded messages
	// live; in embedded mode nobody listens to a fresh in-process broker.
	b, err := app.NewBroker(ctx, cfg, broker.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	svc, err := chat.New(chat.Config{
		Store: store, Broker: b, Tokens: auth.NewTokens([]byte(rand.Text()+rand.Text()), cfg.JWTTTL), Argon2: seedArgon2, Logger: log,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	res, err := seedDemo(ctx, svc, store)
	if err != nil {
		return err
	}
	log.Info("demo data seeded", "event", "seed.done", "dialect", store.Dialect(),
		"users_created", res.created.users, "chats_created", res.created.chats,
		"members_added", res.created.members, "messages_created", res.created.messages,
		"private_chat_id", res.privateID, "group_id", res.groupID)
	return printSeed(stdout, res, cfg.Addr)
}

// seedDemo finds or creates the demo data through the chat rules.
func seedDemo(ctx context.Context, svc *chat.Service, store *repo.Store) (seedResult, error) {
	var res seedResult
	ids := map[string]int64{}
	names := map[string]string{}
	for _, d := range demoUsers {
		u, err := ensureUser(ctx, svc, store, d)
		if err != nil {
			return res, err
		}
		res.users = append(res.users, u)
		ids[d.key], names[d.key] = u.ID, u.Name
		if u.created {
			res.created.users++
		}
	}

	priv, created, err := svc.OpenPrivate(ctx, ids[demoPrivateA], ids[demoPrivateB])
	if err != nil {
		return res, fmt.Errorf("private chat: %w", err)
	}
	res.privateID = priv.Chat.ID
	if created {
		res.created.chats++
	}

	owner := ids[demoGroupOwner]
	var members []int64
	res.groupMembers = []string{names[demoGroupOwner]}
	for _, d := range demoUsers {
		if d.key != demoGroupOwner {
			members = append(members, ids[d.key])
			res.groupMembers = append(res.groupMembers, names[d.key])
		}
	}
	group, found, err := findGroup(ctx, svc, owner)
	if err != nil {
		return res, err
	}
	if !found {
		if group, err = svc.CreateGroup(ctx, owner, demoGroupName, members); err != nil {
			return res, fmt.Errorf("group: %w", err)
		}
		res.created.chats++
	} else {
		// Put back demo users who left or were removed since the last run,
		// so that their messages below are theirs to repeat.
		for _, id := range members {
			added, err := svc.AddMember(ctx, owner, group.Chat.ID, id)
			if err != nil {
				return res, fmt.Errorf("group: add user %d: %w", id, err)
			}
			if added {
				res.created.members++
			}
		}
	}
	res.groupID = group.Chat.ID

	for _, m := range demoMessages {
		chatID := res.privateID
		if m.chat == inGroup {
			chatID = res.groupID
			res.groupMessages++
		} else {
			res.privateMessages++
		}
		_, dup, err := svc.Send(ctx, ids[m.from], chatID, m.clientMsgID, m.text, nil)
		if err != nil {
			return res, fmt.Errorf("message %s: %w", m.clientMsgID, err)
		}
		if !dup {
			res.created.messages++
		}
	}
	return res, nil
}

// ensureUser returns the demo user with d's email, registering it when
// missing.
func ensureUser(ctx context.Context, svc *chat.Service, store *repo.Store, d demoUser) (seedUser, error) {
	su := seedUser{demoUser: d}
	u, err := store.UserByEmail(ctx, chat.NormalizeEmail(d.email))
	if errors.Is(err, repo.ErrNotFound) {
		u, err = svc.Register(ctx, d.name, d.email, d.password)
		switch {
		case err == nil:
			su.created = true
		case chat.CodeOf(err) == chat.CodeEmailTaken: // registered meanwhile: reuse it
			u, err = store.UserByEmail(ctx, chat.NormalizeEmail(d.email))
		}
	}
	if err != nil {
		return su, fmt.Errorf("user %s: %w", d.email, err)
	}
	su.User = u
	su.passwordOK = su.created || auth.CheckPassword(u.PasswordHash, d.password)
	return su, nil
}

// findGroup returns the oldest group named demoGroupName that owner owns.
func findGroup(ctx context.Context, svc *chat.Service, owner int64) (chat.View, bool, error) {
	views, err := svc.ListChats(ctx, owner)
	if err != nil {
		return chat.View{}, false, fmt.Errorf("group: list chats: %w", err)
	}
	var best chat.View
	found := false
	for _, v := range views {
		if v.Chat.Type != repo.ChatGroup || v.Chat.Name == nil || *v.Chat.Name != demoGroupName {
			continue
		}
		owns := slices.ContainsFunc(v.Members, func(m repo.Member) bool { return m.UserID == owner && m.Role == repo.RoleOwner })
		if owns && (!found || v.Chat.ID < best.Chat.ID) {
			best, found = v, true
		}
	}
	return best, found, nil
}

// printSeed prints the credentials table and what the demo holds.
func printSeed(w io.Writer, res seedResult, addr string) error {
	var b strings.Builder
	b.WriteString("WinDI Chat demo data. These passwords are DEMO-ONLY: never seed a server others can reach.\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tEMAIL\tPASSWORD")
	for _, u := range res.users {
		pw := u.password
		if !u.passwordOK {
			pw = "(not the demo password: this account existed before seeding)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", u.User.Name, u.User.Email, pw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var privNames []string
	for _, u := range res.users {
		if u.key == demoPrivateA || u.key == demoPrivateB {
			privNames = append(privNames, u.User.Name)
		}
	}
	fmt.Fprintf(&b, "\nPrivate chat %d: %s (%d messages).\n", res.privateID, strings.Join(privNames, " and "), res.privateMessages)
	fmt.Fprintf(&b, "Group %d %q: %s (owner), %s (%d messages).\n", res.groupID, demoGroupName,
		res.groupMembers[0], strings.Join(res.groupMembers[1:], ", "), res.groupMessages)
	c := res.created
	if c.users+c.chats+c.members+c.messages == 0 {
		b.WriteString("Nothing new: the demo data was already there.\n")
	} else {
		fmt.Fprintf(&b, "Created now: %s, %s, %s", count(c.users, "user"), count(c.chats, "chat"), count(c.messages, "message"))
		if c.members > 0 {
			fmt.Fprintf(&b, ", %s put back", count(c.members, "group member"))
		}
		b.WriteString(".\n")
	}
	u := res.users[0]
	fmt.Fprintf(&b, "\nLog in: curl -s %s/login -d username=%s -d password=%s\n", baseURL(addr), u.User.Email, u.password)
	_, err := io.WriteString(w, b.String())
	return err
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// baseURL is where a local client reaches a server listening on addr.
func baseURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://localhost:8000"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
