// Package api holds the OpenAPI document, api/openapi.yaml, the single
// source of the REST API and of the WebSocket frame types.
package api

import _ "embed"

// Spec is api/openapi.yaml, byte for byte.
//
//go:embed openapi.yaml
var Spec []byte
