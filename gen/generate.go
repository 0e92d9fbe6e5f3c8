// Package gen holds the code generated from api/openapi.yaml: models (the REST
// bodies and the WebSocket frames), the echo strict server interface, a Go
// client, and the embedded spec. Never edit windi.gen.go; change the spec and
// run `go generate ./gen`.
package gen

//go:generate go tool oapi-codegen -config cfg.yaml ../api/openapi.yaml
