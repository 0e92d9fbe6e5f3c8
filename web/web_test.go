package web_test

import (
	"bytes"
	"io"
	"net/http"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/windi-chat/windi/app/apptest"
	"github.com/windi-chat/windi/web"
)

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
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

var (
	// References by kind of file: src="…", href="…" in HTML; import … from
	// "…" and import("…") in JS; url(…) in CSS (only there: in JS it would
	// also match `new URL(…)`).
	refs = map[string][]*regexp.Regexp{
		".html": {regexp.MustCompile(`(?i)\b(?:src|href)\s*=\s*["']([^"']+)["']`)},
		".js": {
			regexp.MustCompile(`\bfrom\s*["']([^"']+)["']`),
			regexp.MustCompile(`\bimport\s*\(?\s*["']([^"']+)["']`),
		},
		".css": {regexp.MustCompile(`(?i)\burl\(\s*["']?([^"')]+)`)},
	}
	// Any absolute URL or scheme-relative reference anywhere in a file.
	absoluteURL = regexp.MustCompile(`(?i)\b(?:https?|wss?|ftp):\/\/|["'(=]\s*\/\/[a-z0-9]`)
	// The one absolute URL allowed: an XML namespace, which is a name and
	// is never fetched.
	svgNS = regexp.MustCompile(`xmlns="http://www\.w3\.org/2000/svg"`)
)

func TestClientServed(t *testing.T) {
	srv := apptest.NewEnv(t, "sqlite").Start(t)

	resp, page := get(t, srv.URL+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: status %d\n%s", resp.StatusCode, page)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET /: Content-Type %q", ct)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("GET /: Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{`<main`, `<nav`, `<header`, `aria-live="polite"`, `id="login-form"`, `id="register-form"`, `id="composer"`} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("GET /: the page lacks %s", want)
		}
	}

	// Every asset the page and its modules reference is served, with its
	// content type, and lives on this server.
	want := map[string]string{".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
	seen := map[string]bool{}
	queue := []string{"/"}
	bodies := map[string][]byte{"/": page}
	for len(queue) > 0 {
		from := queue[0]
		queue = queue[1:]
		kind := path.Ext(from)
		if from == "/" {
			kind = ".html"
		}
		for _, re := range refs[kind] {
			for _, m := range re.FindAllSubmatch(bodies[from], -1) {
				ref := string(m[1])
				if strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "data:") {
					continue
				}
				base := srv.URL + from
				u, err := resp.Request.URL.Parse(base)
				if err == nil {
					u, err = u.Parse(ref)
				}
				if err != nil {
					t.Fatalf("%s: reference %q: %v", from, ref, err)
				}
				if u.Host != resp.Request.URL.Host {
					t.Errorf("%s references %q, not on this server", from, ref)
					continue
				}
				if seen[u.Path] {
					continue
				}
				seen[u.Path] = true
				aresp, abody := get(t, u.String())
				if aresp.StatusCode != http.StatusOK || len(abody) == 0 {
					t.Errorf("asset %s (from %s): status %d, %d bytes", u.Path, from, aresp.StatusCode, len(abody))
					continue
				}
				for ext, ct := range want {
					if strings.HasSuffix(u.Path, ext) && !strings.HasPrefix(aresp.Header.Get("Content-Type"), ct) {
						t.Errorf("asset %s: Content-Type %q, want %s", u.Path, aresp.Header.Get("Content-Type"), ct)
					}
				}
				bodies[u.Path] = abody
				queue = append(queue, u.Path)
			}
		}
	}
	for _, p := range []string{"/app/app.js", "/app/api.js", "/app/session.js", "/app/vendor/windi-sdk.js", "/app/account.js", "/app/style.css", "/app/icon.svg"} {
		if !seen[p] {
			t.Errorf("%s is not referenced by the page or its modules", p)
		}
	}

	// Revalidation: the ETag answers 304.
	resp, _ = get(t, srv.URL+"/app/app.js")
	if etag := resp.Header.Get("ETag"); etag == "" {
		t.Error("/app/app.js has no ETag")
	} else if r, _ := get(t, srv.URL+"/app/app.js", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %s: status %d, want 304", etag, r.StatusCode)
	}

	for _, p := range []string{"/app/", "/app/nope.js", "/app/../go.mod", "/app/index.html", "/app/static/app.js", "/index.html", "/nope"} {
		if r, _ := get(t, srv.URL+p); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, r.StatusCode)
		}
	}

	// Serving / skips the request validator for / alone: the API is still
	// validated and authenticated.
	if r, _ := get(t, srv.URL+"/chats"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /chats without a token: status %d, want 401", r.StatusCode)
	}
	if r, _ := get(t, srv.URL+"//chats"); r.StatusCode == http.StatusOK {
		t.Errorf("GET //chats without a token: status %d", r.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", nil)
	if r, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		r.Body.Close()
		if r.StatusCode != http.StatusMethodNotAllowed && r.StatusCode != http.StatusNotFound {
			t.Errorf("POST /: status %d", r.StatusCode)
		}
	}
}

// No file of the client refers to another host: no CDN, no fonts, no
// analytics. The WebSocket URL is built from location at run time.
func TestNoExternalURLs(t *testing.T) {
	files := web.Files()
	for _, name := range []string{"index.html", "app.js", "api.js", "session.js", "vendor/windi-sdk.js", "style.css", "icon.svg"} {
		if _, ok := files[name]; !ok {
			t.Errorf("%s is not embedded", name)
		}
	}
	for name, body := range files {
		body = svgNS.ReplaceAll(body, nil)
		if loc := absoluteURL.FindIndex(body); loc != nil {
			start := max(0, loc[0]-40)
			t.Errorf("%s refers to another host near %q", name, body[start:min(len(body), loc[1]+40)])
		}
	}
}
