package main

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/client/rest"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

func init() {
	// Cheap hashes keep the tests fast (apptest servers do the same); a hash
	// records its own cost, so logging in works all the same.
	seedArgon2 = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}
}

// credentialRow matches a row of the printed credentials table.
var credentialRow = regexp.MustCompile(`(?m)^\s+(\S+)\s+(\S+@windi\.test)\s+(\S+)\s*$`)

type credential struct{ name, email, password string }

func credentials(t *testing.T, stdout string) []credential {
	t.Helper()
	var out []credential
	for _, m := range credentialRow.FindAllStringSubmatch(stdout, -1) {
		out = append(out, credential{m[1], m[2], m[3]})
	}
	if len(out) != len(demoUsers) {
		t.Fatalf("printed %d credentials, want %d:\n%s", len(out), len(demoUsers), stdout)
	}
	return out
}

func runSeed(t *testing.T, getenv func(string) string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run([]string{"seed"}, getenv, &out, &errb); code != 0 {
		t.Fatalf("seed: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), `"seed.done"`) {
		t.Errorf("seed logged no completion: %s", errb.String())
	}
	return out.String()
}

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// snapshot is every row seeding can touch.
type snapshot struct {
	Users    []repo.User
	Chats    []repo.Chat
	Members  []repo.Member
	Messages []repo.Message
}

func takeSnapshot(t *testing.T, s *repo.Store) snapshot {
	t.Helper()
	ctx := context.Background()
	var snap snapshot
	db := s.DB()
	for _, q := range []error{
		db.NewSelect().Model(&snap.Users).Order("u.id").Scan(ctx),
		db.NewSelect().Model(&snap.Chats).Order("c.id").Scan(ctx),
		db.NewSelect().Model(&snap.Members).Order("cm.chat_id", "cm.user_id").Scan(ctx),
		db.NewSelect().Model(&snap.Messages).Order("m.id").Scan(ctx),
	} {
		if q != nil {
			t.Fatalf("snapshot: %v", q)
		}
	}
	return snap
}

func TestSeedIsIdempotent(t *testing.T) {
	for _, dialect := range []string{repo.DialectSQLite, repo.DialectPostgres} {
		t.Run(dialect, func(t *testing.T) {
			env := map[string]string{"WINDI_DATA_DIR": t.TempDir(), "WINDI_LOG_LEVEL": "debug"}
			if dialect == repo.DialectPostgres {
				// No JWT_SECRET: seeding issues no tokens, so scaled mode does
				// not require one.
				env["DATABASE_URL"] = repotest.NewPostgresURL(t)
			}
			first := runSeed(t, envOf(env))
			if !strings.Contains(first, "Created now: 4 users, 2 chats, 12 messages.") {
				t.Errorf("first run did not report what it created:\n%s", first)
			}
			ctx := context.Background()
			store, err := repo.Open(ctx, env["DATABASE_URL"], env["WINDI_DATA_DIR"])
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			before := takeSnapshot(t, store)
			checkSeeded(t, before)

			second := runSeed(t, envOf(env))
			if !strings.Contains(second, "Nothing new") {
				t.Errorf("second run claims to have created something:\n%s", second)
			}
			after := takeSnapshot(t, store)
			if d := diffSnapshots(before, after); d != "" {
				t.Errorf("the second run changed the database: %s", d)
			}
			if c1, c2 := credentials(t, first), credentials(t, second); fmt.Sprint(c1) != fmt.Sprint(c2) {
				t.Errorf("credentials differ between runs: %v, then %v", c1, c2)
			}

			// The printed passwords log in.
			svc, err := chat.New(chat.Config{Store: store, Broker: broker.NewMemory(broker.Options{}), Tokens: auth.NewTokens([]byte("test-secret-0123456789abcdef-0123"), time.Hour),
				Argon2: auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}, // hashes only its dummy
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range credentials(t, second) {
				res, err := svc.Login(ctx, c.email, c.password, "")
				if err != nil {
					t.Errorf("login %s with the printed password: %v", c.email, err)
					continue
				}
				if _, err := svc.Authenticate(ctx, res.Token); err != nil {
					t.Errorf("token of %s: %v", c.email, err)
				}
				if _, err := svc.Login(ctx, c.email, c.password+"x", ""); chat.CodeOf(err) != chat.CodeUnauthorized {
					t.Errorf("login %s with a wrong password: got %v, want unauthorized", c.email, err)
				}
			}
		})
	}
}

// checkSeeded checks the exact shape of a freshly seeded database.
func checkSeeded(t *testing.T, s snapshot) {
	t.Helper()
	if len(s.Users) != 4 || len(s.Chats) != 2 || len(s.Members) != 6 || len(s.Messages) != 12 {
		t.Fatalf("got %d users, %d chats, %d memberships, %d messages; want 4, 2, 6, 12",
			len(s.Users), len(s.Chats), len(s.Members), len(s.Messages))
	}
	byType := map[string]repo.Chat{}
	for _, c := range s.Chats {
		byType[c.Type] = c
	}
	priv, group := byType[repo.ChatPrivate], byType[repo.ChatGroup]
	if priv.ID == 0 || group.ID == 0 || group.Name == nil || *group.Name != demoGroupName {
		t.Fatalf("want one private chat and the group %q, got %+v", demoGroupName, s.Chats)
	}
	if priv.LastSeq != 5 || group.LastSeq != 7 {
		t.Errorf("last_seq: private %d, group %d; want 5 and 7", priv.LastSeq, group.LastSeq)
	}
	owners, groupMembers := 0, 0
	for _, m := range s.Members {
		if m.ChatID == group.ID {
			groupMembers++
			if m.Role == repo.RoleOwner {
				owners++
			}
		}
	}
	if groupMembers != 4 || owners != 1 {
		t.Errorf("group has %d members and %d owners, want 4 and 1", groupMembers, owners)
	}
	next := map[int64]int64{}
	ids := map[string]bool{}
	for _, m := range s.Messages {
		next[m.ChatID]++
		if m.Seq != next[m.ChatID] {
			t.Errorf("message %d in chat %d has seq %d, want %d", m.ID, m.ChatID, m.Seq, next[m.ChatID])
		}
		ids[m.ClientMsgID] = true
	}
	for _, m := range demoMessages {
		if !ids[m.clientMsgID] {
			t.Errorf("message %s missing", m.clientMsgID)
		}
	}
}

func diffSnapshots(a, b snapshot) string {
	var d []string
	if !reflect.DeepEqual(a.Users, b.Users) {
		d = append(d, fmt.Sprintf("users %d -> %d", len(a.Users), len(b.Users)))
	}
	if !reflect.DeepEqual(a.Chats, b.Chats) {
		d = append(d, fmt.Sprintf("chats %+v -> %+v", a.Chats, b.Chats))
	}
	if !reflect.DeepEqual(a.Members, b.Members) {
		d = append(d, fmt.Sprintf("members %+v -> %+v", a.Members, b.Members))
	}
	if !reflect.DeepEqual(a.Messages, b.Messages) {
		d = append(d, fmt.Sprintf("messages %d -> %d", len(a.Messages), len(b.Messages)))
	}
	return strings.Join(d, "; ")
}

// TestSeedWhileServing seeds the database of a running server that is busy
// writing, then logs in to that server with the printed credentials and
// finds the demo chats and history.
func TestSeedWhileServing(t *testing.T) {
	apptest.ForEachDialect(t, func(t *testing.T, env *apptest.Env) {
		srv := env.Start(t)
		ctx := context.Background()

		// Keep the server writing while the seed runs.
		a, b := srv.NewUser(t, "Zed"), srv.NewUser(t, "Yan")
		var body rest.CreateChatRequest
		if err := body.FromCreatePrivateChat(rest.CreatePrivateChat{Type: "private", UserID: b.ID}); err != nil {
			t.Fatal(err)
		}
		cr, err := srv.Client.CreateChatWithResponse(ctx, body, a.Auth())
		if err != nil || cr.JSON201 == nil {
			t.Fatalf("open chat: %v %s", err, cr.Body)
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		var sent int
		var sendErr error
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond): // under any per-user send limit
				}
				r, err := srv.Client.SendMessageWithResponse(ctx, cr.JSON201.ID,
					rest.SendMessageRequest{ClientMsgID: fmt.Sprintf("busy-%d", i), Text: "busy"}, a.Auth())
				if err != nil || r.JSON201 == nil {
					sendErr = fmt.Errorf("send %d during seed: %v %s", i, err, r.Body)
					return
				}
				sent++
			}
		})

		vars := map[string]string{"WINDI_DATA_DIR": env.DataDir, "DATABASE_URL": env.DatabaseURL, "REDIS_URL": env.RedisURL}
		out := runSeed(t, envOf(vars))
		close(done)
		wg.Wait()
		if sendErr != nil {
			t.Fatal(sendErr)
		}
		t.Logf("the server stored %d messages while seeding", sent)

		tokens := map[string]string{}
		for _, c := range credentials(t, out) {
			tokens[c.email] = srv.Login(t, c.email, c.password)
		}
		alice := apptest.Bearer(tokens["alice@windi.test"])
		lr, err := srv.Client.ListChatsWithResponse(ctx, alice)
		if err != nil || lr.JSON200 == nil {
			t.Fatalf("list chats: %v %s", err, lr.Body)
		}
		if len(*lr.JSON200) != 2 {
			t.Fatalf("alice has %d chats, want 2: %s", len(*lr.JSON200), lr.Body)
		}
		for _, c := range *lr.JSON200 {
			want := map[rest.ChatType]int{"private": 5, "group": 7}[c.Type]
			hr, err := srv.Client.GetHistoryWithResponse(ctx, c.ID, &rest.GetHistoryParams{}, apptest.Bearer(tokens["carol@windi.test"]))
			if c.Type == "private" {
				// Carol is not in Alice and Bob's chat.
				if err != nil || hr.StatusCode() != 403 {
					t.Errorf("carol reads the private chat: %v %d", err, hr.StatusCode())
				}
				hr, err = srv.Client.GetHistoryWithResponse(ctx, c.ID, &rest.GetHistoryParams{}, apptest.Bearer(tokens["bob@windi.test"]))
			}
			if err != nil || hr.JSON200 == nil || len(*hr.JSON200) != want {
				t.Errorf("%s chat history: %v %s, want %d messages", c.Type, err, hr.Body, want)
			}
		}
	})
}

// TestSeedReusesAndRepairs: an account registered before seeding keeps its
// password (and the table says so), and a demo user who left the group is
// put back so that the repeat of its messages stays a no-op.
func TestSeedReusesAndRepairs(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := repo.Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	svc, err := chat.New(chat.Config{Store: store, Broker: broker.NewMemory(broker.Options{}), Tokens: auth.NewTokens([]byte("test-secret-0123456789abcdef-0123"), time.Hour), Argon2: seedArgon2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, "Dave D.", "Dave@Windi.test", "daves-own-password"); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"WINDI_DATA_DIR": dir})
	out := runSeed(t, env)
	if !regexp.MustCompile(`Dave D\.\s+dave@windi\.test\s+\(not the demo password`).MatchString(out) || !strings.Contains(out, "Created now: 3 users, 2 chats, 12 messages.") {
		t.Errorf("pre-existing account not reported as such:\n%s", out)
	}
	if _, err := svc.Login(ctx, "dave@windi.test", "daves-own-password", ""); err != nil {
		t.Errorf("seeding changed a pre-existing password: %v", err)
	}

	carol, err := store.UserByEmail(ctx, "carol@windi.test")
	if err != nil {
		t.Fatal(err)
	}
	snap := takeSnapshot(t, store)
	var groupID int64
	for _, c := range snap.Chats {
		if c.Type == repo.ChatGroup {
			groupID = c.ID
		}
	}
	if changed, err := svc.RemoveMember(ctx, carol.ID, groupID, carol.ID); err != nil || !changed {
		t.Fatalf("carol leaves: %v %v", changed, err)
	}
	out = runSeed(t, env)
	if !strings.Contains(out, "Created now: 0 users, 0 chats, 0 messages, 1 group member put back.") {
		t.Errorf("rejoin not reported:\n%s", out)
	}
	after := takeSnapshot(t, store)
	if len(after.Messages) != len(snap.Messages) || len(after.Members) != len(snap.Members) || len(after.Chats) != 2 {
		t.Errorf("reseeding after a leave: %d messages, %d members, %d chats; want %d, %d, 2",
			len(after.Messages), len(after.Members), len(after.Chats), len(snap.Messages), len(snap.Members))
	}
}
