package migrations

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
	"golang.org/x/text/unicode/norm"
)

// Migration 00002 rewrites stored emails into the form chat.NormalizeEmail
// gives since it applies Unicode NFKC (issue 15): before, addresses were only
// trimmed and lowercased, so "ﬁnn@example.com" (with the ligature) was
// stored as typed, and a later "finn@example.com" could register beside it
// and shadow it at login. It is Go, not SQL, because neither database
// normalizes Unicode the same way; one function serves both dialects.
//
// ASCII addresses, nearly all of them, are already in normal form and are
// not touched. An address whose normal form another account already holds
// keeps its old form (the unique index forbids two), and still logs in
// through the old form.
//
// The rule is copied here rather than imported from package chat: a
// migration must keep doing what it did when it shipped, whatever the rule
// becomes later.
func registerNFKCEmails(ms *migrate.Migrations) error {
	return ms.Register(nfkcEmailsUp, nfkcEmailsDown)
}

func nfkcEmail(s string) string {
	return norm.NFKC.String(strings.ToLower(norm.NFKC.String(strings.TrimSpace(s))))
}

func nfkcEmailsUp(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var rows []struct {
			ID    int64  `bun:"id"`
			Email string `bun:"email"`
		}
		if err := tx.NewSelect().Table("users").Column("id", "email").Order("id").Scan(ctx, &rows); err != nil {
			return fmt.Errorf("read emails: %w", err)
		}
		for _, r := range rows {
			n := nfkcEmail(r.Email)
			if n == r.Email {
				continue
			}
			taken, err := tx.NewSelect().Table("users").Where("email = ?", n).Exists(ctx)
			if err != nil {
				return fmt.Errorf("check email of user %d: %w", r.ID, err)
			}
			if taken {
				continue
			}
			if _, err := tx.NewUpdate().Table("users").Set("email = ?", n).Where("id = ?", r.ID).Exec(ctx); err != nil {
				return fmt.Errorf("normalize email of user %d: %w", r.ID, err)
			}
		}
		return nil
	})
}

// nfkcEmailsDown keeps the normalized emails: the old form is not
// recoverable, and the code before this migration finds an account by its
// normalized email as long as the user types it that way.
func nfkcEmailsDown(context.Context, *bun.DB) error { return nil }
