package main

// Fallback: a weighted (not pinned) request that reaches the canary and fails before any
// response byte has gone to the client is retried once on the primary. Failing means a
// 5xx answer, a connection error, a replica that died, or no response headers within the
// service's request timeout. The canary's failure is still counted against the canary:
// the gates must see it even though the client did not.
//
// A retry budget keeps a failing canary from doubling the primary's load: over the last
// ten seconds, retries may add at most `retry_budget_percent` of the service's requests
// plus `retry_min_per_second` (Linkerd's retry budget, with its defaults: retryRatio 0.2,
// minRetriesPerSecond 10, ttl 10s). The floor is what covers a failing canary at a
// modest request rate until the gates move its traffic back (a second or two): with 4
// clients and the canary at 25%, a share-only budget let a quarter of its failures
// through. Past the budget, errors pass through. A pinned request is never retried elsewhere. Requests still waiting for
// headers count too, however long ago they started (as Envoy's retry budgets count
// active requests): when hung canary replicas stall every client for a whole window,
// the window itself holds no request, yet each stalled one deserves its retry.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

const (
	retryBodyLimit = 1 << 20 // a larger body is streamed, not buffered, and not retried
	budgetWindow   = 10      // seconds
)

type fallback struct {
	base   http.RoundTripper
	s      *Splitter
	budget *budgets
}

func (f *fallback) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := req.Context().Value(ctxKey{}).(*exchange)
	f.budget.request(ex.route.Service)
	defer f.budget.finished(ex.route.Service)
	resp, err := f.attempt(req, ex)
	if !f.retryable(req, ex, resp, err) {
		return resp, err
	}
	status := http.StatusBadGateway
	if resp != nil {
		status = resp.StatusCode
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	} else if ex.timedOut.Load() {
		status = http.StatusGatewayTimeout
	}
	f.s.metrics.Observe(ex.route.Service, ex.version, status, time.Since(ex.started))
	f.s.metrics.Retry(ex.route.Service, ex.version, ex.route.Primary)
	primary := ex.route.Primary
	retry := req.Clone(req.Context())
	setUpstreamPath(retry.URL, ex.route.Upstreams[primary], ex)
	retry.Body = io.NopCloser(bytes.NewReader(ex.body))
	retry.ContentLength = int64(len(ex.body))
	ex.version, ex.retried, ex.started = primary, true, time.Now()
	ex.timedOut.Store(false)
	return f.attempt(retry, ex)
}

// attempt sends one try with its own timeout on the wait for response headers; once they
// arrive the timer stops, and the body (a stream, maybe) runs as long as it runs.
func (f *fallback) attempt(req *http.Request, ex *exchange) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(time.Duration(ex.route.TimeoutS*float64(time.Second)), func() {
		ex.timedOut.Store(true)
		cancel()
	})
	resp, err := f.base.RoundTrip(req.WithContext(ctx))
	timer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func (f *fallback) retryable(req *http.Request, ex *exchange, resp *http.Response, err error) bool {
	if ex.body == nil || ex.retried || ex.version == ex.route.Primary {
		return false
	}
	if _, ok := ex.route.Upstreams[ex.route.Primary]; !ok {
		return false
	}
	failed := (err != nil && !errors.Is(req.Context().Err(), context.Canceled)) || (resp != nil && resp.StatusCode >= 500)
	return failed && f.budget.allow(ex.route.Service, ex.route.RetryBudgetPercent, ex.route.RetryMinPerSecond)
}

// mayRetry: whether this request could be retried on the primary if its version fails.
func (s *Splitter) mayRetry(ex *exchange, method string) bool {
	if ex.pinned || ex.version == ex.route.Primary || ex.route.RetryBudgetPercent <= 0 {
		return false
	}
	if len(ex.route.RetryMethods) == 0 {
		return true
	}
	for _, m := range ex.route.RetryMethods {
		if m == method {
			return true
		}
	}
	return false
}

// bufferBody keeps a copy of a small body so that it can be sent twice.
func bufferBody(r *http.Request, ex *exchange) {
	if r.Body == nil || r.Body == http.NoBody {
		ex.body = []byte{}
		return
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, retryBodyLimit+1))
	if err != nil || len(head) > retryBodyLimit {
		// Too big (or unreadable) to replay: stream what was read, then the rest.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
		return
	}
	r.Body.Close()
	ex.body = head
	r.Body = io.NopCloser(bytes.NewReader(head))
	r.ContentLength = int64(len(head))
	r.TransferEncoding = nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// budgets counts requests and retries per service over the last budgetWindow seconds.
type budgets struct {
	mu      sync.Mutex
	windows map[string]*window
	active  map[string]int // requests waiting for response headers now
}

type window struct {
	second   [budgetWindow]int64 // which unix second each slot holds
	requests [budgetWindow]int
	retries  [budgetWindow]int
}

func newBudgets() *budgets { return &budgets{windows: map[string]*window{}, active: map[string]int{}} }

func (b *budgets) slot(service string) (*window, int) {
	w := b.windows[service]
	if w == nil {
		w = &window{}
		b.windows[service] = w
	}
	now := time.Now().Unix()
	i := int(now % budgetWindow)
	if w.second[i] != now {
		w.second[i], w.requests[i], w.retries[i] = now, 0, 0
	}
	return w, i
}

func (b *budgets) request(service string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w, i := b.slot(service)
	w.requests[i]++
	b.active[service]++
}

// finished: the request got its headers (or gave up); it no longer counts as active.
func (b *budgets) finished(service string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active[service]--
}

// allow takes one retry from the budget if there is one left: percent of the window's
// requests plus perSecond for each second of it.
func (b *budgets) allow(service string, percent, perSecond float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	w, i := b.slot(service)
	now := time.Now().Unix()
	requests, retries := 0, 0
	for j := range w.second {
		if now-w.second[j] < budgetWindow {
			requests += w.requests[j]
			retries += w.retries[j]
		}
	}
	if active := b.active[service]; active > requests {
		requests = active
	}
	if float64(retries) >= perSecond*budgetWindow+percent/100*float64(requests) {
		return false
	}
	w.retries[i]++
	return true
}
