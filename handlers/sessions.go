package handlers

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/windi-chat/windi/gen"
)

// errNotYet answers the session operations until they are implemented.
var errNotYet = echo.NewHTTPError(http.StatusNotImplemented, "not implemented yet")

// RefreshToken implements POST /token/refresh.
func (s *Server) RefreshToken(context.Context, gen.RefreshTokenRequestObject) (gen.RefreshTokenResponseObject, error) {
	return nil, errNotYet
}

// Logout implements POST /logout.
func (s *Server) Logout(context.Context, gen.LogoutRequestObject) (gen.LogoutResponseObject, error) {
	return nil, errNotYet
}

// ListSessions implements GET /sessions.
func (s *Server) ListSessions(context.Context, gen.ListSessionsRequestObject) (gen.ListSessionsResponseObject, error) {
	return nil, errNotYet
}

// RevokeSession implements DELETE /sessions/{session_id}.
func (s *Server) RevokeSession(context.Context, gen.RevokeSessionRequestObject) (gen.RevokeSessionResponseObject, error) {
	return nil, errNotYet
}

// UpdateMe implements PATCH /users/me.
func (s *Server) UpdateMe(context.Context, gen.UpdateMeRequestObject) (gen.UpdateMeResponseObject, error) {
	return nil, errNotYet
}

// ChangePassword implements POST /users/me/password.
func (s *Server) ChangePassword(context.Context, gen.ChangePasswordRequestObject) (gen.ChangePasswordResponseObject, error) {
	return nil, errNotYet
}

// GetUser implements GET /users/{user_id}.
func (s *Server) GetUser(context.Context, gen.GetUserRequestObject) (gen.GetUserResponseObject, error) {
	return nil, errNotYet
}
