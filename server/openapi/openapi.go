// Package openapi embeds the OpenAPI document of tokenstore's HTTP API.
package openapi

import _ "embed"

// YAML is the OpenAPI 3 document, as written.
//
//go:embed openapi.yaml
var YAML []byte
