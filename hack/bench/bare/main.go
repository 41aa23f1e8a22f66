// Command bare is the ceiling of the token hot path's HTTP stack: a plain
// net/http server that answers every request with a token answer of the
// same size and headers as tokenstore's, doing nothing else. Measured with
// the same wrk load as hack/bench/run.sh against pgbench in the same run
// (docs/performance.md, "The hot path on a quiet machine"), it says how
// much of the gap to pgbench is net/http and how much is tokenstore's own
// work:
//
//	go run ./hack/bench/bare -listen 127.0.0.1:18777 &
//	wrk -t 2 -c 32 -d 10s http://127.0.0.1:18777/
//
// With -gin the same answer comes from a gin engine with the token route's
// pattern and no middleware: the ceiling of gin on net/http, what
// tokenstore would serve if its own work (middleware, session check,
// broker) cost nothing.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18777", "address to listen on")
	useGin := flag.Bool("gin", false, "answer through a gin engine (route /api/v1.0/:provider/token, no middleware) instead of a bare handler")
	flag.Parse()
	// The answer tokenstore gives for the fixture's credentials (157 bytes).
	body := []byte(`{"access_token":"bench-at-` + strings.Repeat("X", 26) + `","token_type":"Bearer","expires_in":10619,"expires_at":1795931140,"scope":"openid email offline_access"}`)
	answer := func(w http.ResponseWriter) {
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		h.Set("X-Request-Id", "0123456789abcdef0123456789abcdef")
		_, _ = w.Write(body)
	}
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { answer(w) })
	if *useGin {
		gin.SetMode(gin.ReleaseMode)
		e := gin.New()
		e.GET("/api/v1.0/:provider/token", func(c *gin.Context) { answer(c.Writer) })
		handler = e
	}
	log.Fatal(http.ListenAndServe(*listen, handler))
}
