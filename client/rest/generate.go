// Package rest is the WinDI Chat REST client generated from
// api/openapi.yaml: the models (request and response bodies, and the
// WebSocket frames) and a client with typed responses. It depends on no
// server code. Never edit rest.gen.go; change the spec and run
// `go generate ./...`.
//
// Most programs use package client, which wraps this one with a bearer
// token and a resuming WebSocket.
package rest

//go:generate go tool oapi-codegen -config cfg.yaml ../../api/openapi.yaml
