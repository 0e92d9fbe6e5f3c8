package repo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/windi-chat/windi/repo"
)

// t0 is a fixed clock reading: session times come from the caller.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func mustSession(t *testing.T, s *repo.Store, userID int64, device, hash string, at time.Time) repo.Session {
	t.Helper()
	sess, err := s.CreateSession(context.Background(), userID, device, hash, at, at.Add(24*time.Hour))
	if err != nil {
		t.Fatalf("create session: %v", err)
	}
	return sess
}

func TestSessionRotation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		sess := mustSession(t, s, alice.ID, "phone", "h1", t0)
		if sess.ID == 0 || sess.CreatedAt != t0 || sess.ExpiresAt != t0.Add(24*time.Hour) {
			t.Fatalf("got %+v, want an id, created %v", sess, t0)
		}

		t1 := t0.Add(time.Hour)
		got, err := s.RotateRefresh(ctx, "h1", "h2", t1, t1.Add(24*time.Hour))
		if err != nil {
			t.Fatalf("rotate: %v", err)
		}
		if got.ID != sess.ID || got.RefreshHash != "h2" || got.LastUsedAt != t1 || got.ExpiresAt != t1.Add(24*time.Hour) {
			t.Errorf("rotate: got %+v, want session %d with h2, used %v, sliding expiry", got, sess.ID, t1)
		}
		// The new token works; the old one is reuse and revokes the session.
		t2 := t1.Add(time.Minute)
		if _, err := s.RotateRefresh(ctx, "h2", "h3", t2, t2.Add(24*time.Hour)); err != nil {
			t.Fatalf("rotate h2: %v", err)
		}
		got, err = s.RotateRefresh(ctx, "h1", "hx", t2, t2.Add(24*time.Hour))
		if !errors.Is(err, repo.ErrRefreshReused) {
			t.Fatalf("reuse h1: got %v, want ErrRefreshReused", err)
		}
		if got.ID != sess.ID || got.UserID != alice.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(t2) {
			t.Errorf("reuse: got %+v, want session %d revoked at %v", got, sess.ID, t2)
		}
		// The current token of a revoked session no longer rotates.
		if _, err := s.RotateRefresh(ctx, "h3", "h4", t2, t2.Add(24*time.Hour)); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("rotate after revocation: got %v, want ErrNotFound", err)
		}
		if _, err := s.RotateRefresh(ctx, "nope", "h5", t2, t2.Add(24*time.Hour)); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("unknown token: got %v, want ErrNotFound", err)
		}
		live, err := s.SessionsOf(ctx, alice.ID, t2)
		if err != nil || len(live) != 0 {
			t.Errorf("sessions after reuse: got %v, %v, want none", live, err)
		}
	})
}

func TestSessionExpiry(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		mustSession(t, s, alice.ID, "phone", "h1", t0)
		end := t0.Add(24 * time.Hour)
		if _, err := s.RotateRefresh(ctx, "h1", "h2", end, end.Add(time.Hour)); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("rotate at expiry: got %v, want ErrNotFound", err)
		}
		// Just before, it works and slides the expiry.
		mustSession(t, s, alice.ID, "laptop", "k1", t0)
		almost := end.Add(-time.Microsecond)
		if _, err := s.RotateRefresh(ctx, "k1", "k2", almost, almost.Add(24*time.Hour)); err != nil {
			t.Fatalf("rotate before expiry: %v", err)
		}
		// A spent token past its own expiry is merely unknown: no revocation.
		late := end.Add(time.Hour)
		if _, err := s.RotateRefresh(ctx, "k1", "k3", late, late.Add(time.Hour)); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("stale spent token: got %v, want ErrNotFound", err)
		}
		live, err := s.SessionsOf(ctx, alice.ID, late)
		if err != nil || len(live) != 1 || live[0].Device != "laptop" {
			t.Errorf("sessions at %v: got %+v, %v, want the laptop only", late, live, err)
		}
		if live, _ := s.SessionsOf(ctx, alice.ID, almost.Add(48*time.Hour)); len(live) != 0 {
			t.Errorf("sessions after every expiry: got %+v, want none", live)
		}
	})
}

// TestSessionConcurrentRotation races rotations of one token: exactly one
// wins, the others are reuse (and revoke the session).
func TestSessionConcurrentRotation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		alice := mustUser(t, s, "alice")
		for round := range 5 {
			old := fmt.Sprintf("r%d", round)
			mustSession(t, s, alice.ID, "phone", old, t0)
			const n = 8
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					_, errs[i] = s.RotateRefresh(ctx, old, fmt.Sprintf("r%d-%d", round, i), t0.Add(time.Second), t0.Add(time.Hour))
				})
			}
			close(start)
			wg.Wait()
			won, reused := 0, 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case errors.Is(err, repo.ErrRefreshReused):
					reused++
				default:
					t.Errorf("round %d: got %v, want nil or ErrRefreshReused", round, err)
				}
			}
			if won != 1 || reused != n-1 {
				t.Errorf("round %d: got %d winners and %d reuses, want 1 and %d", round, won, reused, n-1)
			}
		}
	})
}

func TestRevokeSessions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		alice, bob := mustUser(t, s, "alice"), mustUser(t, s, "bob")
		a1 := mustSession(t, s, alice.ID, "phone", "a1", t0)
		a2 := mustSession(t, s, alice.ID, "laptop", "a2", t0.Add(time.Minute))
		a3 := mustSession(t, s, alice.ID, "tablet", "a3", t0.Add(2*time.Minute))
		b1 := mustSession(t, s, bob.ID, "phone", "b1", t0)

		live, err := s.SessionsOf(ctx, alice.ID, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, x := range live {
			ids = append(ids, x.ID)
		}
		if !slices.Equal(ids, []int64{a3.ID, a2.ID, a1.ID}) {
			t.Errorf("sessions: got %v, want newest first %v", ids, []int64{a3.ID, a2.ID, a1.ID})
		}
		if err := s.RevokeSession(ctx, alice.ID, b1.ID, t0); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("revoke another user's session: got %v, want ErrNotFound", err)
		}
		at := t0.Add(time.Hour)
		if err := s.RevokeSession(ctx, alice.ID, a2.ID, at); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if err := s.RevokeSession(ctx, alice.ID, a2.ID, at); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("revoke twice: got %v, want ErrNotFound", err)
		}
		if _, err := s.RotateRefresh(ctx, "a2", "a2b", at, at.Add(time.Hour)); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("refresh a revoked session: got %v, want ErrNotFound", err)
		}

		at2 := at.Add(time.Minute)
		revoked, err := s.ChangePassword(ctx, alice.ID, "new-hash", a1.ID, at2)
		if err != nil {
			t.Fatalf("change password: %v", err)
		}
		if !slices.Equal(revoked, []int64{a3.ID}) {
			t.Errorf("change password revoked %v, want [%d]", revoked, a3.ID)
		}
		if u, _ := s.UserByID(ctx, alice.ID); u.PasswordHash != "new-hash" {
			t.Errorf("password hash: got %q, want new-hash", u.PasswordHash)
		}
		live, _ = s.SessionsOf(ctx, alice.ID, at2)
		if len(live) != 1 || live[0].ID != a1.ID {
			t.Errorf("sessions after password change: got %+v, want only %d", live, a1.ID)
		}
		if _, err := s.ChangePassword(ctx, alice.ID+100, "h", 0, at2); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("change password of nobody: got %v, want ErrNotFound", err)
		}

		recent, err := s.RevokedSince(ctx, at.Add(-time.Second))
		if err != nil {
			t.Fatal(err)
		}
		want := []repo.Revocation{{SessionID: a2.ID, UserID: alice.ID, RevokedAt: at}, {SessionID: a3.ID, UserID: alice.ID, RevokedAt: at2}}
		if !slices.Equal(recent, want) {
			t.Errorf("revoked since: got %+v, want %+v", recent, want)
		}
		if recent, _ := s.RevokedSince(ctx, at); len(recent) != 1 || recent[0].SessionID != a3.ID {
			t.Errorf("revoked since %v: got %+v, want a3 only", at, recent)
		}

		// Pruning forgets what no cache needs: revoked or expired before t.
		n, err := s.PruneSessions(ctx, at.Add(30*time.Second))
		if err != nil || n != 1 {
			t.Errorf("prune: got %d, %v, want 1 (a2)", n, err)
		}
		if recent, _ := s.RevokedSince(ctx, t0); len(recent) != 1 || recent[0].SessionID != a3.ID {
			t.Errorf("after prune: got %+v, want a3 only", recent)
		}
	})
}

func TestUpdateUserNameAndMemberNames(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		alice, bob := mustUser(t, s, "alice"), mustUser(t, s, "bob")
		u, err := s.UpdateUserName(ctx, alice.ID, "Alice Liddell")
		if err != nil || u.Name != "Alice Liddell" || u.Email != alice.Email {
			t.Fatalf("update name: got %+v, %v", u, err)
		}
		if _, err := s.UpdateUserName(ctx, bob.ID+100, "x"); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("update nobody: got %v, want ErrNotFound", err)
		}
		g := mustGroup(t, s, "g", alice.ID, bob.ID)
		ms, err := s.Members(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		names := map[int64]string{}
		for _, m := range ms {
			names[m.UserID] = m.Name
		}
		if names[alice.ID] != "Alice Liddell" || names[bob.ID] != "bob" {
			t.Errorf("member names: got %v", names)
		}
		list, err := s.ChatsForUser(ctx, bob.ID)
		if err != nil || len(list) != 1 {
			t.Fatalf("chats for bob: %v, %v", list, err)
		}
		for _, m := range list[0].Members {
			if m.Name != names[m.UserID] {
				t.Errorf("chat list member %d: got name %q, want %q", m.UserID, m.Name, names[m.UserID])
			}
		}
	})
}
