package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
	// TrustedProxies are the peers whose X-Forwarded-For is believed. The
	// client IP (per-IP limits, logs) is the last address in the chain
	// that is not one of them; with none, it is the connection's peer.
	TrustedProxies []*net.IPNet
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
	e.IPExtractor = ipExtractor(opts.TrustedProxies)
	e.Use(middleware.RequestID())
	e.Use(requestLog(log, opts.Metrics))
	unvalidated := func(c echo.Context) bool {
		p := c.Request().URL.Path
		for _, prefix := range opts.Unvalidated {
			if p == prefix || prefix != "/" && strings.HasPrefix(p, prefix+"/") {
				return true
			}
		}
		return false
	}
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("panic recovered", "event", "http.panic", "err", err, "request_id", requestID(c), "stack", string(stack))
			return err
		},
	}))
	e.Use(securityHeaders(unvalidated))
	e.Use(readBody)
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// The client IP, for per-IP limits: c.RealIP asks e.IPExtractor,
			// which believes X-Forwarded-For only from TrustedProxies.
			r := c.Request()
			ctx := chat.WithClientIP(r.Context(), c.RealIP())
			c.SetRequest(r.WithContext(chat.WithUserAgent(ctx, r.UserAgent())))
			return next(c)
		}
	})
	e.Use(echomw.OapiRequestValidatorWithOptions(spec, &echomw.Options{
		Skipper:               unvalidated,
		DoNotValidateServers:  true,
		SilenceServersWarning: true,
		ErrorHandler:          validationError,
		MultiErrorHandler: func(me openapi3.MultiError) *echo.HTTPError {
			return &echo.HTTPError{Code: http.StatusBadRequest, Message: firstLine(me.Error()), Internal: me}
		},
		Options: openapi3filter.Options{
			AuthenticationFunc: authenticate(svc),
			// Every violation, not only the first: a 422 names all the
			// fields to fix (validationError sorts them out).
			MultiError: true,
			// format: email means what Register accepts (net/mail, NFKC,
			// no mixed scripts), checked with the other fields.
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidator("email", openapi3.NewCallbackValidator(chat.CheckEmail)),
			},
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
		if _, ok := c.Request().Context().Value(ctxKey{}).(chat.Principal); ok {
			return nil // an earlier security alternative already authenticated
		}
		token := BearerToken(c.Request())
		if token == "" {
			return echo.NewHTTPError(http.StatusUnauthorized, "missing bearer token")
		}
		p, err := svc.Authenticate(c.Request().Context(), token)
		if err != nil {
			if chat.CodeOf(err) == chat.CodeSessionRevoked {
				// The error handler answers the problem of the service
				// error: code session_revoked.
				return echo.NewHTTPError(http.StatusUnauthorized, "session revoked").SetInternal(err)
			}
			if chat.CodeOf(err) == chat.CodeUnavailable {
				return echo.NewHTTPError(http.StatusServiceUnavailable, "storage is unavailable")
			}
			if chat.CodeOf(err) == "" {
				return echo.NewHTTPError(http.StatusInternalServerError).SetInternal(err)
			}
			return echo.NewHTTPError(http.StatusUnauthorized, "invalid or expired token")
		}
		c.SetRequest(c.Request().WithContext(withPrincipal(c.Request().Context(), p)))
		return nil
	}
}

// validationError turns the validator's verdict into a problem. The
// validator runs with MultiError, so it reports everything wrong with a
// request at once: a failed authentication wins (401, or whatever the
// authentication function answered), then a request that cannot be parsed
// (400) or has the wrong Content-Type (415), and otherwise every schema
// violation is listed in one 422.
func validationError(c echo.Context, he *echo.HTTPError) error {
	if he.Code != http.StatusBadRequest {
		return he
	}
	errs := flatten(he.Internal)
	for _, err := range errs {
		var sre *openapi3filter.SecurityRequirementsError
		if errors.As(err, &sre) {
			for _, e := range sre.Errors {
				var h *echo.HTTPError
				if errors.As(e, &h) {
					return h
				}
			}
			return &echo.HTTPError{Code: http.StatusForbidden, Message: "forbidden", Internal: sre}
		}
	}
	var fields []gen.FieldError
	var first *problem
	for _, err := range errs {
		fs, p := classifyValidation(err)
		fields = append(fields, fs...)
		if p != nil && first == nil {
			first = p
		}
	}
	switch {
	case first != nil:
		return writeProblem(c, first)
	case len(fields) > 0:
		return writeProblem(c, fieldsProblem(fields))
	case he.Internal == nil:
		return he
	}
	return writeProblem(c, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, firstLine(he.Internal.Error())))
}

// flatten lists the errors inside err: the members of (nested)
// MultiErrors, and err itself otherwise. Only err itself is looked at, not
// what it wraps: a RequestError wraps its parameter's MultiError, and must
// stay whole to name the parameter.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if me, ok := err.(openapi3.MultiError); ok {
		var out []error
		for _, e := range me {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// classifyValidation sorts one validator error into field errors (a 422)
// or a problem of its own (400 unparseable, 415 wrong Content-Type).
func classifyValidation(err error) ([]gen.FieldError, *problem) {
	var se *openapi3.SchemaError
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) {
		if errors.As(err, &se) {
			return schemaFields("", se), nil
		}
		return nil, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, firstLine(err.Error()))
	}
	field := ""
	if re.Parameter != nil {
		field = re.Parameter.Name
	}
	if inner := flatten(re.Err); len(inner) > 1 || len(inner) == 1 && errors.As(inner[0], &se) {
		var fields []gen.FieldError
		for _, e := range inner {
			if errors.As(e, &se) {
				fields = append(fields, schemaFields(field, se)...)
				continue
			}
			return nil, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, firstLine(e.Error()))
		}
		return fields, nil
	}
	switch {
	case errors.Is(re.Err, openapi3filter.ErrInvalidRequired):
		msg := "a required value is missing"
		if field == "" {
			msg = "the request body is required"
		}
		return []gen.FieldError{{Field: field, Message: msg}}, nil
	case errors.Is(re.Err, openapi3filter.ErrInvalidEmptyValue):
		return []gen.FieldError{{Field: field, Message: "an empty value is not allowed"}}, nil
	}
	var ue *openapi3filter.ParseError
	if errors.As(re.Err, &ue) && field != "" {
		return nil, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, fmt.Sprintf("%s: %s", field, ue.Reason))
	}
	if strings.Contains(re.Error(), "Content-Type") {
		return nil, unsupportedMediaType(re)
	}
	return nil, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, firstLine(re.Error()))
}

// unsupportedMediaType says which Content-Type the operation takes: a
// client that posts JSON to /login learns it must send a form.
func unsupportedMediaType(re *openapi3filter.RequestError) *problem {
	got := "none"
	var accepted []string
	if in := re.Input; in != nil {
		if ct := in.Request.Header.Get("Content-Type"); ct != "" {
			got = ct
		}
		if rb := re.RequestBody; rb != nil {
			for mt := range rb.Content {
				accepted = append(accepted, mt)
			}
		}
	}
	sort.Strings(accepted)
	detail := fmt.Sprintf("unsupported Content-Type %q", got)
	switch {
	case len(accepted) == 1 && accepted[0] == echo.MIMEApplicationForm:
		detail += "; this endpoint takes a form (Content-Type application/x-www-form-urlencoded), not JSON"
	case len(accepted) > 0:
		detail += "; this endpoint takes " + strings.Join(accepted, " or ")
	}
	return newProblem(http.StatusUnsupportedMediaType, gen.ProblemCodeUnsupportedMediaType, detail)
}

// schemaFields names the offending field of a schema error. A oneOf or
// anyOf body that matched no branch reports each branch's reasons in
// Origin; they are unwrapped so the client sees fields, not branches.
func schemaFields(field string, se *openapi3.SchemaError) []gen.FieldError {
	p := se.JSONPointer()
	if se.Origin != nil {
		var inner []gen.FieldError
		branch := []error{se.Origin}
		var me openapi3.MultiError
		if errors.As(se.Origin, &me) { // the branch's reasons, wrapped with fmt.Errorf
			branch = flatten(me)
		}
		for _, e := range branch {
			var ise *openapi3.SchemaError
			if errors.As(e, &ise) {
				// The branch's pointers start at the oneOf.
				prefix := field
				if len(p) > 0 {
					prefix = strings.Join(p, ".")
				}
				for _, f := range schemaFields("", ise) {
					name := f.Field
					if prefix != "" && name != "" {
						name = prefix + "." + name
					} else if name == "" {
						name = prefix
					}
					inner = append(inner, gen.FieldError{Field: name, Message: schemaMessage(name, ise)})
				}
			}
		}
		if len(inner) > 0 {
			return inner
		}
	}
	if len(p) > 0 {
		field = strings.Join(p, ".")
	}
	return []gen.FieldError{{Field: field, Message: schemaMessage(field, se)}}
}

func schemaMessage(field string, se *openapi3.SchemaError) string {
	reason := se.Reason
	if field == "" {
		return reason
	}
	return field + ": " + reason
}

// fieldsProblem is the 422 listing every field error, in the order the
// validator found them (the spec's property order), without repeats.
func fieldsProblem(fields []gen.FieldError) *problem {
	seen := map[gen.FieldError]bool{}
	uniq := fields[:0:0]
	for _, f := range fields {
		if !seen[f] {
			seen[f] = true
			uniq = append(uniq, f)
		}
	}
	msgs := make([]string, len(uniq))
	for i, f := range uniq {
		msgs[i] = f.Message
	}
	p := newProblem(http.StatusUnprocessableEntity, gen.ProblemCodeValidationFailed, strings.Join(msgs, "; "))
	if len(uniq) > 1 || uniq[0].Field != "" {
		p.Errors = &uniq
	}
	return p
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
		if status == http.StatusMethodNotAllowed {
			// RFC 9110 §15.5.6: a 405 names the methods the resource
			// allows. echo's router found them; the validator, which
			// answers first, does not set the header.
			// echo lists OPTIONS first, always; the API answers no OPTIONS
			// (the spec declares none, so it is a 405 too).
			allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string)
			if !ok {
				allow = staticAllow(c)
			}
			if allow = strings.TrimPrefix(allow, http.MethodOptions+", "); allow != "" && allow != http.MethodOptions {
				c.Response().Header().Set(echo.HeaderAllow, allow)
			}
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

// staticAllow lists the methods of the routes whose path is exactly the
// request's. It answers when echo's router matched another route for the
// method (GET /users/me/password matches GET /users/{user_id}) and the
// validator, which knows the path has no GET, said 405.
func staticAllow(c echo.Context) string {
	var methods []string
	for _, r := range c.Echo().Routes() {
		if r.Path == c.Request().URL.Path && !slices.Contains(methods, r.Method) {
			methods = append(methods, r.Method)
		}
	}
	sort.Strings(methods)
	return strings.Join(methods, ", ")
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

// securityHeaders sets the headers every response carries. API responses
// (everything but the paths skip names: web client, docs, WebSocket,
// metrics, which set their own caching) are never stored by a browser or
// a shared cache: they carry tokens (/login) and private data.
func securityHeaders(skip func(echo.Context) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "no-referrer")
			if !skip(c) {
				h.Set("Cache-Control", "no-store")
			}
			return next(c)
		}
	}
}

// ipExtractor believes X-Forwarded-For only from trusted peers: echo's
// extractor walks the chain from the right (the entry the nearest proxy
// added) and stops at the first address that is not trusted, so entries a
// client wrote itself, on the left, are never used. echo trusts loopback
// and private networks by default; here only the configured ranges count.
// The result is always a parsed address (or the peer's), never header
// text.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// readBody reads the whole request body, at most MaxBodyBytes, before the
// validator and the handlers see it, and checks JSON bodies. echo's
// BodyLimit middleware limits bodies lazily instead: a chunked body that
// runs over is noticed by whichever reader reaches the limit (the
// validator), which then answers 400, or 403 on a secured operation, with
// echo's internal "code=413" text. Reading up front gives every oversized
// body the same answer, 422 payload_too_large (SPEC §5), and costs nothing
// extra: the validator reads the whole body anyway.
func readBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Body == nil || r.Body == http.NoBody {
			return next(c)
		}
		if c.Path() == "" || c.Get(echo.ContextKeyHeaderAllow) != nil {
			// No route (404) or not this method (405): that is the answer,
			// whatever the body; it is not read.
			return next(c)
		}
		if r.ContentLength > MaxBodyBytes {
			return echo.ErrStatusRequestEntityTooLarge
		}
		// The net/http writer, not echo's wrapper: MaxBytesReader tells it
		// to close the connection after an oversized body.
		body, err := io.ReadAll(http.MaxBytesReader(c.Response().Writer, r.Body, MaxBodyBytes))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return echo.ErrStatusRequestEntityTooLarge
		case err != nil:
			// A body cut off, or trickled past the server's ReadTimeout:
			// the connection is done for. 400, which every operation with
			// a body declares (a 408 would be undocumented).
			c.Response().Header().Set(echo.HeaderConnection, "close")
			detail := "the request body could not be read"
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				detail = "the request body did not arrive in time"
			}
			return writeProblem(c, newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, detail))
		}
		if len(body) > 0 && isJSON(r.Header.Get(echo.HeaderContentType)) {
			if p := checkJSON(body); p != nil {
				return writeProblem(c, p)
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		return next(c)
	}
}

// isJSON reports whether a Content-Type is JSON (application/json or
// application/*+json).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == echo.MIMEApplicationJSON || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// checkJSON checks what encoding/json, which the generated handlers decode
// with, lets pass silently: bytes after the JSON value (its Decoder stops
// after one value; 400), and invalid UTF-8 inside strings (replaced by
// U+FFFD on decoding, so something the client never sent would be stored;
// 422 naming the field). A body that is not JSON at all is left to the
// validator, whose 400 says where it broke.
func checkJSON(body []byte) *problem {
	if !json.Valid(body) {
		dec := json.NewDecoder(bytes.NewReader(body))
		var v any
		if dec.Decode(&v) == nil {
			return newProblem(http.StatusBadRequest, gen.ProblemCodeBadRequest, "unexpected data after the JSON body")
		}
		return nil
	}
	if utf8.Valid(body) {
		return nil
	}
	return validationProblem(invalidUTF8Field(body), "a string holds invalid UTF-8")
}

// invalidUTF8Field returns the path ("a.b.0", as the validator names
// fields) of the first JSON string, key or value, that holds invalid UTF-8
// in body, which must be valid JSON.
func invalidUTF8Field(body []byte) string {
	type level struct {
		object  bool
		wantKey bool
		key     string
		index   int
	}
	var stack []*level
	path := func(extra ...string) string {
		var parts []string
		for _, l := range stack {
			if l.object {
				parts = append(parts, l.key)
			} else {
				parts = append(parts, strconv.Itoa(l.index))
			}
		}
		return strings.Join(append(parts, extra...), ".")
	}
	valueDone := func() {
		if n := len(stack); n > 0 {
			if top := stack[n-1]; top.object {
				top.wantKey = true
			} else {
				top.index++
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var prev int64
	for {
		tok, err := dec.Token()
		if err != nil {
			return path()
		}
		raw := body[prev:dec.InputOffset()]
		prev = dec.InputOffset()
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, &level{object: t == '{', wantKey: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
				top := stack[n-1]
				top.key, top.wantKey = t, false
				if !utf8.Valid(raw) {
					return path()
				}
				continue
			}
			if !utf8.Valid(raw) {
				return path()
			}
			valueDone()
		default:
			valueDone()
		}
	}
}
