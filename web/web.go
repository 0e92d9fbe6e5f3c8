// Package web serves the browser client from the binary: a single page at
// / and its assets under /app/, plain HTML, CSS and JavaScript modules
// embedded at build time (no build step, nothing loaded from another host).
// The page talks to the server through the public REST API and the
// all-chats WebSocket (/ws), exactly as any other client does.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
)

// Paths the package serves; app lists them as unvalidated (Root as an
// exact path, AssetPrefix as a prefix).
const (
	Root        = "/"
	AssetPrefix = "/app"
)

//go:embed static
var static embed.FS

// csp keeps the client on this origin: its scripts, styles and images come
// from the server that served the page, and it talks to nothing else
// ('self' covers ws: and wss: on the same host). No inline script or style.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// types are the content types of the files in static/, by extension; a
// file of another kind is not served.
var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Files returns the embedded client: file names (relative to static/,
// e.g. "app.js") to their contents. Tests use it to inspect every file.
func Files() map[string][]byte {
	out := map[string][]byte{}
	for name, f := range load() {
		out[name] = f.body
	}
	return out
}

func load() map[string]file {
	out := map[string]file{}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // static/ is embedded: it exists
	}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := types[path.Ext(name)]
		if !ok {
			return nil
		}
		b, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[name] = file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}

// Mount registers the client's routes on e: GET and HEAD of / (the page)
// and /app/<file> (its assets). Responses are revalidated on every load
// (no-cache with an ETag), so a new binary's client is picked up at once.
func Mount(e *echo.Echo) {
	files := load()
	methods := []string{http.MethodGet, http.MethodHead}
	e.Match(methods, Root, serve(files["index.html"]))
	e.Match(methods, AssetPrefix+"/*", func(c echo.Context) error {
		name := strings.TrimPrefix(c.Request().URL.Path, AssetPrefix+"/")
		f, ok := files[name]
		if !ok || name == "index.html" || path.Clean(name) != name {
			return echo.NewHTTPError(http.StatusNotFound)
		}
		return serve(f)(c)
	})
}

func serve(f file) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if match := c.Request().Header.Get("If-None-Match"); match != "" && strings.Contains(match, f.etag) {
			return c.NoContent(http.StatusNotModified)
		}
		return c.Blob(http.StatusOK, f.ctype, f.body)
	}
}
