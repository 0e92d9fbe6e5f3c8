package repo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// applyPG is Apply's transaction on Postgres, in two round trips instead
// of one per statement: BEGIN and the reads go out as one pipelined pgx
// batch; the plan is made here (plan, as on SQLite); then the writes and
// COMMIT go out as a second batch. The statements are rendered by Bun, as
// everywhere else; only their transport differs.
//
// Why not Bun's transaction: database/sql sends each statement and waits
// for its answer, so a batch cost one round trip per statement, each a
// wakeup of the Postgres backend and of this process. The commit's fsync is
// paid once either way.
func (s *Store) applyPG(ctx context.Context, ops []Op, r *batchReads, assumeNew bool) ([]OpResult, error) {
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var out []OpResult
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("repo: unexpected driver connection %T", dc)
		}
		pc := sc.Conn()
		p, err := s.readBatch(ctx, pc, ops, r, assumeNew)
		if err == nil {
			// The writes travel with COMMIT: a connection that breaks now
			// may have committed them, a statement that failed did not.
			if err = s.writeBatch(ctx, pc, p); err != nil && isUnavailable(err) {
				err = fmt.Errorf("%w: %w", ErrInDoubt, err)
			}
		}
		if err != nil {
			// Whatever state the transaction is in, end it; on a broken
			// connection this fails too and database/sql discards the
			// connection (pgx's stdlib reports it invalid).
			_, _ = pc.Exec(context.WithoutCancel(ctx), "ROLLBACK")
			return err
		}
		out = p.out
		return nil
	})
	return out, err
}

// readBatch begins the transaction and reads what plan needs.
func (s *Store) readBatch(ctx context.Context, pc *pgx.Conn, ops []Op, r *batchReads, assumeNew bool) (*batchPlan, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockQuery(s.db, r.chatIDs, true).String())
	if !assumeNew {
		b.Queue(existingQuery(s.db, ops, &[]Message{}).String())
	}
	b.Queue(marksQuery(s.db, r).String())
	if len(r.targets) > 0 {
		b.Queue(targetsQuery(s.db, r, &[]Message{}).String())
		b.Queue(reactionsQuery(s.db, r.targets, &[]reactionRow{}).String())
	}
	br := pc.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	heads, err := collect(br, func(row pgx.Rows) (h chatLock, err error) {
		err = row.Scan(&h.ChatID, &h.LastSeq, &h.LastRev, &h.Type)
		return h, err
	})
	if err != nil {
		return nil, err
	}
	var existing, targets []Message
	if !assumeNew {
		if existing, err = collect(br, scanMessage); err != nil {
			return nil, err
		}
	}
	marks, err := collect(br, func(row pgx.Rows) (m markRow, err error) {
		err = row.Scan(&m.ChatID, &m.UserID, &m.Mark, &m.Role)
		return m, err
	})
	if err != nil {
		return nil, err
	}
	var reactions []reactionRow
	if len(r.targets) > 0 {
		if targets, err = collect(br, scanMessage); err != nil {
			return nil, err
		}
		reactions, err = collect(br, func(row pgx.Rows) (x reactionRow, err error) {
			err = row.Scan(&x.ChatID, &x.Seq, &x.Emoji, &x.UserID, &x.AddedRev)
			return x, err
		})
		if err != nil {
			return nil, err
		}
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	return plan(ops, heads, existing, marks, targets, reactions), nil
}

// scanMessage reads a row of messageColumns.
func scanMessage(row pgx.Rows) (m Message, err error) {
	err = row.Scan(&m.ID, &m.ChatID, &m.Seq, &m.SenderID, &m.Text, &m.ClientMsgID, &m.CreatedAt,
		&m.Rev, &m.CreatedRev, &m.EditedAt, &m.Deleted, &m.ReplyToSeq)
	if err == nil {
		err = m.AfterScanRow(context.Background())
	}
	return m, err
}

// writeBatch writes the plan and commits.
func (s *Store) writeBatch(ctx context.Context, pc *pgx.Conn, p *batchPlan) error {
	b := &pgx.Batch{}
	ws := p.writes(s.db)
	for _, w := range ws {
		if w.returning {
			b.Queue(w.insert.String())
		} else {
			b.Queue(w.raw.String())
		}
	}
	b.Queue("COMMIT")
	br := pc.SendBatch(ctx, b)
	defer br.Close()
	var ids []int64
	for _, w := range ws {
		if !w.returning {
			if _, err := br.Exec(); err != nil {
				return err
			}
			continue
		}
		var err error
		ids, err = collect(br, func(row pgx.Rows) (id int64, err error) {
			err = row.Scan(&id)
			return id, err
		})
		if err != nil {
			return err
		}
		if len(ids) != len(p.msgs) {
			return fmt.Errorf("repo: insert returned %d ids for %d messages", len(ids), len(p.msgs))
		}
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return err
	}
	if err := br.Close(); err != nil {
		return err
	}
	p.fill(ids)
	return nil
}

// collect reads the rows of the batch's next query.
func collect[T any](br pgx.BatchResults, scan func(pgx.Rows) (T, error)) ([]T, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
