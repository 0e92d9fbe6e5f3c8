package handlers

import (
	"context"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

// tokenBody is the answer of a login and of a refresh.
func tokenBody(res chat.LoginResult) gen.Token {
	return gen.Token{
		AccessToken: res.Token, TokenType: gen.Bearer, ExpiresIn: int(res.ExpiresIn / time.Second),
		RefreshToken: res.RefreshToken, SessionID: res.SessionID,
	}
}

// RefreshToken implements POST /token/refresh.
func (s *Server) RefreshToken(ctx context.Context, req gen.RefreshTokenRequestObject) (gen.RefreshTokenResponseObject, error) {
	res, err := s.svc.Refresh(ctx, req.Body.RefreshToken)
	if err != nil {
		return fail(err)
	}
	return gen.RefreshToken200JSONResponse{
		Body:    tokenBody(res),
		Headers: gen.RefreshToken200ResponseHeaders{CacheControl: "no-store"},
	}, nil
}

// Logout implements POST /logout.
func (s *Server) Logout(ctx context.Context, _ gen.LogoutRequestObject) (gen.LogoutResponseObject, error) {
	if err := s.svc.Logout(ctx, principal(ctx)); err != nil {
		return fail(err)
	}
	return gen.Logout204Response{}, nil
}

// ListSessions implements GET /sessions.
func (s *Server) ListSessions(ctx context.Context, _ gen.ListSessionsRequestObject) (gen.ListSessionsResponseObject, error) {
	p := principal(ctx)
	ss, err := s.svc.Sessions(ctx, p.UserID, p.SessionID)
	if err != nil {
		return fail(err)
	}
	out := make(gen.ListSessions200JSONResponse, len(ss))
	for i, x := range ss {
		out[i] = gen.Session{ID: x.ID, Device: x.Device, CreatedAt: x.CreatedAt.UTC(), LastUsedAt: x.LastUsedAt.UTC(), Current: x.Current}
	}
	return out, nil
}

// RevokeSession implements DELETE /sessions/{session_id}.
func (s *Server) RevokeSession(ctx context.Context, req gen.RevokeSessionRequestObject) (gen.RevokeSessionResponseObject, error) {
	if err := s.svc.RevokeSession(ctx, userID(ctx), req.SessionID); err != nil {
		return fail(err)
	}
	return gen.RevokeSession204Response{}, nil
}

// UpdateMe implements PATCH /users/me.
func (s *Server) UpdateMe(ctx context.Context, req gen.UpdateMeRequestObject) (gen.UpdateMeResponseObject, error) {
	u, err := s.svc.UpdateName(ctx, userID(ctx), req.Body.Name)
	if err != nil {
		return fail(err)
	}
	return gen.UpdateMe200JSONResponse(apiUser(u)), nil
}

// ChangePassword implements POST /users/me/password.
func (s *Server) ChangePassword(ctx context.Context, req gen.ChangePasswordRequestObject) (gen.ChangePasswordResponseObject, error) {
	if err := s.svc.ChangePassword(ctx, principal(ctx), req.Body.CurrentPassword, req.Body.NewPassword); err != nil {
		return fail(err)
	}
	return gen.ChangePassword204Response{}, nil
}

// GetUser implements GET /users/{user_id}: anyone's public profile, the
// caller's own included (its email only through GET /users/me).
func (s *Server) GetUser(ctx context.Context, req gen.GetUserRequestObject) (gen.GetUserResponseObject, error) {
	u, err := s.svc.User(ctx, req.UserID)
	if err != nil {
		return fail(err)
	}
	return gen.GetUser200JSONResponse(gen.UserPublic{ID: u.ID, Name: u.Name}), nil
}
