package main

// The data plane: every request under a service's prefix goes, unchanged, to the version
// chosen by weight or pinned by x-serve-version, through the Serve proxy on that
// version's hidden prefix. Responses stream back chunk by chunk (FlushInterval -1).
// The splitter's own errors are short JSON of one shape; an app's responses pass as-is.

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// VersionHeader must match traffic/protocol.py VERSION_HEADER.
const VersionHeader = "X-Serve-Version"

// ReservedPrefix belongs to the splitter; every other path belongs to the apps.
const ReservedPrefix = "/-/gpuserve/"

type Splitter struct {
	table          atomic.Pointer[Table]
	upstream       *url.URL
	proxy          *httputil.ReverseProxy
	maxHeaderBytes int
	metrics        *Metrics
}

type ctxKey struct{}

// exchange is what one request carries from the handler to the proxy's hooks.
type exchange struct {
	route    *Route
	version  string
	pinned   bool
	started  time.Time // of the current attempt
	timedOut atomic.Bool
	rest     string // the path below the service's prefix, and its raw form
	rawRest  string
	body     []byte // the buffered body of a request that may be retried, else nil
	retried  bool
}

func NewSplitter(upstream *url.URL, maxHeaderBytes int, metrics *Metrics) *Splitter {
	s := &Splitter{upstream: upstream, maxHeaderBytes: maxHeaderBytes, metrics: metrics}
	s.table.Store(&Table{})
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:           512,
		MaxIdleConnsPerHost:    512,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true, // bodies pass through byte for byte
		MaxResponseHeaderBytes: 8 << 20,
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      &fallback{base: transport, s: s, budget: newBudgets()},
		FlushInterval:  -1, // every chunk as soon as the version writes it (SSE, token streams)
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
	}
	return s
}

func (s *Splitter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, ReservedPrefix) || r.URL.Path == "/-/healthz" {
		s.reserved(w, r)
		return
	}
	if headerBytes(r) > s.maxHeaderBytes {
		writeError(w, http.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
			"request headers exceed the limit", "", "")
		return
	}
	table := s.table.Load()
	route, _ := table.Match(r.URL.Path)
	if route == nil {
		writeError(w, http.StatusNotFound, "no_service", "no service owns this path", "", "")
		return
	}
	version, status, reason := choose(route, r.Header.Get(VersionHeader))
	if status != 0 {
		s.metrics.Observe(route.Service, "none", status, 0)
		writeError(w, status, reason, errorText[reason], route.Service, "")
		return
	}
	if r.ContentLength > route.MaxBodyBytes {
		s.metrics.Observe(route.Service, version, http.StatusRequestEntityTooLarge, 0)
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the limit", route.Service, version)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, route.MaxBodyBytes)
	}
	ex := &exchange{route: route, version: version, pinned: r.Header.Get(VersionHeader) != "", started: time.Now()}
	if s.mayRetry(ex, r.Method) {
		bufferBody(r, ex)
	}
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ex)))
}

var errorText = map[string]string{
	"unknown_version":  "no live version matches the x-serve-version pin",
	"no_ready_version": "no version of this service is ready",
}

// choose picks the version for one request: the pin if given, else by weight.
func choose(route *Route, pin string) (string, int, string) {
	if pin != "" {
		version := pin
		switch pin {
		case "primary":
			version = route.Primary
		case "canary":
			version = route.Canary
		}
		if _, ok := route.Upstreams[version]; !ok || version == "" {
			return "", http.StatusNotFound, "unknown_version"
		}
		return version, 0, ""
	}
	total := 0.0
	for v, w := range route.Weights {
		if _, ok := route.Upstreams[v]; ok {
			total += w
		}
	}
	if total > 0 {
		x := rand.Float64() * total
		for _, v := range sortedKeys(route.Weights) {
			if _, ok := route.Upstreams[v]; !ok {
				continue
			}
			x -= route.Weights[v]
			if x < 0 {
				return v, 0, ""
			}
		}
	}
	if _, ok := route.Upstreams[route.Primary]; ok {
		return route.Primary, 0, ""
	}
	return "", http.StatusServiceUnavailable, "no_ready_version"
}

func (s *Splitter) rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(ctxKey{}).(*exchange)
	hidden := ex.route.Upstreams[ex.version]
	rest := strings.TrimPrefix(pr.In.URL.Path, ex.route.Prefix)
	if ex.route.Prefix == "/" {
		rest = pr.In.URL.Path
	}
	ex.rest = rest
	if pr.In.URL.RawPath != "" {
		ex.rawRest = strings.TrimPrefix(pr.In.URL.RawPath, ex.route.Prefix)
		if ex.route.Prefix == "/" {
			ex.rawRest = pr.In.URL.RawPath
		}
	}
	out := pr.Out.URL
	out.Scheme, out.Host = s.upstream.Scheme, s.upstream.Host
	setUpstreamPath(out, hidden, ex)
	out.RawQuery = pr.In.URL.RawQuery
	pr.Out.Host = pr.In.Host // the app sees the host the client used
	pr.SetXForwarded()
}

// setUpstreamPath points an outgoing URL at `hidden` + the request's path below the prefix.
func setUpstreamPath(out *url.URL, hidden string, ex *exchange) {
	out.Path = hidden + ex.rest
	out.RawPath = ""
	if ex.rawRest != "" {
		out.RawPath = hidden + ex.rawRest
	}
}

func (s *Splitter) modifyResponse(resp *http.Response) error {
	ex := resp.Request.Context().Value(ctxKey{}).(*exchange)
	resp.Header.Set(VersionHeader, ex.version)
	// A redirect the app sends names its hidden prefix; the client must see the public one.
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", publicLocation(loc, ex.route.Upstreams[ex.version], ex.route.Prefix))
	}
	s.metrics.Observe(ex.route.Service, ex.version, resp.StatusCode, time.Since(ex.started))
	return nil
}

func publicLocation(loc, hidden, public string) string {
	if public == "/" {
		public = ""
	}
	if u, err := url.Parse(loc); err == nil && (u.Path == hidden || strings.HasPrefix(u.Path, hidden+"/")) {
		u.Path = public + strings.TrimPrefix(u.Path, hidden)
		u.RawPath = ""
		if u.Path == "" {
			u.Path = "/"
		}
		return u.String()
	}
	return loc
}

func (s *Splitter) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := r.Context().Value(ctxKey{}).(*exchange)
	status, reason, text := http.StatusBadGateway, "upstream_failed", "the version did not answer"
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		status, reason, text = http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the limit"
	case ex.timedOut.Load():
		status, reason, text = http.StatusGatewayTimeout, "timeout", "the version did not answer in time"
	case errors.Is(err, context.Canceled):
		status, reason, text = 499, "client_closed", "the client went away"
	case errors.Is(err, syscall.ECONNREFUSED):
		status, reason, text = http.StatusServiceUnavailable, "unavailable", "the serving runtime is not reachable"
	}
	s.metrics.Observe(ex.route.Service, ex.version, status, time.Since(ex.started))
	if status == 499 {
		return
	}
	writeError(w, status, reason, text, ex.route.Service, ex.version)
}

// writeError is the one shape of every error the splitter itself answers. It never
// echoes anything the client sent.
func writeError(w http.ResponseWriter, status int, reason, text, service, version string) {
	body := map[string]string{"error": reason, "detail": text}
	if service != "" {
		body["service"] = service
	}
	if version != "" {
		body["version"] = version
		w.Header().Set(VersionHeader, version)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + 12
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func (s *Splitter) reserved(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/-/healthz":
		if s.table.Load().LoadedAt.IsZero() {
			writeError(w, http.StatusServiceUnavailable, "not_ready", "no routing table loaded yet", "", "")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("success"))
	case ReservedPrefix + "routes":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.table.Load())
	case ReservedPrefix + "metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.metrics.Write(w)
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such splitter path", "", "")
	}
}
