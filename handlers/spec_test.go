package handlers_test

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/app/apptest/speccheck"
)

// TestGenericProblemsAreDeclared sends every operation of api/openapi.yaml
// the requests any operation can get wrong: no token, a path parameter
// below its minimum or not a number, a body of the wrong content type,
// malformed or empty. Each answer must be the expected problem, and the
// spec check that every apptest server runs fails the test if the
// operation does not declare that status. The operations come from the
// spec, so a new one is covered the day it is added.
func TestGenericProblemsAreDeclared(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile(speccheck.SpecPath())
	if err != nil {
		t.Fatal(err)
	}
	s := apptest.NewEnv(t, "sqlite").Start(t)
	alice := s.NewUser(t, "Alice")
	paths := doc.Paths.InMatchingOrder()
	sort.Strings(paths)
	checked := 0
	for _, path := range paths {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			secured := op.Security == nil || len(*op.Security) > 0
			params := append(openapi3.Parameters{}, item.Parameters...)
			params = append(params, op.Parameters...)
			var inPath, numeric []string
			for _, p := range params {
				if p.Value.In == openapi3.ParameterInPath {
					inPath = append(inPath, p.Value.Name)
					if sc := p.Value.Schema; sc != nil && sc.Value != nil && sc.Value.Type.Is("integer") {
						numeric = append(numeric, p.Value.Name)
					}
				}
			}
			// fill puts 1 in every path parameter, bad in the one named.
			fill := func(name, bad string) string {
				out := path
				for _, p := range inPath {
					v := "1"
					if p == name {
						v = bad
					}
					out = strings.ReplaceAll(out, "{"+p+"}", v)
				}
				return out
			}
			try := func(what, path, ctype, body, token string, want int) {
				t.Helper()
				var payload *strings.Reader
				if body != "" {
					payload = strings.NewReader(body)
				}
				var code int
				var b []byte
				if payload != nil {
					code, _, b = s.Do(t, method, path, ctype, payload, token)
				} else {
					code, _, b = s.Do(t, method, path, ctype, nil, token)
				}
				checked++
				if code != want {
					t.Errorf("%s %s (%s): got %d %s, want %d", method, path, what, code, b, want)
				}
			}
			if secured {
				try("no token", fill("", ""), "", "", "", http.StatusUnauthorized)
			}
			for _, p := range numeric {
				try(p+" = 0, below its minimum", fill(p, "0"), "", "", alice.Token, http.StatusUnprocessableEntity)
				try(p+" not a number", fill(p, "abc"), "", "", alice.Token, http.StatusBadRequest)
			}
			if op.RequestBody == nil {
				continue
			}
			try("a text/plain body", fill("", ""), "text/plain", "hello", alice.Token, http.StatusUnsupportedMediaType)
			if op.RequestBody.Value.Content.Get("application/json") != nil {
				try("malformed JSON", fill("", ""), "application/json", "{", alice.Token, http.StatusBadRequest)
				try("an empty object", fill("", ""), "application/json", "{}", alice.Token, http.StatusUnprocessableEntity)
			} else {
				try("an empty form", fill("", ""), "application/x-www-form-urlencoded", "x=1", alice.Token, http.StatusUnprocessableEntity)
			}
		}
	}
	t.Logf("%d requests, each answer checked against the spec", checked)
	if checked < 30 {
		t.Errorf("sent %d requests, want at least 30 (is the spec loaded?)", checked)
	}
}
