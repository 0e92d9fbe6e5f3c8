package handlers

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
)

// problem is an RFC 9457 response. It satisfies every generated response
// interface, so a handler returns the documented problem for any status the
// spec lists without a type per operation and status.
type problem struct {
	gen.Problem
	retryAfter int // seconds; sent as Retry-After when > 0
}

// statusOf is the one table from service codes to HTTP status and problem
// code.
var statusOf = map[chat.Code]struct {
	status int
	code   gen.ProblemCode
}{
	chat.CodeInvalid:           {http.StatusUnprocessableEntity, gen.ProblemCodeValidationFailed},
	chat.CodeTooLarge:          {http.StatusUnprocessableEntity, gen.ProblemCodeValidationFailed},
	chat.CodeUnauthorized:      {http.StatusUnauthorized, gen.ProblemCodeInvalidCredentials},
	chat.CodeSessionRevoked:    {http.StatusUnauthorized, gen.ProblemCodeSessionRevoked},
	chat.CodeForbidden:         {http.StatusForbidden, gen.ProblemCodeForbidden},
	chat.CodeNotFound:          {http.StatusNotFound, gen.ProblemCodeNotFound},
	chat.CodeEmailTaken:        {http.StatusConflict, gen.ProblemCodeEmailTaken},
	chat.CodeNotAGroup:         {http.StatusConflict, gen.ProblemCodeNotAGroup},
	chat.CodeOwnerNotRemovable: {http.StatusConflict, gen.ProblemCodeOwnerCannotBeRemoved},
	chat.CodeGroupFull:         {http.StatusConflict, gen.ProblemCodeGroupFull},
	chat.CodeMessageDeleted:    {http.StatusConflict, gen.ProblemCodeMessageDeleted},
	chat.CodeTooManyReactions:  {http.StatusUnprocessableEntity, gen.ProblemCodeTooManyReactions},
	chat.CodeRateLimited:       {http.StatusTooManyRequests, gen.ProblemCodeRateLimited},
	chat.CodeUnavailable:       {http.StatusServiceUnavailable, gen.ProblemCodeUnavailable},
}

func newProblem(status int, code gen.ProblemCode, detail string) *problem {
	p := &problem{Problem: gen.Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Code: code}}
	if detail != "" {
		p.Detail = &detail
	}
	return p
}

// problemFor converts a service error into its problem, or returns nil for an
// unexpected error, which the caller passes on as an error (a 500).
func problemFor(err error) *problem {
	var ce *chat.Error
	if !errors.As(err, &ce) {
		return nil
	}
	m, ok := statusOf[ce.Code]
	if !ok {
		return nil
	}
	p := newProblem(m.status, m.code, ce.Message)
	switch {
	case len(ce.Fields) > 0:
		errs := make([]gen.FieldError, len(ce.Fields))
		for i, f := range ce.Fields {
			errs[i] = gen.FieldError{Field: f.Field, Message: f.Message}
		}
		p.Errors = &errs
	case ce.Field != "":
		p.Errors = &[]gen.FieldError{{Field: ce.Field, Message: ce.Message}}
	}
	if ce.Code == chat.CodeRateLimited || ce.Code == chat.CodeUnavailable && ce.RetryAfter > 0 {
		p.retryAfter = max(1, int((ce.RetryAfter+time.Second-1)/time.Second))
	}
	return p
}

func (p *problem) write(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/problem+json")
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	if p.Status == http.StatusUnauthorized {
		// RFC 9110 §15.5.2: a 401 names the scheme that would work.
		w.Header().Set("WWW-Authenticate", `Bearer realm="windi"`)
	}
	w.WriteHeader(p.Status)
	return json.NewEncoder(w).Encode(p.Problem)
}

func (p *problem) VisitListChatsResponse(w http.ResponseWriter) error         { return p.write(w) }
func (p *problem) VisitCreateChatResponse(w http.ResponseWriter) error        { return p.write(w) }
func (p *problem) VisitGetChatResponse(w http.ResponseWriter) error           { return p.write(w) }
func (p *problem) VisitSendMessageResponse(w http.ResponseWriter) error       { return p.write(w) }
func (p *problem) VisitGetPresenceResponse(w http.ResponseWriter) error       { return p.write(w) }
func (p *problem) VisitMarkReadResponse(w http.ResponseWriter) error          { return p.write(w) }
func (p *problem) VisitAddGroupMemberResponse(w http.ResponseWriter) error    { return p.write(w) }
func (p *problem) VisitRemoveGroupMemberResponse(w http.ResponseWriter) error { return p.write(w) }
func (p *problem) VisitHealthzResponse(w http.ResponseWriter) error           { return p.write(w) }
func (p *problem) VisitGetHistoryResponse(w http.ResponseWriter) error        { return p.write(w) }
func (p *problem) VisitLoginResponse(w http.ResponseWriter) error             { return p.write(w) }
func (p *problem) VisitReadyzResponse(w http.ResponseWriter) error            { return p.write(w) }
func (p *problem) VisitRegisterResponse(w http.ResponseWriter) error          { return p.write(w) }
func (p *problem) VisitSearchUsersResponse(w http.ResponseWriter) error       { return p.write(w) }
func (p *problem) VisitGetMeResponse(w http.ResponseWriter) error             { return p.write(w) }
func (p *problem) VisitEditMessageResponse(w http.ResponseWriter) error       { return p.write(w) }
func (p *problem) VisitDeleteMessageResponse(w http.ResponseWriter) error     { return p.write(w) }
func (p *problem) VisitAddReactionResponse(w http.ResponseWriter) error       { return p.write(w) }
func (p *problem) VisitRemoveReactionResponse(w http.ResponseWriter) error    { return p.write(w) }
func (p *problem) VisitSearchMessagesResponse(w http.ResponseWriter) error    { return p.write(w) }
func (p *problem) VisitRefreshTokenResponse(w http.ResponseWriter) error      { return p.write(w) }
func (p *problem) VisitLogoutResponse(w http.ResponseWriter) error            { return p.write(w) }
func (p *problem) VisitListSessionsResponse(w http.ResponseWriter) error      { return p.write(w) }
func (p *problem) VisitRevokeSessionResponse(w http.ResponseWriter) error     { return p.write(w) }
func (p *problem) VisitUpdateMeResponse(w http.ResponseWriter) error          { return p.write(w) }
func (p *problem) VisitChangePasswordResponse(w http.ResponseWriter) error    { return p.write(w) }
func (p *problem) VisitGetUserResponse(w http.ResponseWriter) error           { return p.write(w) }
