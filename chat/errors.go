package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Code classifies a rule violation. REST maps each code to an HTTP status and
// a problem code, WebSocket to an error frame code; both tables live at the
// boundary, this package only says what went wrong.
type Code string

// The codes the service returns.
const (
	CodeInvalid           Code = "invalid"         // a field is missing or invalid (422, bad_request)
	CodeTooLarge          Code = "too_large"       // text over the limit (422, too_large)
	CodeUnauthorized      Code = "unauthorized"    // bad credentials (401)
	CodeSessionRevoked    Code = "session_revoked" // an access token of a revoked session (401)
	CodeForbidden         Code = "forbidden"       // not a member, not the owner (403)
	CodeNotFound          Code = "not_found"       // no such chat or user (404)
	CodeEmailTaken        Code = "email_taken"     // registration conflict (409)
	CodeNotAGroup         Code = "not_a_group"     // a group operation on a private chat (409)
	CodeOwnerNotRemovable Code = "owner_cannot_be_removed"
	CodeGroupFull         Code = "group_full"         // over the member limit (409)
	CodeMessageDeleted    Code = "message_deleted"    // an edit or reaction of a deleted message (409)
	CodeTooManyReactions  Code = "too_many_reactions" // the message has 20 distinct emoji (422)
	CodeRateLimited       Code = "rate_limited"       // too many attempts (429)
	CodeUnavailable       Code = "unavailable"        // database or broker down; nothing stored (503)
)

// Error is a rule violation with a client-safe message. Field names the
// offending input where there is one; Fields lists every offending input
// when a request breaks several rules at once (Field and Message are then
// the first of them).
type Error struct {
	Code    Code
	Message string
	Field   string
	Fields  []FieldError
	// RetryAfter tells a rate-limited caller when to try again.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// FieldError is one offending input of a CodeInvalid error.
type FieldError struct {
	Field, Message string
}

// fieldErrors collects the rule violations of one request, so that a
// client learns every field to fix at once.
type fieldErrors []FieldError

func (fe *fieldErrors) add(err *Error) {
	*fe = append(*fe, FieldError{Field: err.Field, Message: err.Message})
}

// err is nil when nothing was added, else one CodeInvalid error naming
// every field.
func (fe fieldErrors) err() error {
	if len(fe) == 0 {
		return nil
	}
	msgs := make([]string, len(fe))
	for i, f := range fe {
		msgs[i] = f.Message
	}
	return &Error{Code: CodeInvalid, Field: fe[0].Field, Message: strings.Join(msgs, "; "), Fields: fe}
}

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns err's code, or "" for an unexpected error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
