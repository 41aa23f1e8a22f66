// Package webhooks tells an operator's endpoint about credentials and
// providers that need attention: CloudEvents 1.0 in structured JSON mode
// (the CloudEvents Go SDK builds, validates and encodes the envelope),
// POSTed to one URL per install, signed with HMAC-SHA256, retried with
// exponential backoff (cenkalti/backoff).
//
// Events: credential.needs_reauth (a provider refused a refresh token),
// credential.recovered (the person linked the account again),
// credential.expiring (a refresh token's absolute expiry is near) and
// provider.not_ready (a provider this replica served was withdrawn). The
// CloudEvents type is the event name prefixed with "io.tokenstore.".
//
// Signature: header Tokenstore-Signature: t=<unix seconds>,v1=<hex>, where
// hex is HMAC-SHA256(secret, "<t>.<body>"). The timestamp lets receivers
// refuse replays; the body is the exact bytes received.
//
// Delivery is at least once and in memory: events queued when the process
// stops are lost (counted as dropped). Events carry a user id and a
// provider id, never a token.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
)

// Event names.
const (
	CredentialNeedsReauth = "credential.needs_reauth"
	CredentialRecovered   = "credential.recovered"
	CredentialExpiring    = "credential.expiring"
	ProviderNotReady      = "provider.not_ready"
)

// TypePrefix turns an event name into a CloudEvents type.
const TypePrefix = "io.tokenstore."

// SignatureHeader carries the HMAC signature.
const SignatureHeader = "Tokenstore-Signature"

// contentType is the structured JSON mode's media type. The charset
// parameter is what deliveries have always carried; it is allowed by the
// CloudEvents HTTP binding and receivers matching the media type ignore it.
var contentType = format.JSON.MediaType() + "; charset=utf-8"

// Options configure a Sender.
type Options struct {
	// URL receives the POSTs (WEBHOOK_URL).
	URL string
	// Secret keys the HMAC (WEBHOOK_SECRET); required.
	Secret string
	// Source is the CloudEvents source: the install's EXTERNAL_URL.
	Source     string
	HTTPClient *http.Client
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	// MaxAttempts per event; 0 means 8.
	MaxAttempts int
	// Backoff before the first retry, doubled each time up to MaxBackoff;
	// 0 means 1 s and 5 min.
	Backoff, MaxBackoff time.Duration
	// QueueSize bounds waiting events; 0 means 1000. A full queue drops.
	QueueSize int
	// Workers deliver in parallel; 0 means 2.
	Workers int
	Now     func() time.Time
}

// Sender queues and delivers events. Its methods never block the caller.
type Sender struct {
	opt   Options
	log   *slog.Logger
	queue chan event.Event
	wg    sync.WaitGroup
}

// New checks the options.
func New(opt Options) (*Sender, error) {
	u, err := url.Parse(opt.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("webhooks: WEBHOOK_URL must be an absolute http(s) URL")
	}
	if opt.Secret == "" {
		return nil, errors.New("webhooks: WEBHOOK_SECRET is required with WEBHOOK_URL: receivers must be able to tell our events from forgeries")
	}
	if opt.Source == "" {
		return nil, errors.New("webhooks: the CloudEvents source (EXTERNAL_URL) is required")
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 8
	}
	if opt.Backoff <= 0 {
		opt.Backoff = time.Second
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 5 * time.Minute
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = 1000
	}
	if opt.Workers <= 0 {
		opt.Workers = 2
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Sender{opt: opt, log: opt.Logger.With("component", "webhooks"), queue: make(chan event.Event, opt.QueueSize)}, nil
}

// Send queues an event (name is one of the Event names). A full queue drops
// it rather than slow down the request or refresh that caused it.
func (s *Sender) Send(name, subject string, data map[string]any) {
	s.send(randomID(), name, subject, data)
}

// send queues the event of that id, name and subject.
func (s *Sender) send(id, name, subject string, data map[string]any) {
	e := event.New(event.CloudEventsVersionV1)
	e.SetID(id)
	e.SetSource(s.opt.Source)
	e.SetType(TypePrefix + name)
	e.SetSubject(subject)
	e.SetTime(s.opt.Now().UTC())
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		s.opt.Metrics.WebhookDelivery(e.Type(), "failed")
		s.log.Error("webhook event data not encodable", "type", e.Type(), "error", err)
		return
	}
	s.enqueue(e)
}

func (s *Sender) enqueue(e event.Event) {
	select {
	case s.queue <- e:
		s.opt.Metrics.WebhookQueue(len(s.queue))
	default:
		s.opt.Metrics.WebhookDelivery(e.Type(), "dropped")
		s.log.Warn("webhook queue full; event dropped", "type", e.Type())
	}
}

// CredentialEvent implements broker.Notifier (and the refresher's).
func (s *Sender) CredentialEvent(ctx context.Context, event, userID, provider string, detail map[string]any) {
	s.CredentialEventID(ctx, randomID(), event, userID, provider, detail)
}

// CredentialEventID is CredentialEvent with the event id given: an event
// every replica may send (credential.expiring from the periodic scan)
// carries the same id everywhere, so receivers drop the duplicates.
func (s *Sender) CredentialEventID(_ context.Context, id, event, userID, provider string, detail map[string]any) {
	data := map[string]any{"user_id": userID, "provider": provider}
	maps.Copy(data, detail)
	s.send(id, event, "credentials/"+provider, data)
}

// Run delivers until ctx ends, then gives in-flight deliveries a few
// seconds and counts what is left as dropped.
func (s *Sender) Run(ctx context.Context) error {
	for range s.opt.Workers {
		s.wg.Go(func() { s.worker(ctx) })
	}
	<-ctx.Done()
	s.wg.Wait()
	for {
		select {
		case e := <-s.queue:
			s.opt.Metrics.WebhookDelivery(e.Type(), "dropped")
		default:
			s.opt.Metrics.WebhookQueue(0)
			return nil
		}
	}
}

func (s *Sender) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.queue:
			s.opt.Metrics.WebhookQueue(len(s.queue))
			outcome := s.deliver(ctx, e)
			s.opt.Metrics.WebhookDelivery(e.Type(), outcome)
		}
	}
}

// deliver POSTs e until it is accepted, refused for good, out of attempts,
// or ctx ends; it returns the outcome label.
func (s *Sender) deliver(ctx context.Context, e event.Event) string {
	// Validate refuses an event that is not valid CloudEvents (a missing
	// source, say) before any receiver sees it.
	if err := e.Validate(); err != nil {
		s.log.Error("webhook event is not a valid CloudEvent", "type", e.Type(), "id", e.ID(), "error", err)
		return "failed"
	}
	body, err := format.JSON.Marshal(&e)
	if err != nil {
		s.log.Error("webhook event not encodable", "type", e.Type(), "error", err)
		return "failed"
	}
	// Randomization 0.5 spreads each wait over [½, 1½] of its step, so
	// many replicas do not retry in step. Attempts, not elapsed time, bound
	// the retries (the library's default 15-minute cap is turned off).
	b := &backoff.ExponentialBackOff{InitialInterval: s.opt.Backoff, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: s.opt.MaxBackoff}
	attempts := 0
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		attempts++
		status, err := s.post(ctx, e.Type(), body)
		switch {
		case err != nil:
			return struct{}{}, err
		case status/100 == 2:
			return struct{}{}, nil
		case status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			// The receiver understood and refused (bad signature, unknown
			// type): the same bytes will be refused again.
			return struct{}{}, backoff.Permanent(&refusedError{status: status})
		}
		return struct{}{}, fmt.Errorf("webhook receiver answered %d", status)
	}, backoff.WithBackOff(b), backoff.WithMaxTries(uint(s.opt.MaxAttempts)), backoff.WithMaxElapsedTime(0))
	var refused *refusedError
	switch {
	case err == nil:
		return "delivered"
	case errors.As(err, &refused):
		s.log.Warn("webhook refused", "type", e.Type(), "id", e.ID(), "status", refused.status)
		return "failed"
	case ctx.Err() != nil && attempts < s.opt.MaxAttempts:
		return "dropped"
	}
	s.log.Warn("webhook undeliverable; giving up", "type", e.Type(), "id", e.ID(), "attempts", attempts, "error", err)
	return "failed"
}

// refusedError is a 4xx answer that retrying cannot change.
type refusedError struct{ status int }

func (e *refusedError) Error() string { return "webhook receiver refused: " + strconv.Itoa(e.status) }

// post sends one attempt; status 0 with an error means no answer.
func (s *Sender) post(ctx context.Context, typ string, body []byte) (int, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opt.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("building the webhook request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set(SignatureHeader, Sign(s.opt.Secret, s.opt.Now(), body))
	resp, err := s.opt.HTTPClient.Do(req)
	if err != nil {
		s.opt.Metrics.WebhookAttempt(typ, 0, time.Since(start))
		return 0, fmt.Errorf("posting the webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	s.opt.Metrics.WebhookAttempt(typ, resp.StatusCode, time.Since(start))
	return resp.StatusCode, nil
}

// Sign returns the signature header value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte("."))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Verify checks a signature header against body, refusing one older than
// tolerance (receivers' side; tokenstore's tests use it too).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range bytes.Split([]byte(header), []byte(",")) {
		k, v, _ := bytes.Cut(part, []byte("="))
		switch string(k) {
		case "t":
			ts = string(v)
		case "v1":
			sig = string(v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("webhooks: malformed signature header")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("webhooks: signature timestamp outside tolerance")
	}
	if !hmac.Equal([]byte(sig), []byte(mac(secret, ts, body))) {
		return errors.New("webhooks: signature mismatch")
	}
	return nil
}

// ProviderLister is the part of the provider registry WatchProviders reads.
type ProviderLister interface {
	List() []*providers.Provider
	Ready() bool
	Changed() <-chan struct{}
}

// WatchProviders sends provider.not_ready when a provider leaves the
// registry (its Secret went missing, discovery failed, it was deleted) once
// the registry has been filled. It is WatchReadiness without declared
// readiness.
func (s *Sender) WatchProviders(ctx context.Context, reg ProviderLister) {
	s.WatchReadiness(ctx, reg, nil, 0)
}

// WatchReadiness sends provider.not_ready once per transition to not ready,
// once the registry has been filled:
//
//   - for every provider readiness declares (manifest file, Kubernetes
//     TokenProviders), when its Ready condition turns false, including a
//     provider that was never ready (Secret missing, discovery failing from
//     the start). Its event id is provider.not_ready/<provider>/<unix time of
//     the condition's transition>: every replica reading the same
//     TokenProvider status sends the same id, and receivers drop duplicates
//     by id, as CloudEvents intends. A condition not written yet
//     (metrics.ReasonUnknown) is not announced.
//   - for a provider that leaves the registry and is not declared (deleted,
//     or its manifest unreadable): the event id names its configuration
//     version.
//
// readiness is polled every poll (0 means 5 s) and on registry changes; nil
// watches the registry alone.
func (s *Sender) WatchReadiness(ctx context.Context, reg ProviderLister, readiness func(context.Context) []metrics.ProviderReadiness, poll time.Duration) {
	if poll <= 0 {
		poll = 5 * time.Second
	}
	var known map[string]*providers.Provider
	announced := map[string]bool{} // declared providers told not ready
	for {
		ch := reg.Changed()
		cur := map[string]*providers.Provider{}
		for _, p := range reg.List() {
			cur[p.ID] = p
		}
		if reg.Ready() {
			declared := map[string]bool{}
			if readiness != nil {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				for _, r := range readiness(rctx) {
					declared[r.ID] = true
					switch {
					case r.Ready:
						delete(announced, r.ID)
					case r.Reason == metrics.ReasonUnknown || announced[r.ID]:
					default:
						announced[r.ID] = true
						s.providerNotReady(r.ID, "provider.not_ready/"+r.ID+"/"+strconv.FormatInt(r.Since.Unix(), 10), r.Reason)
					}
				}
				cancel()
				for id := range announced {
					if !declared[id] {
						delete(announced, id)
					}
				}
			}
			for id, p := range known {
				if _, ok := cur[id]; !ok && !declared[id] {
					s.providerNotReady(id, "provider.not_ready/"+id+"/"+p.Version, "")
				}
			}
			known = cur
		}
		// Until the registry is filled, a provider missing from it is
		// merely not loaded yet; poll for readiness, as it may come
		// without a change. Declared readiness changes without registry
		// changes (a provider that keeps failing), so it is polled too.
		var tick <-chan time.Time
		switch {
		case !reg.Ready():
			tick = time.After(min(poll, time.Second))
		case readiness != nil:
			tick = time.After(poll)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick:
		}
	}
}

func (s *Sender) providerNotReady(id, eventID, reason string) {
	data := map[string]any{"provider": id}
	if reason != "" {
		data["reason"] = reason
	}
	s.send(eventID, ProviderNotReady, "providers/"+id, data)
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
