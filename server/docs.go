package server

import (
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"
	"sigs.k8s.io/yaml"

	"github.com/tokenstore/tokenstore/server/openapi"
)

var openapiJSONOnce = sync.OnceValues(func() ([]byte, error) { return yaml.YAMLToJSON(openapi.YAML) })

// openapiYAML serves the OpenAPI document as written.
func (s *Server) openapiYAML(c *gin.Context) {
	c.Data(http.StatusOK, "application/yaml", openapi.YAML)
}

// openapiJSON serves the same document as JSON, for tools that want it.
func (s *Server) openapiJSON(c *gin.Context) {
	b, err := openapiJSONOnce()
	if err != nil {
		_ = c.Error(err)
		return
	}
	c.Data(http.StatusOK, "application/json", b)
}
