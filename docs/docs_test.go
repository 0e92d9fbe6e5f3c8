package docs_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/windi-chat/windi/api"
	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/gen"
)

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, b
}

// specPaths lists the paths of the spec the server was generated from.
func specPaths(t *testing.T) []string {
	t.Helper()
	doc, err := gen.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	paths := doc.Paths.InMatchingOrder()
	if len(paths) < 10 {
		t.Fatalf("the spec has only %d paths", len(paths))
	}
	return paths
}

var (
	srcAttr  = regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']([^"']+)["']`)
	external = regexp.MustCompile(`(?i)^(?:[a-z][a-z0-9+.-]*:|//)`)
)

func TestSwaggerUIServedOffline(t *testing.T) {
	srv := apptest.NewEnv(t, "sqlite").Start(t)

	for _, p := range []string{"/docs", "/docs/", "/docs/index.html"} {
		resp, body := get(t, srv.URL+p)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", p, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q", p, ct)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
		if !bytes.Contains(body, []byte(`id="swagger-ui"`)) {
			t.Errorf("GET %s: no swagger-ui element in\n%s", p, body)
		}

		refs := srcAttr.FindAllSubmatch(body, -1)
		if len(refs) < 4 {
			t.Fatalf("GET %s: expected script and stylesheet references, found %d", p, len(refs))
		}
		for _, m := range refs {
			ref := string(m[1])
			if external.MatchString(ref) {
				t.Errorf("GET %s references %q, not on this server", p, ref)
				continue
			}
			// Every referenced asset is served (as the browser would resolve it).
			u, err := resp.Request.URL.Parse(ref)
			if err != nil {
				t.Fatal(err)
			}
			aresp, abody := get(t, u.String())
			if aresp.StatusCode != http.StatusOK || len(abody) == 0 {
				t.Errorf("asset %s (from %s): status %d, %d bytes", ref, p, aresp.StatusCode, len(abody))
			}
			if strings.HasSuffix(ref, ".js") && !strings.Contains(aresp.Header.Get("Content-Type"), "javascript") {
				t.Errorf("asset %s: Content-Type %q", ref, aresp.Header.Get("Content-Type"))
			}
			if strings.HasSuffix(ref, ".css") && !strings.HasPrefix(aresp.Header.Get("Content-Type"), "text/css") {
				t.Errorf("asset %s: Content-Type %q", ref, aresp.Header.Get("Content-Type"))
			}
		}
	}

	// The initializer points Swagger UI at this server's spec, keeps the
	// token across reloads and asks no online validator.
	resp, js := get(t, srv.URL+"/docs/swagger-initializer.js")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("swagger-initializer.js: status %d", resp.StatusCode)
	}
	for _, want := range []string{`url: "/openapi.yaml"`, "persistAuthorization: true", "validatorUrl: null"} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("swagger-initializer.js lacks %q", want)
		}
	}
	if bytes.Contains(js, []byte("petstore")) {
		t.Error("swagger-initializer.js is the stock one")
	}

	for _, p := range []string{"/docs/nope.js", "/docs/../go.mod", "/docs/a/b.js"} {
		if resp, _ := get(t, srv.URL+p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestSpecServed(t *testing.T) {
	srv := apptest.NewEnv(t, "sqlite").Start(t)
	paths := specPaths(t)

	resp, body := get(t, srv.URL+"/openapi.yaml")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.yaml: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
		t.Errorf("GET /openapi.yaml: Content-Type %q", ct)
	}
	if !bytes.Equal(body, api.Spec) {
		t.Error("GET /openapi.yaml differs from api/openapi.yaml")
	}
	yamlDoc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatalf("parse /openapi.yaml: %v", err)
	}

	resp, body = get(t, srv.URL+"/openapi.json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET /openapi.json: Content-Type %q", ct)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("GET /openapi.json is not JSON: %v", err)
	}
	jsonDoc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatalf("parse /openapi.json: %v", err)
	}
	if err := jsonDoc.Validate(t.Context()); err != nil {
		t.Errorf("/openapi.json does not validate: %v", err)
	}

	for name, doc := range map[string]*openapi3.T{"yaml": yamlDoc, "json": jsonDoc} {
		if doc.Info == nil || doc.Info.Title != "WinDI Chat API" {
			t.Errorf("%s: info %+v", name, doc.Info)
		}
		if got := doc.Paths.Len(); got != len(paths) {
			t.Errorf("%s: %d paths, api/openapi.yaml has %d", name, got, len(paths))
		}
		for _, p := range paths {
			if doc.Paths.Find(p) == nil {
				t.Errorf("%s: path %s missing", name, p)
			}
		}
		for _, s := range []string{"MessageSendFrame", "ServerFrame", "ClientFrame", "Message", "User"} {
			if doc.Components == nil || doc.Components.Schemas[s] == nil {
				t.Errorf("%s: schema %s missing", name, s)
			}
		}
		if doc.Components.SecuritySchemes["oauth2Password"] == nil {
			t.Errorf("%s: oauth2Password security scheme missing", name)
		} else if f := doc.Components.SecuritySchemes["oauth2Password"].Value.Flows; f == nil || f.Password == nil || f.Password.TokenURL != "/login" {
			t.Errorf("%s: oauth2Password flow is not the password flow at /login", name)
		}
	}

	// HEAD works as well (proxies and link checkers use it).
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/openapi.yaml", nil)
	hresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /openapi.yaml: status %d", hresp.StatusCode)
	}
}
