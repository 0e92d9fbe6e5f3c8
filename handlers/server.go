// Package handlers implements WinDI Chat's REST API: the strict server
// interface generated from api/openapi.yaml, request validation against the
// same spec, bearer authentication, and RFC 9457 problems for every error.
// It holds no SQL and no chat rules; those live in package chat.
package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/repo"
)

// Checker is a dependency /readyz checks: the database, the broker.
type Checker interface {
	Name() string
	Check(ctx context.Context) error
}

// Server implements gen.StrictServerInterface on top of chat.Service.
type Server struct {
	svc    *chat.Service
	checks []Checker
}

var _ gen.StrictServerInterface = (*Server)(nil)

// NewServer returns a Server; checks are what /readyz verifies.
func NewServer(svc *chat.Service, checks ...Checker) *Server {
	return &Server{svc: svc, checks: checks}
}

type ctxKey struct{}

// withPrincipal returns ctx carrying who the request's token speaks for.
func withPrincipal(ctx context.Context, p chat.Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// principal is who the request's token speaks for: user and session. The
// validator's authentication function guarantees it on every operation
// that requires security.
func principal(ctx context.Context) chat.Principal {
	p, _ := ctx.Value(ctxKey{}).(chat.Principal)
	return p
}

// userID is the authenticated user's id.
func userID(ctx context.Context) int64 { return principal(ctx).UserID }

func apiUser(u repo.User) gen.User {
	return gen.User{ID: u.ID, Name: u.Name, Email: u.Email, CreatedAt: u.CreatedAt.UTC()}
}

// fail converts err into a documented problem response or passes an
// unexpected error on to the error handler (500).
func fail(err error) (*problem, error) {
	if p := problemFor(err); p != nil {
		return p, nil
	}
	return nil, err
}

// Register implements POST /register.
func (s *Server) Register(ctx context.Context, req gen.RegisterRequestObject) (gen.RegisterResponseObject, error) {
	u, err := s.svc.Register(ctx, req.Body.Name, string(req.Body.Email), req.Body.Password)
	if err != nil {
		return fail(err)
	}
	return gen.Register201JSONResponse(apiUser(u)), nil
}

// Login implements POST /login (OAuth2 password flow).
func (s *Server) Login(ctx context.Context, req gen.LoginRequestObject) (gen.LoginResponseObject, error) {
	device := ""
	if req.Body.Device != nil {
		device = *req.Body.Device
	}
	res, err := s.svc.Login(ctx, req.Body.Username, req.Body.Password, device)
	if err != nil {
		return fail(err)
	}
	return gen.Login200JSONResponse{
		Body: tokenBody(res),
		// No cache, private or shared, may keep a token (RFC 6749 §5.1).
		Headers: gen.Login200ResponseHeaders{CacheControl: "no-store"},
	}, nil
}

// GetMe implements GET /users/me.
func (s *Server) GetMe(ctx context.Context, _ gen.GetMeRequestObject) (gen.GetMeResponseObject, error) {
	u, err := s.svc.Me(ctx, userID(ctx))
	if err != nil {
		return fail(err)
	}
	return gen.GetMe200JSONResponse(apiUser(u)), nil
}

// SearchUsers implements GET /users.
func (s *Server) SearchUsers(ctx context.Context, req gen.SearchUsersRequestObject) (gen.SearchUsersResponseObject, error) {
	q, limit := req.Params.Q, 20
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	us, err := s.svc.SearchUsers(ctx, q, limit)
	if err != nil {
		return fail(err)
	}
	out := make(gen.SearchUsers200JSONResponse, len(us))
	for i, u := range us {
		out[i] = gen.UserPublic{ID: u.ID, Name: u.Name}
	}
	return out, nil
}

// ListChats implements GET /chats.
func (s *Server) ListChats(ctx context.Context, _ gen.ListChatsRequestObject) (gen.ListChatsResponseObject, error) {
	vs, err := s.svc.ListChats(ctx, userID(ctx))
	if err != nil {
		return fail(err)
	}
	out := make(gen.ListChats200JSONResponse, len(vs))
	for i, v := range vs {
		out[i] = v.API()
	}
	return out, nil
}

// CreateChat implements POST /chats.
func (s *Server) CreateChat(ctx context.Context, req gen.CreateChatRequestObject) (gen.CreateChatResponseObject, error) {
	body, err := req.Body.ValueByDiscriminator()
	if err != nil {
		return newProblem(422, gen.ProblemCodeValidationFailed, "type must be private or group"), nil
	}
	me := userID(ctx)
	switch b := body.(type) {
	case gen.CreatePrivateChat:
		v, created, err := s.svc.OpenPrivate(ctx, me, b.UserID)
		if err != nil {
			return fail(err)
		}
		if created {
			return gen.CreateChat201JSONResponse(v.API()), nil
		}
		return gen.CreateChat200JSONResponse(v.API()), nil
	case gen.CreateGroupChat:
		var ids []int64
		if b.MemberIds != nil {
			ids = *b.MemberIds
		}
		v, err := s.svc.CreateGroup(ctx, me, b.Name, ids)
		if err != nil {
			return fail(err)
		}
		return gen.CreateChat201JSONResponse(v.API()), nil
	}
	return newProblem(422, gen.ProblemCodeValidationFailed, "type must be private or group"), nil
}

// GetChat implements GET /chats/{chat_id}.
func (s *Server) GetChat(ctx context.Context, req gen.GetChatRequestObject) (gen.GetChatResponseObject, error) {
	v, err := s.svc.GetChat(ctx, userID(ctx), req.ChatID)
	if err != nil {
		return fail(err)
	}
	return gen.GetChat200JSONResponse(v.API()), nil
}

// GetHistory implements GET /history/{chat_id}.
func (s *Server) GetHistory(ctx context.Context, req gen.GetHistoryRequestObject) (gen.GetHistoryResponseObject, error) {
	q := chat.HistoryQuery{Limit: 50, AfterSeq: req.Params.AfterSeq, BeforeSeq: req.Params.BeforeSeq, AfterRev: req.Params.AfterRev}
	if req.Params.Limit != nil {
		q.Limit = *req.Params.Limit
	}
	if req.Params.Offset != nil {
		q.Offset = *req.Params.Offset
	}
	ms, err := s.svc.History(ctx, userID(ctx), req.ChatID, q)
	if err != nil {
		return fail(err)
	}
	out := make(gen.GetHistory200JSONResponse, len(ms))
	for i, m := range ms {
		out[i] = m.API()
	}
	return out, nil
}

// SendMessage implements POST /chats/{chat_id}/messages.
func (s *Server) SendMessage(ctx context.Context, req gen.SendMessageRequestObject) (gen.SendMessageResponseObject, error) {
	if err := s.svc.AllowUserSend(ctx, userID(ctx)); err != nil {
		return fail(err)
	}
	m, dup, err := s.svc.Send(ctx, userID(ctx), req.ChatID, req.Body.ClientMsgID, req.Body.Text, req.Body.ReplyToSeq)
	if err != nil {
		return fail(err)
	}
	if dup {
		return gen.SendMessage200JSONResponse(m.API()), nil
	}
	return gen.SendMessage201JSONResponse(m.API()), nil
}

// EditMessage implements PATCH /chats/{chat_id}/messages/{seq}.
func (s *Server) EditMessage(ctx context.Context, req gen.EditMessageRequestObject) (gen.EditMessageResponseObject, error) {
	m, err := s.svc.Edit(ctx, userID(ctx), req.ChatID, req.Seq, req.Body.Text)
	if err != nil {
		return fail(err)
	}
	return gen.EditMessage200JSONResponse(m.API()), nil
}

// DeleteMessage implements DELETE /chats/{chat_id}/messages/{seq}.
func (s *Server) DeleteMessage(ctx context.Context, req gen.DeleteMessageRequestObject) (gen.DeleteMessageResponseObject, error) {
	m, err := s.svc.Delete(ctx, userID(ctx), req.ChatID, req.Seq)
	if err != nil {
		return fail(err)
	}
	return gen.DeleteMessage200JSONResponse(m.API()), nil
}

// AddReaction implements PUT /chats/{chat_id}/messages/{seq}/reactions/{emoji}.
func (s *Server) AddReaction(ctx context.Context, req gen.AddReactionRequestObject) (gen.AddReactionResponseObject, error) {
	m, err := s.svc.React(ctx, userID(ctx), req.ChatID, req.Seq, req.Emoji, true)
	if err != nil {
		return fail(err)
	}
	return gen.AddReaction200JSONResponse(m.API()), nil
}

// RemoveReaction implements DELETE /chats/{chat_id}/messages/{seq}/reactions/{emoji}.
func (s *Server) RemoveReaction(ctx context.Context, req gen.RemoveReactionRequestObject) (gen.RemoveReactionResponseObject, error) {
	m, err := s.svc.React(ctx, userID(ctx), req.ChatID, req.Seq, req.Emoji, false)
	if err != nil {
		return fail(err)
	}
	return gen.RemoveReaction200JSONResponse(m.API()), nil
}

// MarkRead implements POST /chats/{chat_id}/read.
func (s *Server) MarkRead(ctx context.Context, req gen.MarkReadRequestObject) (gen.MarkReadResponseObject, error) {
	if _, err := s.svc.MarkRead(ctx, userID(ctx), req.ChatID, req.Body.Seq); err != nil {
		return fail(err)
	}
	return gen.MarkRead204Response{}, nil
}

// GetPresence implements GET /chats/{chat_id}/presence.
func (s *Server) GetPresence(ctx context.Context, req gen.GetPresenceRequestObject) (gen.GetPresenceResponseObject, error) {
	ids, err := s.svc.Presence(ctx, userID(ctx), req.ChatID)
	if err != nil {
		return fail(err)
	}
	return gen.GetPresence200JSONResponse(ids), nil
}

// AddGroupMember implements POST /groups/{group_id}/add_user/{user_id}.
func (s *Server) AddGroupMember(ctx context.Context, req gen.AddGroupMemberRequestObject) (gen.AddGroupMemberResponseObject, error) {
	changed, err := s.svc.AddMember(ctx, userID(ctx), req.GroupID, req.UserID)
	if err != nil {
		return fail(err)
	}
	return gen.AddGroupMember200JSONResponse{ChatID: req.GroupID, UserID: req.UserID, Member: true, Changed: changed}, nil
}

// RemoveGroupMember implements POST /groups/{group_id}/remove_user/{user_id}.
func (s *Server) RemoveGroupMember(ctx context.Context, req gen.RemoveGroupMemberRequestObject) (gen.RemoveGroupMemberResponseObject, error) {
	changed, err := s.svc.RemoveMember(ctx, userID(ctx), req.GroupID, req.UserID)
	if err != nil {
		return fail(err)
	}
	return gen.RemoveGroupMember200JSONResponse{ChatID: req.GroupID, UserID: req.UserID, Member: false, Changed: changed}, nil
}

// Healthz implements GET /healthz: the process answers.
func (s *Server) Healthz(context.Context, gen.HealthzRequestObject) (gen.HealthzResponseObject, error) {
	return gen.Healthz200JSONResponse{Status: gen.HealthStatusOk}, nil
}

// Readyz implements GET /readyz: every dependency answers within a second.
func (s *Server) Readyz(ctx context.Context, _ gen.ReadyzRequestObject) (gen.ReadyzResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	checks := map[string]string{}
	var failed error
	for _, c := range s.checks {
		if err := c.Check(ctx); err != nil {
			checks[c.Name()] = "unavailable"
			failed = errors.Join(failed, err)
			continue
		}
		checks[c.Name()] = "ok"
	}
	if failed != nil {
		return gen.Readyz503JSONResponse{Status: gen.HealthStatusUnavailable, Checks: &checks}, nil
	}
	return gen.Readyz200JSONResponse{Status: gen.HealthStatusOk, Checks: &checks}, nil
}
