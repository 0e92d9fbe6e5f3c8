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

func TestCreateUser(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		before := time.Now().Add(-time.Second)
		u, err := s.CreateUser(ctx, "Alice", "alice@example.com", "h1")
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if u.ID == 0 {
			t.Error("got id 0, want an assigned id")
		}
		if u.CreatedAt.Before(before) || u.CreatedAt.Location() != time.UTC {
			t.Errorf("got created_at %v, want a recent UTC time", u.CreatedAt)
		}

		_, err = s.CreateUser(ctx, "Alice 2", "alice@example.com", "h2")
		if !errors.Is(err, repo.ErrConflict) {
			t.Fatalf("duplicate email: got %v, want ErrConflict", err)
		}

		byEmail, err := s.UserByEmail(ctx, "alice@example.com")
		if err != nil {
			t.Fatalf("by email: %v", err)
		}
		if byEmail != u {
			t.Errorf("by email: got %+v, want %+v", byEmail, u)
		}
		byID, err := s.UserByID(ctx, u.ID)
		if err != nil {
			t.Fatalf("by id: %v", err)
		}
		if byID != u {
			t.Errorf("by id: got %+v, want %+v", byID, u)
		}

		if _, err := s.UserByEmail(ctx, "nobody@example.com"); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("missing email: got %v, want ErrNotFound", err)
		}
		if _, err := s.UserByID(ctx, u.ID+1000); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("missing id: got %v, want ErrNotFound", err)
		}
	})
}

func TestCreateUserConcurrentDuplicate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		const n = 10
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.CreateUser(ctx, fmt.Sprintf("u%d", i), "same@example.com", "h")
			}()
		}
		wg.Wait()
		var ok, conflict int
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, repo.ErrConflict):
				conflict++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		if ok != 1 || conflict != n-1 {
			t.Errorf("got %d successes and %d conflicts, want 1 and %d", ok, conflict, n-1)
		}
	})
}

func TestUsersExist(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		a, b := mustUser(t, s, "a"), mustUser(t, s, "b")
		missing, err := s.UsersExist(ctx, []int64{a.ID, 9999, b.ID, 8888, 9999})
		if err != nil {
			t.Fatalf("users exist: %v", err)
		}
		if want := []int64{9999, 8888}; !slices.Equal(missing, want) {
			t.Errorf("got missing %v, want %v", missing, want)
		}
		missing, err = s.UsersExist(ctx, []int64{a.ID, b.ID})
		if err != nil || len(missing) != 0 {
			t.Errorf("got missing %v, %v, want none", missing, err)
		}
		missing, err = s.UsersExist(ctx, nil)
		if err != nil || len(missing) != 0 {
			t.Errorf("empty ids: got %v, %v, want none", missing, err)
		}
	})
}

func TestSearchUsers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *repo.Store) {
		ctx := context.Background()
		for _, u := range []struct{ name, email string }{
			{"Bob", "bob@example.com"},
			{"alice", "zed@example.com"},
			{"Albert", "albert@example.com"},
			{"Carol", "al_pha@example.com"},
			{"100% Dave", "dave@example.com"},
			{"Xavier", "alxpha@example.com"},
		} {
			if _, err := s.CreateUser(ctx, u.name, u.email, "h"); err != nil {
				t.Fatalf("create %s: %v", u.name, err)
			}
		}
		names := func(q, email string, limit int) []string {
			t.Helper()
			users, err := s.SearchUsers(ctx, q, email, limit)
			if err != nil {
				t.Fatalf("search %q: %v", q, err)
			}
			out := make([]string, len(users))
			for i, u := range users {
				out[i] = u.Name
			}
			return out
		}
		tests := []struct {
			q, email string
			limit    int
			want     []string
		}{
			// Names by prefix only: emails never match a prefix.
			{"AL", "", 10, []string{"Albert", "alice"}},
			{"al", "al", 10, []string{"Albert", "alice"}},
			{"ali", "", 10, []string{"alice"}},
			{"ZED@", "zed@", 10, []string{}},
			{"100%", "", 10, []string{"100% Dave"}},
			{"%", "", 10, []string{}},
			{"_", "", 10, []string{}},
			{"lice", "", 10, []string{}},
			// An exact email finds its user, whatever the name.
			{"zed@example.com", "zed@example.com", 10, []string{"alice"}},
			{"", "al_pha@example.com", 10, []string{"Carol"}},
			{"b", "al_pha@example.com", 10, []string{"Bob", "Carol"}},
			{"a", "", 1, []string{"Albert"}},
			// Nothing asked, nothing answered: no listing of everyone.
			{"", "", 3, []string{}},
			{"", "", 0, []string{}},
		}
		for _, tt := range tests {
			got := names(tt.q, tt.email, tt.limit)
			if !slices.Equal(got, tt.want) {
				t.Errorf("search %q / email %q limit %d: got %v, want %v", tt.q, tt.email, tt.limit, got, tt.want)
			}
		}
	})
}
