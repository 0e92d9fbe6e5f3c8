package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/windi-chat/windi/repo"
)

// LoseCommitAnswers makes s's sequencer lose the answer of every commit,
// as when Postgres stops under a COMMIT: with committed, the batch is
// applied and its answer lost; without, it is not applied; either way the
// sequencer sees repo.ErrInDoubt. It asks the database for the outcome for
// at most wait.
func LoseCommitAnswers(s *Service, committed bool, wait time.Duration) {
	real := s.seq.apply
	s.seq.inDoubtWait = wait
	s.seq.apply = func(ctx context.Context, ops []repo.Op, o repo.ApplyOptions) ([]repo.OpResult, error) {
		if committed {
			if _, err := real(ctx, ops, o); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("repo: apply: %w: %w: connection lost", repo.ErrUnavailable, repo.ErrInDoubt)
	}
}
