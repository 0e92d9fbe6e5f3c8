package repo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// insertMessagesPG is InsertMessages' transaction on Postgres, in two round
// trips instead of one per statement: BEGIN and the reads (lock, repeats,
// watermarks) go out as one pipelined pgx batch; the seqs are allocated
// here (planSends, as on SQLite); then the writes (counters, insert,
// watermarks) and COMMIT go out as a second batch. The statements are
// rendered by Bun, as everywhere else; only their transport differs.
//
// Why not Bun's transaction: database/sql sends each statement and waits
// for its answer, so a batch cost eight round trips, each of them a wakeup
// of the Postgres backend and of this process. The commit's fsync is paid
// once either way.
func (s *Store) insertMessagesPG(ctx context.Context, reqs []SendRequest, chatIDs []int64, assumeNew bool) ([]SendResult, error) {
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var out []SendResult
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("repo: unexpected driver connection %T", dc)
		}
		pc := sc.Conn()
		p, err := s.readBatch(ctx, pc, reqs, chatIDs, assumeNew)
		if err == nil {
			err = s.writeBatch(ctx, pc, p)
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

// readBatch begins the transaction and reads what planSends needs.
func (s *Store) readBatch(ctx context.Context, pc *pgx.Conn, reqs []SendRequest, chatIDs []int64, assumeNew bool) (*sendPlan, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockQuery(s.db, chatIDs, true).String())
	if !assumeNew {
		b.Queue(existingQuery(s.db, reqs, &[]Message{}).String())
	}
	b.Queue(marksQuery(s.db, reqs).String())
	br := pc.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	heads, err := collect(br, func(r pgx.Rows) (h ChatHead, err error) {
		err = r.Scan(&h.ChatID, &h.LastSeq)
		return h, err
	})
	if err != nil {
		return nil, err
	}
	var existing []Message
	if !assumeNew {
		existing, err = collect(br, func(r pgx.Rows) (m Message, err error) {
			err = r.Scan(&m.ID, &m.ChatID, &m.Seq, &m.SenderID, &m.Text, &m.ClientMsgID, &m.CreatedAt)
			m.CreatedAt = m.CreatedAt.UTC()
			return m, err
		})
		if err != nil {
			return nil, err
		}
	}
	marks, err := collect(br, func(r pgx.Rows) (m markRow, err error) {
		err = r.Scan(&m.ChatID, &m.UserID, &m.Mark)
		return m, err
	})
	if err != nil {
		return nil, err
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	return planSends(reqs, heads, existing, marks), nil
}

// writeBatch writes the plan and commits.
func (s *Store) writeBatch(ctx context.Context, pc *pgx.Conn, p *sendPlan) error {
	b := &pgx.Batch{}
	if len(p.fresh) > 0 {
		b.Queue(countersQuery(s.db, p).String())
		b.Queue(s.db.NewInsert().Model(&p.msgs).Returning("id").String())
		b.Queue(watermarksQuery(s.db, p).String())
	}
	b.Queue("COMMIT")
	br := pc.SendBatch(ctx, b)
	defer br.Close()
	if len(p.fresh) > 0 {
		if _, err := br.Exec(); err != nil {
			return err
		}
		ids, err := collect(br, func(r pgx.Rows) (id int64, err error) {
			err = r.Scan(&id)
			return id, err
		})
		if err != nil {
			return err
		}
		if len(ids) != len(p.fresh) {
			return fmt.Errorf("repo: insert returned %d ids for %d messages", len(ids), len(p.fresh))
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		p.inserted(ids)
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return err
	}
	return br.Close()
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
