package handlers

import (
	"context"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

// SearchMessages implements GET /search.
func (s *Server) SearchMessages(ctx context.Context, req gen.SearchMessagesRequestObject) (gen.SearchMessagesResponseObject, error) {
	p := req.Params
	q := chat.SearchQuery{Q: p.Q, ChatID: p.ChatID, BeforeSeq: p.BeforeSeq, BeforeID: p.BeforeID, Limit: chat.DefaultSearchLimit}
	if p.Limit != nil {
		q.Limit = *p.Limit
	}
	hits, err := s.svc.Search(ctx, userID(ctx), q)
	if err != nil {
		return fail(err)
	}
	out := make(gen.SearchMessages200JSONResponse, len(hits))
	for i, h := range hits {
		out[i] = gen.SearchHit{ChatID: h.ChatID, Message: h.Message.API()}
	}
	return out, nil
}
