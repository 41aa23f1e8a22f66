package server

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/tokenstore/tokenstore/internal/fault"
	"github.com/tokenstore/tokenstore/internal/settings"
)

// maxBuckets bounds each set of buckets (addresses, principals): about
// 200 bytes an entry, so some 13 MB at most. The least recently used
// bucket goes first; a bucket unused for burst/rate seconds is full again
// and so no different from a new one, which is what dropping it makes.
const maxBuckets = 1 << 16

// errRateLimited answers a request over its limit: 429 on the REST API and
// on the token-exchange endpoint alike (OAuth code temporarily_unavailable,
// the closest RFC 6749 has), with Retry-After set by refuseRate.
var errRateLimited = &fault.Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
	OAuth: "temporarily_unavailable", OAuthStatus: http.StatusTooManyRequests,
	Message: "Too many requests; try again after the time in Retry-After."}

// buckets are the token buckets of one kind of caller, by key.
type buckets struct {
	limit rate.Limit
	burst int
	cache *lru.Cache[string, *rate.Limiter]
}

// newBuckets gives perMinute requests a minute and burst at once to each
// key; nil (no limit) when perMinute is 0.
func newBuckets(perMinute, burst int) *buckets {
	if perMinute <= 0 {
		return nil
	}
	c, _ := lru.New[string, *rate.Limiter](maxBuckets) // fails only for a size below 1
	return &buckets{limit: rate.Limit(float64(perMinute) / 60), burst: max(burst, 1), cache: c}
}

func (b *buckets) limiter(key string) *rate.Limiter {
	if l, ok := b.cache.Get(key); ok {
		return l
	}
	l := rate.NewLimiter(b.limit, b.burst)
	// A concurrent first request of the same key may have added one.
	if prev, ok, _ := b.cache.PeekOrAdd(key, l); ok {
		return prev
	}
	return l
}

// take spends one request of key's bucket, or says how long until one is
// there again.
func (b *buckets) take(key string, now time.Time) (time.Duration, bool) {
	r := b.limiter(key).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// rateLimits are this replica's limits: the buckets of client addresses,
// spent by requests that no principal made (sign-in, and requests whose
// credentials were missing or refused), and those of principals (people,
// their programs and workloads), spent by every request they make. A
// principal's requests do not spend their address's bucket: many people
// behind one NAT or one untrusted proxy would otherwise share a limit.
type rateLimits struct {
	address, principal *buckets
}

func newRateLimits(s *settings.Settings) rateLimits {
	return rateLimits{address: newBuckets(s.RateLimitPerAddress, s.RateLimitBurst),
		principal: newBuckets(s.RateLimitPerPrincipal, s.RateLimitBurst)}
}

// addressKey is the bucket key of a client address: an IPv6 address by its
// /64, which one host or site usually holds whole (so a client cannot
// take a fresh bucket for each of its addresses).
func addressKey(ip string) string {
	a := net.ParseIP(ip)
	if a == nil || a.To4() != nil {
		return ip
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// refuseRate answers 429 with Retry-After (whole seconds, at least 1) and
// counts the refusal.
func (s *Server) refuseRate(c *gin.Context, kind string, wait time.Duration) error {
	c.Header("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(wait.Seconds())))))
	s.opt.Metrics.RateLimited(c.FullPath(), kind)
	return errRateLimited
}

// limitAddress stands before every sign-in route: each request spends one
// of its client address's bucket (c.ClientIP: the peer, or X-Forwarded-For
// from TRUSTED_PROXIES).
func (s *Server) limitAddress(c *gin.Context) {
	if err := s.spendAddress(c); err != nil {
		c.Abort()
		_ = c.Error(err)
		return
	}
	c.Next()
}

// limitUnidentified stands before authentication on the routes a
// principal calls. A request that established no principal (no
// credentials, or refused ones) spends one of its client address's bucket
// afterwards, and when that is empty its refusal becomes 429. Requests of
// principals spend their own bucket (limitPrincipal), never their
// address's: people behind one NAT, or one proxy missing from
// TRUSTED_PROXIES, do not share a limit.
func (s *Server) limitUnidentified(c *gin.Context) {
	c.Next()
	if cl := callOf(c); cl != nil && cl.limited {
		return
	}
	if err := s.spendAddress(c); err != nil && !c.Writer.Written() {
		c.Errors = c.Errors[:0]
		_ = c.Error(err)
	}
}

// spendAddress spends one request of the client address's bucket
// (c.ClientIP: the peer, or X-Forwarded-For from TRUSTED_PROXIES), or
// returns the 429 to answer.
func (s *Server) spendAddress(c *gin.Context) error {
	b := s.limits.address
	if b == nil {
		return nil
	}
	if d, ok := b.take(addressKey(c.ClientIP()), time.Now()); !ok {
		return s.refuseRate(c, "address", d)
	}
	return nil
}

// limitPrincipal stands after authenticated: the caller's requests spend
// their own bucket.
func (s *Server) limitPrincipal(c *gin.Context) {
	if err := s.takePrincipal(c, "user:"+identity(c).UserID); err != nil {
		c.Abort()
		_ = c.Error(err)
		return
	}
	c.Next()
}

// takePrincipal spends one request of the principal's bucket (key names
// it: "user:<id>" or "sa:<namespace>/<name>") and marks the request as a
// principal's, so that its address is not charged (limitUnidentified).
func (s *Server) takePrincipal(c *gin.Context, key string) error {
	if cl := callOf(c); cl != nil {
		cl.limited = true
	}
	b := s.limits.principal
	if b == nil {
		return nil
	}
	if d, ok := b.take(key, time.Now()); !ok {
		return s.refuseRate(c, "principal", d)
	}
	return nil
}

// unidentified is the answer to a token exchange whose subject token was
// refused: err, or 429 once the client address's bucket is empty
// (limitUnidentified's rule, applied where the exchange authenticates).
func (s *Server) unidentified(c *gin.Context, err error) error {
	if rerr := s.spendAddress(c); rerr != nil {
		return rerr
	}
	return err
}
