package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echomw "github.com/oapi-codegen/echo-middleware"

	"github.com/windi-chat/windi/chat"
	"github.com/windi-chat/windi/gen"
	"github.com/windi-chat/windi/metrics"
)

// MaxBodyBytes is the request body limit (SPEC §5).
const MaxBodyBytes = 64 << 10

// Options configures Mount.
type Options struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Unvalidated lists path prefixes served outside the spec (WebSocket,
	// docs, metrics, the web client); the request validator skips them.
	// "/" stands for the root path alone, not for every path.
	Unvalidated []string
}

// Mount installs the middleware chain and the REST API on e: request ids,
// request logs, panic recovery, the body limit, validation and
// authentication against api/openapi.yaml, and RFC 9457 errors for
// everything, unknown routes and 405 included.
func Mount(e *echo.Echo, srv *Server, svc *chat.Service, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "http")
	spec, err := gen.GetSpec()
	if err != nil {
		return fmt.Errorf("load embedded spec: %w", err)
	}
	spec.Servers = nil

	e.HTTPErrorHandler = errorHandler(log)
	e.Use(middleware.RequestID())
	e.Use(requestLog(log, opts.Metrics))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("panic recovered", "event", "http.panic", "err", err, "request_id", requestID(c), "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", MaxBodyBytes)))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// The client IP, for per-IP limits: X-Forwarded-For is trusted
			// only from loopback and private addresses (the proxy).
			r := c.Request()
			c.SetRequest(r.WithContext(chat.WithClientIP(r.Context(), c.RealIP())))
			return next(c)
		}
	})
	e.Use(securityHeaders)

	skip := func(c echo.Context) bool {
		p := c.Request().URL.Path
		for _, prefix := range opts.Unvalidated {
			if p == prefix || prefix != "/" && strings.HasPrefix(p, prefix+"/") {
				return true
			}
		}
		return false
	}
	e.Use(echomw.OapiRequestValidatorWithOptions(spec, &echomw.Options{
		Skipper:               skip,
		DoNotValidateServers:  true,
		SilenceServersWarning: true,
		ErrorHandler:          validationError,
		MultiErrorHandler: func(me openapi3.MultiError) *echo.HTTPError {
			return &echo.HTTPError{Code: http.StatusBadRequest, Message: firstLine(me.Error()), Internal: me}
		},
		Options: openapi3filter.Options{
			AuthenticationFunc: authenticate(svc),
		},
	}))
	gen.RegisterHandlers(e, gen.NewStrictHandler(srv, nil))
	return nil
}

// BearerToken returns the token of an `Authorization: Bearer` header, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate checks the bearer token for operations that require one and
// puts the user id into the request context for the handlers.
func authenticate(svc *chat.Service) openapi3filter.AuthenticationFunc {
	return func(ctx context.Context, _ *openapi3filter.AuthenticationInput) error {
		c := echomw.GetEchoContext(ctx)
		if c == nil {
			return echo.NewHTTPError(http.StatusInternalServerError, "no echo context")
		}
		if _, ok := c.Request().Context().Value(ctxKey{}).(int64); ok {
			return nil // an earlier security alternative already authenticated
		}
		token := BearerToken(c.Request())
		if token == "" {
			return echo.NewHTTPError(http.StatusUnauthorized, "missing bearer token")
		}
		id, _, err := svc.Authenticate(c.Request().Context(), token)
		if err != nil {
			if chat.CodeOf(err) == chat.CodeUnavailable {
				return echo.NewHTTPError(http.StatusServiceUnavailable, "storage is unavailable")
			}
			if chat.CodeOf(err) == "" {
				return echo.NewHTTPError(http.StatusInternalServerError).SetInternal(err)
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "invalid or expired token")
		}
		c.SetRequest(c.Request().WithContext(withUser(c.Request().Context(), id)))
		return nil
	}
}

// validationError turns the validator's verdict into a problem: schema
// violations are 422 with the offending field, unparseable input 400.
func validationError(c echo.Context, he *echo.HTTPError) error {
	if he.Code != http.StatusBadRequest {
		return he
	}
	var re *openapi3filter.RequestError
	var me openapi3.MultiError
	if errors.As(he.Internal, &me) {
		// A oneOf body reports every branch; the first schema error names the
		// field.
		for _, err := range me {
			var se *openapi3.SchemaError
			if errors.As(err, &se) {
				field := strings.Join(se.JSONPointer(), ".")
				return writeProblem(c, validationProblem(field, schemaMessage(field, se)))
			}
		}
		return writeProblem(c, validationProblem("", firstLine(me.Error())))
	}
	if !errors.As(he.Internal, &re) {
		return he
	}
	field := ""
	if re.Parameter != nil {
		field = re.Parameter.Name
	}
	var se *openapi3.SchemaError
	switch {
	case errors.As(re.Err, &se):
		if p := se.JSONPointer(); len(p) > 0 {
			field = strings.Join(p, ".")
		}
		return writeProblem(c, validationProblem(field, schemaMessage(field, se)))
	case errors.Is(re.Err, openapi3filter.ErrInvalidRequired):
		msg := "a required value is missing"
		if field == "" {
			msg = "the request body is required"
		}
		return writeProblem(c, validationProblem(field, msg))
	case errors.Is(re.Err, openapi3filter.ErrInvalidEmptyValue):
		return writeProblem(c, validationProblem(field, "an empty value is not allowed"))
	}
	var ue *openapi3filter.ParseError
	if errors.As(re.Err, &ue) && field != "" {
		return writeProblem(c, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, fmt.Sprintf("%s: %s", field, ue.Reason)))
	}
	if strings.Contains(re.Error(), "Content-Type") {
		return writeProblem(c, newProblem(http.StatusUnsupportedMediaType, gen.ProblemCodeUnsupportedMediaType, "unsupported Content-Type"))
	}
	return writeProblem(c, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, firstLine(re.Error())))
}

func schemaMessage(field string, se *openapi3.SchemaError) string {
	reason := se.Reason
	if field == "" {
		return reason
	}
	return field + ": " + reason
}

func validationProblem(field, msg string) *problem {
	p := newProblem(http.StatusUnprocessableEntity, gen.ProblemCodeValidationFailed, msg)
	if field != "" {
		p.Errors = &[]gen.FieldError{{Field: field, Message: msg}}
	}
	return p
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func writeProblem(c echo.Context, p *problem) error {
	if c.Response().Committed {
		return nil
	}
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="windi"`)
	}
	return p.write(c.Response())
}

// httpCodes maps the statuses echo and the validator produce to problem
// codes.
var httpCodes = map[int]gen.ProblemCode{
	http.StatusBadRequest:            gen.ProblemCodeBadRequest,
	http.StatusUnauthorized:          gen.ProblemCodeUnauthorized,
	http.StatusForbidden:             gen.ProblemCodeForbidden,
	http.StatusNotFound:              gen.ProblemCodeNotFound,
	http.StatusMethodNotAllowed:      gen.ProblemCodeMethodNotAllowed,
	http.StatusConflict:              gen.ProblemCodeConflict,
	http.StatusRequestEntityTooLarge: gen.ProblemCodePayloadTooLarge,
	http.StatusUnsupportedMediaType:  gen.ProblemCodeUnsupportedMediaType,
	http.StatusUnprocessableEntity:   gen.ProblemCodeValidationFailed,
	http.StatusTooManyRequests:       gen.ProblemCodeRateLimited,
	http.StatusServiceUnavailable:    gen.ProblemCodeUnavailable,
}

// errorHandler is echo's HTTPErrorHandler: every error leaves as a problem.
// Unexpected errors are logged once here, with the request id, and answered
// with a generic 500.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		if p := problemFor(err); p != nil {
			_ = writeProblem(c, p)
			return
		}
		status, detail := http.StatusInternalServerError, ""
		var he *echo.HTTPError
		if errors.As(err, &he) {
			status = he.Code
			if msg, ok := he.Message.(string); ok && msg != http.StatusText(status) {
				detail = msg
			}
		}
		code, ok := httpCodes[status]
		if !ok || status >= 500 && status != http.StatusServiceUnavailable {
			code = gen.ProblemCodeInternal
		}
		if status >= 500 && status != http.StatusServiceUnavailable {
			log.Error("request failed", "event", "http.error", "err", err, "request_id", requestID(c),
				"method", c.Request().Method, "route", c.Path())
			status, detail = http.StatusInternalServerError, "internal error"
		}
		if status == http.StatusNotFound && detail == "" {
			detail = "no such route"
		}
		if status == http.StatusRequestEntityTooLarge {
			// SPEC §5 answers every limit with 422; the code still says
			// what happened.
			status, detail = http.StatusUnprocessableEntity, fmt.Sprintf("request body over %d bytes", MaxBodyBytes)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		_ = writeProblem(c, newProblem(status, code, detail))
	}
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// requestLog logs one line per request. It logs the route template and the
// path, never the query string, so `?token=` cannot reach the logs.
func requestLog(log *slog.Logger, mx *metrics.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			mx.HTTPRequest(c.Request().Method, c.Path(), status, time.Since(start))
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			log.Log(c.Request().Context(), level, "request", "event", "http.request",
				"request_id", requestID(c), "method", c.Request().Method, "route", c.Path(),
				"path", c.Request().URL.Path, "status", status, "duration_ms", time.Since(start).Milliseconds(),
				"user_id", userID(c.Request().Context()))
			return nil
		}
	}
}

// securityHeaders sets the headers every API response carries.
func securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		return next(c)
	}
}
