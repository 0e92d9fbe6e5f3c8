// Package speccheck holds the tests to api/openapi.yaml: every HTTP
// response a test sees and every WebSocket frame it sends or receives is
// checked against the spec, and a mismatch fails the test. Without it the
// spec (which the SDKs, Swagger UI and every generated client trust) and
// the server drift apart silently.
//
// Responses are checked with kin-openapi's openapi3filter.ValidateResponse
// (status, content type, headers, body), plus three rules it leaves out:
//
//   - An object schema that lists properties allows no others: a field the
//     server sends but the spec does not document is drift too.
//   - A status below 500 must be declared by the operation; `default` only
//     covers unexpected errors (5xx).
//   - A response the spec gives no content must have an empty body.
//
// Requests to paths outside the spec (the WebSocket endpoints, docs,
// metrics, the spec files and the web client, see NonSpecPaths) and HEAD
// requests are skipped, each with its reason, and counted (Stats). Requests to a path or method the spec
// does not have get no operation to check against, but the server answers
// them with a problem document, and that is checked.
//
// Frames are checked against the component schemas ServerFrame and
// ClientFrame, and against the concrete frame schema that the `type` field
// selects through the discriminator mapping.
//
// The checker only reads the spec; it loads its own copy, so the stricter
// rules never reach the server's request validator.
package speccheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/windi-chat/windi/app"
)

// NonSpecPaths are the paths the server serves outside api/openapi.yaml
// (app.NonSpecPaths, which its request validator skips too): a path equal
// to one of them, or below it ("/ws/3", "/app/app.js"), is not checked.
// "/" stands for the root path alone (the web client's page).
var NonSpecPaths = app.NonSpecPaths

// Reporter receives the mismatches; testing.TB is one.
type Reporter interface {
	Errorf(format string, args ...any)
}

// TB is the part of testing.TB that ForTest needs.
type TB interface {
	Errorf(format string, args ...any)
	Cleanup(func())
}

// ForTest returns a Reporter that fails t with each mismatch until the
// cleanup it registers runs. Cleanups run last-registered first, so make
// it before the server it watches: it then reports until the server has
// stopped. A mismatch reported later (by a connection still being read
// when the test ended) would make the testing package panic; it goes to
// stderr instead.
func ForTest(t TB) Reporter {
	r := &testReporter{t: t}
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
	})
	return r
}

type testReporter struct {
	mu   sync.Mutex // guards done, and keeps Errorf and the end apart
	t    TB
	done bool
}

func (r *testReporter) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		fmt.Fprintf(os.Stderr, "speccheck: after the test ended: "+format+"\n", args...)
		return
	}
	r.t.Errorf(format, args...)
}

// Checker checks responses and frames against one loaded spec. It is safe
// for concurrent use.
type Checker struct {
	doc     *openapi3.T
	router  routers.Router
	problem *openapi3.Schema
	server  frameSchemas
	client  frameSchemas

	checked atomic.Int64
	frames  atomic.Int64
	mu      sync.Mutex // guards skipped
	skipped map[string]int64
}

// frameSchemas is a frame union (ServerFrame or ClientFrame) and its
// concrete schemas by the `type` value the discriminator maps.
type frameSchemas struct {
	name   string
	union  *openapi3.Schema
	byType map[string]*openapi3.Schema
}

var (
	loadOnce sync.Once
	loaded   *Checker
	loadErr  error
)

// SpecPath is api/openapi.yaml in this source tree.
func SpecPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "openapi.yaml")
}

// Default returns the checker of api/openapi.yaml, loaded once per test
// binary.
func Default() (*Checker, error) {
	loadOnce.Do(func() {
		loaded, loadErr = LoadFile(SpecPath())
	})
	return loaded, loadErr
}

// LoadFile loads the spec at path.
func LoadFile(path string) (*Checker, error) {
	doc, err := openapi3.NewLoader().LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return New(doc)
}

// LoadData loads a spec from its YAML or JSON text.
func LoadData(data []byte) (*Checker, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	return New(doc)
}

// New returns a checker of doc. It changes doc (servers dropped, object
// schemas closed to undeclared properties): pass a copy of its own.
func New(doc *openapi3.T) (*Checker, error) {
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("invalid spec: %w", err)
	}
	// Requests reach test servers on 127.0.0.1 and random ports; the spec
	// says "/". Match paths only, as the server's own validator does.
	doc.Servers = nil
	all := allSchemas(doc)
	voidNullables(all)
	closeObjects(all)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	c := &Checker{doc: doc, router: router, skipped: map[string]int64{}}
	ps := doc.Components.Schemas["Problem"]
	if ps == nil || ps.Value == nil {
		return nil, errors.New("the spec has no Problem schema")
	}
	c.problem = ps.Value
	if c.server, err = newFrameSchemas(doc, "ServerFrame"); err != nil {
		return nil, err
	}
	if c.client, err = newFrameSchemas(doc, "ClientFrame"); err != nil {
		return nil, err
	}
	return c, nil
}

func newFrameSchemas(doc *openapi3.T, name string) (frameSchemas, error) {
	ref := doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return frameSchemas{}, fmt.Errorf("the spec has no %s schema", name)
	}
	fs := frameSchemas{name: name, union: ref.Value, byType: map[string]*openapi3.Schema{}}
	d := ref.Value.Discriminator
	if d == nil || d.PropertyName != "type" {
		return frameSchemas{}, fmt.Errorf("%s has no discriminator on type", name)
	}
	for typ, mapped := range d.Mapping {
		target := strings.TrimPrefix(mapped.Ref, "#/components/schemas/")
		s := doc.Components.Schemas[target]
		if s == nil || s.Value == nil {
			return frameSchemas{}, fmt.Errorf("%s maps %q to %s, which the spec does not have", name, typ, mapped.Ref)
		}
		fs.byType[typ] = s.Value
	}
	return fs, nil
}

// allSchemas returns every schema of doc: the components and what they
// reach, and the inline schemas of the responses.
func allSchemas(doc *openapi3.T) []*openapi3.Schema {
	seen := map[*openapi3.Schema]bool{}
	var all []*openapi3.Schema
	var walk func(ref *openapi3.SchemaRef)
	walk = func(ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		all = append(all, s)
		for _, p := range s.Properties {
			walk(p)
		}
		for _, group := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
			for _, p := range group {
				walk(p)
			}
		}
		walk(s.Items)
		walk(s.Not)
		walk(s.AdditionalProperties.Schema)
	}
	names := make([]string, 0, len(doc.Components.Schemas))
	for name := range doc.Components.Schemas {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		walk(doc.Components.Schemas[name])
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, resp := range op.Responses.Map() {
				if resp.Value == nil {
					continue
				}
				for _, mt := range resp.Value.Content {
					walk(mt.Schema)
				}
			}
		}
	}
	return all
}

// closeObjects sets additionalProperties: false on every object schema
// that lists properties and says nothing about others, so that an
// undocumented field fails the check. A schema combined with siblings that
// list properties of their own (allOf parts) is left open: each part sees
// the whole object.
func closeObjects(all []*openapi3.Schema) {
	shared := map[*openapi3.Schema]bool{}
	for _, s := range all {
		withProps := 0
		for _, part := range s.AllOf {
			if part.Value != nil && len(part.Value.Properties) > 0 {
				withProps++
			}
		}
		if withProps > 1 || withProps == 1 && len(s.Properties) > 0 {
			for _, part := range s.AllOf {
				shared[part.Value] = true
			}
		}
	}
	no := false
	for _, s := range all {
		ap := s.AdditionalProperties
		if len(s.Properties) > 0 && ap.Has == nil && ap.Schema == nil && !shared[s] {
			s.AdditionalProperties.Has = &no
		}
	}
}

// voidNullables reads `nullable` as OpenAPI 3.0.3 defines it: it adds null
// to the schema's own type, and the schema's other constraints still
// apply. So `nullable: true` beside `allOf: [{$ref: Message}]` admits no
// null, since Message rejects it; strict validators (Prism among them)
// answer so. kin-openapi accepts null for any nullable schema before it
// looks at allOf, anyOf or oneOf; dropping `nullable` where those parts
// reject null makes it agree.
func voidNullables(all []*openapi3.Schema) {
	for _, s := range all {
		if s.Nullable && (len(s.AllOf) > 0 || len(s.AnyOf) > 0 || len(s.OneOf) > 0) && !partsAdmitNull(s) {
			s.Nullable = false
		}
	}
}

// admitsNull reports whether s accepts the JSON value null under OpenAPI
// 3.0.3.
func admitsNull(s *openapi3.Schema) bool {
	if s.Type != nil && len(*s.Type) > 0 && !s.Nullable && !s.Type.Includes(openapi3.TypeNull) {
		return false
	}
	if len(s.Enum) > 0 && !slices.Contains(s.Enum, nil) {
		return false
	}
	return partsAdmitNull(s)
}

// partsAdmitNull reports whether the allOf, anyOf and oneOf of s accept
// null.
func partsAdmitNull(s *openapi3.Schema) bool {
	for _, p := range s.AllOf {
		if p.Value != nil && !admitsNull(p.Value) {
			return false
		}
	}
	if len(s.AnyOf) > 0 && !slices.ContainsFunc(s.AnyOf, func(p *openapi3.SchemaRef) bool { return p.Value == nil || admitsNull(p.Value) }) {
		return false
	}
	if len(s.OneOf) > 0 {
		n := 0
		for _, p := range s.OneOf {
			if p.Value == nil || admitsNull(p.Value) {
				n++
			}
		}
		if n != 1 {
			return false
		}
	}
	return true
}

// nonSpec reports which entry of NonSpecPaths covers path, if any.
func nonSpec(path string) (string, bool) {
	for _, p := range NonSpecPaths {
		if path == p || p != "/" && strings.HasPrefix(path, p+"/") {
			return p, true
		}
	}
	return "", false
}

// Skip reports whether a request is outside the check, and why: its path
// is outside the spec, or it is a HEAD request (whose answer has no body,
// and the spec declares no HEAD operation).
func Skip(req *http.Request) (reason string, skip bool) {
	if p, ok := nonSpec(req.URL.Path); ok {
		return "outside the spec: " + p, true
	}
	if req.Method == http.MethodHead {
		return "HEAD: no body", true
	}
	return "", false
}

// CheckResponse checks one response to req against the spec. It returns
// the reason when the exchange is outside the spec and was not checked,
// and an error describing every mismatch otherwise.
func (c *Checker) CheckResponse(req *http.Request, status int, header http.Header, body []byte) (skipped string, err error) {
	if reason, ok := Skip(req); ok {
		c.skip(reason)
		return reason, nil
	}
	c.checked.Add(1)
	route, params, ferr := c.router.FindRoute(req)
	if ferr != nil {
		// No operation to check against (404 for a path the spec lacks,
		// 405 for a method): the server still answers with a problem.
		if err := c.checkProblem(status, header, body); err != nil {
			return "", describe(req, status, header, body, fmt.Errorf("%v, and the answer is no problem document: %w", ferr, err))
		}
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return "", describe(req, status, header, body, fmt.Errorf("%v: want 404 or 405", ferr))
		}
		return "", nil
	}
	responses := route.Operation.Responses
	declared := responses.Status(status)
	if declared == nil && status < 500 {
		return "", describe(req, status, header, body, fmt.Errorf("status %d is not declared for %s %s (its `default` response stands for unexpected errors, 5xx)", status, route.Method, route.Path))
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return "", describe(req, status, header, body, err)
	}
	if declared == nil {
		declared = responses.Default()
	}
	if declared != nil && declared.Value != nil && len(declared.Value.Content) == 0 && len(body) > 0 {
		return "", describe(req, status, header, body, fmt.Errorf("status %d has no content in the spec, but the body is %d bytes", status, len(body)))
	}
	return "", nil
}

// checkProblem checks an RFC 9457 problem document.
func (c *Checker) checkProblem(status int, header http.Header, body []byte) error {
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		return fmt.Errorf("content type %q, want application/problem+json", ct)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if err := c.problem.VisitJSON(v, openapi3.MultiErrors(), openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("body doesn't match schema Problem: %w", err)
	}
	if m, ok := v.(map[string]any); ok && m["status"] != float64(status) {
		return fmt.Errorf("problem status %v, want the response status %d", m["status"], status)
	}
	return nil
}

func (c *Checker) skip(reason string) {
	c.mu.Lock()
	c.skipped[reason]++
	c.mu.Unlock()
}

// Stats is what a checker has seen so far.
type Stats struct {
	// Checked counts responses checked against the spec.
	Checked int64
	// Frames counts WebSocket frames checked.
	Frames int64
	// Skipped counts responses not checked, by reason.
	Skipped map[string]int64
}

// Stats returns the counts so far.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Checked: c.checked.Load(), Frames: c.frames.Load(), Skipped: make(map[string]int64, len(c.skipped))}
	for k, v := range c.skipped {
		s.Skipped[k] = v
	}
	return s
}

// describe wraps err with the exchange it is about, so that a failing
// test names the request, the status and the body.
func describe(req *http.Request, status int, header http.Header, body []byte, err error) error {
	const max = 600
	b := string(body)
	if len(b) > max {
		b = b[:max] + "…"
	}
	return fmt.Errorf("response to %s %s does not match api/openapi.yaml: status %d, content type %q, body %s:\n%w",
		req.Method, req.URL.RequestURI(), status, header.Get("Content-Type"), b, err)
}

// CheckServerFrame checks a frame the server sent.
func (c *Checker) CheckServerFrame(data []byte) error { return c.checkFrame(c.server, data) }

// CheckClientFrame checks a frame a client sends.
func (c *Checker) CheckClientFrame(data []byte) error { return c.checkFrame(c.client, data) }

func (c *Checker) checkFrame(fs frameSchemas, data []byte) error {
	c.frames.Add(1)
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("frame %s is not JSON (want a %s): %w", data, fs.name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("frame %s is not a JSON object (want a %s)", data, fs.name)
	}
	typ, _ := m["type"].(string)
	s := fs.byType[typ]
	if s == nil {
		return fmt.Errorf("frame %s: type %q is not one of %s's types (%s)", data, m["type"], fs.name, strings.Join(fs.types(), ", "))
	}
	opts := []openapi3.SchemaValidationOption{openapi3.MultiErrors(), openapi3.VisitAsResponse()}
	if err := s.VisitJSON(v, opts...); err != nil {
		return fmt.Errorf("frame %s does not match its %s schema (type %q) in api/openapi.yaml:\n%w", data, fs.name, typ, err)
	}
	if err := fs.union.VisitJSON(v, opts...); err != nil {
		return fmt.Errorf("frame %s does not match %s in api/openapi.yaml:\n%w", data, fs.name, err)
	}
	return nil
}

func (fs frameSchemas) types() []string {
	out := make([]string, 0, len(fs.byType))
	for t := range fs.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Middleware checks every response of next (in a test server) and reports
// each mismatch to r. Requests outside the spec pass through untouched
// (WebSocket upgrades need the real ResponseWriter); the others are
// buffered, checked, then sent, so a mismatch is reported before the client
// sees the response.
func (c *Checker) Middleware(r Reporter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if reason, ok := Skip(req); ok {
			c.skip(reason)
			next.ServeHTTP(w, req)
			return
		}
		rec := &recorder{w: w}
		next.ServeHTTP(rec, req)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if _, err := c.CheckResponse(req, rec.status, w.Header(), rec.body.Bytes()); err != nil {
			r.Errorf("%v", err)
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
	})
}

// recorder holds a response back until it is checked. Headers go straight
// to the real writer's map.
type recorder struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// Flush does nothing: the response goes out whole once it is checked.
func (r *recorder) Flush() {}

// Transport is an http.RoundTripper that checks every response it carries
// and reports each mismatch to R. Use it for clients of servers in other
// processes (behind nginx, say), where the server cannot be wrapped.
type Transport struct {
	Checker *Checker
	R       Reporter
	// Base carries the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Skip, when set, leaves out responses for which it returns a reason
	// (for example errors the proxy itself answered, which the spec does
	// not describe).
	Skip func(*http.Response) string
}

// RoundTrip sends req and checks the response. The body is read whole and
// handed on as read.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if t.Skip != nil {
		if reason := t.Skip(resp); reason != "" {
			t.Checker.skip(reason)
			return resp, nil
		}
	}
	body, rerr := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if rerr != nil {
		// The caller reads what came and then the same error; a partial
		// body cannot be checked.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{rerr}))
		t.Checker.skip("body not read whole")
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if _, err := t.Checker.CheckResponse(req, resp.StatusCode, resp.Header, body); err != nil {
		t.R.Errorf("%v", err)
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
