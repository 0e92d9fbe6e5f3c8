package chat_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/auth"
	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/realtime/broker"
	"github.com/windi-chat/windi/repo"
	"github.com/windi-chat/windi/repo/repotest"
)

// clock is a fake clock for the service.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newService is one replica's service on store, with the fake clock and a
// 15-minute access token; tune adjusts its configuration.
func newService(t *testing.T, store *repo.Store, c *clock, tune ...func(*chat.Config)) *chat.Service {
	t.Helper()
	cfg := chat.Config{
		Store: store, Broker: broker.NewMemory(broker.Options{}), Now: c.now,
		Tokens: auth.NewTokens([]byte("chat-test-secret-0123456789abcdef"), 15*time.Minute),
		Argon2: auth.Argon2Params{Memory: 64, Time: 1, Threads: 1},
	}
	for _, f := range tune {
		f(&cfg)
	}
	svc, err := chat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// TestRevocationCache: the replica that revokes refuses the session's
// tokens at once, another replica once it has read the revocations (the
// broker brings them sooner; see realtime's tests), a replica started
// later from the start; and the cache forgets an entry once every token of
// the session has expired anyway.
func TestRevocationCache(t *testing.T) {
	repotest.ForEachDialect(t, func(t *testing.T, store *repo.Store) {
		ctx := context.Background()
		c := &clock{t: time.Now().UTC().Truncate(time.Second)}
		a, b := newService(t, store, c), newService(t, store, c)
		if _, err := a.Register(ctx, "Alice", "alice@example.com", "password-123"); err != nil {
			t.Fatal(err)
		}
		login, err := a.Login(ctx, "alice@example.com", "password-123", "phone")
		if err != nil {
			t.Fatal(err)
		}
		p, err := b.Authenticate(ctx, login.Token)
		if err != nil || p.UserID != login.UserID || p.SessionID != login.SessionID {
			t.Fatalf("authenticate: got %+v, %v", p, err)
		}
		if err := a.RevokeSession(ctx, p.UserID, p.SessionID); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(ctx, login.Token); chat.CodeOf(err) != chat.CodeSessionRevoked {
			t.Errorf("revoking replica: got %v, want session_revoked", err)
		}
		if _, err := b.Authenticate(ctx, login.Token); err != nil {
			t.Errorf("other replica before it heard (no broker here): got %v, want still accepted", err)
		}
		if err := b.LoadRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Authenticate(ctx, login.Token); chat.CodeOf(err) != chat.CodeSessionRevoked {
			t.Errorf("other replica after reading the database: got %v, want session_revoked", err)
		}
		late := newService(t, store, c)
		if err := late.LoadRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		if !late.SessionRevoked(p.SessionID) || late.RevokedCount() != 1 {
			t.Errorf("a replica started later: revoked %v, cache %d, want it known", late.SessionRevoked(p.SessionID), late.RevokedCount())
		}
		// Once the access TTL has passed, no token of the session can be
		// valid: the entry goes.
		c.add(15*time.Minute + time.Second)
		if err := b.LoadRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		if b.RevokedCount() != 0 {
			t.Errorf("cache after the access TTL: %d entries, want 0", b.RevokedCount())
		}
		if _, err := b.Authenticate(ctx, login.Token); chat.CodeOf(err) != chat.CodeUnauthorized {
			t.Errorf("the token after its expiry: got %v, want unauthorized", err)
		}
	})
}

// TestAuthenticateRemembersUsers: a user found once is not looked up
// again for a minute; a user deleted by an operator is refused after it.
func TestAuthenticateRemembersUsers(t *testing.T) {
	repotest.ForEachDialect(t, func(t *testing.T, store *repo.Store) {
		ctx := context.Background()
		c := &clock{t: time.Now().UTC().Truncate(time.Second)}
		svc := newService(t, store, c)
		if _, err := svc.Register(ctx, "Bob", "bob@example.com", "password-123"); err != nil {
			t.Fatal(err)
		}
		login, err := svc.Login(ctx, "bob@example.com", "password-123", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, login.Token); err != nil {
			t.Fatal(err)
		}
		if _, err := store.DB().NewDelete().TableExpr("users").Where("id = ?", login.UserID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		c.add(30 * time.Second)
		if _, err := svc.Authenticate(ctx, login.Token); err != nil {
			t.Errorf("within the minute: got %v, want accepted from memory", err)
		}
		c.add(31 * time.Second)
		if _, err := svc.Authenticate(ctx, login.Token); chat.CodeOf(err) != chat.CodeUnauthorized {
			t.Errorf("after the minute: got %v, want unauthorized (no such user)", err)
		}
	})
}
