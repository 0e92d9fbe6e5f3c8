// Package docs serves the API documentation from the binary: Swagger UI at
// /docs (its assets embedded by github.com/swaggo/files/v2, so it works
// offline) and the OpenAPI document at /openapi.yaml (api/openapi.yaml byte
// for byte) and /openapi.json (the same document as JSON).
package docs

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"
	swaggerfiles "github.com/swaggo/files/v2"

	"github.com/windi-chat/windi/api"
)

// Paths the package serves; app lists them as unvalidated prefixes.
const (
	UIPath   = "/docs"
	YAMLPath = "/openapi.yaml"
	JSONPath = "/openapi.json"
)

var (
	//go:embed index.html
	indexHTML []byte
	//go:embed swagger-initializer.js
	initializerJS []byte
)

// csp keeps the docs page on this origin: scripts, styles, images and
// requests from Try it out all go to the server that served the page.
// Swagger UI sets inline styles and shows data: images, nothing else.
const csp = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; font-src 'self' data:; object-src 'none'; " +
	"base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// Mount registers the documentation routes on e.
func Mount(e *echo.Echo) {
	methods := []string{http.MethodGet, http.MethodHead}
	e.Match(methods, YAMLPath, func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-cache")
		return c.Blob(http.StatusOK, "application/yaml; charset=utf-8", api.Spec)
	})
	e.Match(methods, JSONPath, func(c echo.Context) error {
		b, err := specJSON()
		if err != nil {
			return err
		}
		c.Response().Header().Set("Cache-Control", "no-cache")
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
	})

	index := page("text/html; charset=utf-8", indexHTML)
	e.Match(methods, UIPath, index)
	e.Match(methods, UIPath+"/", index)
	e.Match(methods, UIPath+"/index.html", index)
	e.Match(methods, UIPath+"/swagger-initializer.js", page("text/javascript; charset=utf-8", initializerJS))
	assets := http.StripPrefix(UIPath+"/", http.FileServerFS(swaggerfiles.FS))
	e.Match(methods, UIPath+"/*", func(c echo.Context) error {
		name := strings.TrimPrefix(c.Request().URL.Path, UIPath+"/")
		// Only the files at the top of the embedded dist: no listings, no
		// paths that FileServer would redirect.
		if name == "" || strings.Contains(name, "/") || path.Clean(name) != name {
			return echo.NewHTTPError(http.StatusNotFound)
		}
		if _, err := fs.Stat(swaggerfiles.FS, name); err != nil {
			return echo.NewHTTPError(http.StatusNotFound)
		}
		h := c.Response().Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("Cache-Control", "public, max-age=3600")
		assets.ServeHTTP(c.Response(), c.Request())
		return nil
	})
}

// page answers with body as ctype under the docs CSP.
func page(ctype string, body []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("Cache-Control", "no-cache")
		return c.Blob(http.StatusOK, ctype, body)
	}
}

var specJSON = sync.OnceValues(func() ([]byte, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load api/openapi.yaml: %w", err)
	}
	return json.Marshal(doc)
})
