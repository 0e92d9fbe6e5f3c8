package handlers

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/windi-chat/windi/gen"
)

// TestPanicBecomesProblem checks that a panicking handler answers with a 500
// problem and that the process goes on serving.
func TestPanicBecomesProblem(t *testing.T) {
	e := echo.New()
	if err := Mount(e, &Server{}, nil, Options{Unvalidated: []string{"/boom"}}); err != nil {
		t.Fatal(err)
	}
	e.GET("/boom", func(echo.Context) error { panic("kaboom") })
	for range 2 {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom", nil))
		if rec.Code != 500 || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("got %d %q, want 500 application/problem+json", rec.Code, rec.Header().Get("Content-Type"))
		}
		var p gen.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != gen.ProblemCodeInternal || p.Status != 500 {
			t.Errorf("got %s (%v), want an internal problem", rec.Body, err)
		}
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("after a panic: got /healthz %d, want 200", rec.Code)
	}
}
