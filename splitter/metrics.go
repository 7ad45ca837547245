package main

// Per-version counters: what the gates of issue "Gates that see what users see" read
// from real traffic. Prometheus text format, served on the reserved path and on the
// admin socket.

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

var buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type seriesKey struct{ service, version, code string }
type histKey struct{ service, version string }

type histogram struct {
	counts []uint64
	sum    float64
	n      uint64
}

type retryKey struct{ service, from, to string }

// Sample is one answered request, as the gates read it: when, which version, the status
// (502 for a connection error, 504 for a timeout), and the time to the response headers.
type Sample struct {
	AtMs      int64   `json:"t"`
	Service   string  `json:"s"`
	Version   string  `json:"v"`
	Status    int     `json:"c"`
	LatencyMs float64 `json:"ms"`
}

const sampleCapacity = 1 << 16

type Metrics struct {
	mu       sync.Mutex
	requests map[seriesKey]uint64
	latency  map[histKey]*histogram
	retries  map[retryKey]uint64
	samples  []Sample // a ring of the most recent answers
	next     int
}

func NewMetrics() *Metrics {
	return &Metrics{requests: map[seriesKey]uint64{}, latency: map[histKey]*histogram{},
		retries: map[retryKey]uint64{}, samples: make([]Sample, 0, sampleCapacity)}
}

// Retry counts one request that failed on `from` and was sent again to `to`.
func (m *Metrics) Retry(service, from, to string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retries[retryKey{service, from, to}]++
}

// Since returns the samples answered at or after `sinceMs` (unix milliseconds), oldest first.
func (m *Metrics) Since(sinceMs int64) []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Sample{}
	n := len(m.samples)
	for k := 0; k < n; k++ {
		s := m.samples[(m.next+k)%n]
		if n < sampleCapacity {
			s = m.samples[k]
		}
		if s.AtMs >= sinceMs {
			out = append(out, s)
		}
	}
	return out
}

func (m *Metrics) record(s Sample) {
	if len(m.samples) < sampleCapacity {
		m.samples = append(m.samples, s)
		return
	}
	m.samples[m.next] = s
	m.next = (m.next + 1) % sampleCapacity
}

// Observe counts one answered request; d is the time to the response headers (0: none).
func (m *Metrics) Observe(service, version string, status int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[seriesKey{service, version, fmt.Sprint(status)}]++
	if version != "none" {
		m.record(Sample{time.Now().UnixMilli(), service, version, status, float64(d.Microseconds()) / 1000})
	}
	if d <= 0 {
		return
	}
	k := histKey{service, version}
	h := m.latency[k]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(buckets))}
		m.latency[k] = h
	}
	s := d.Seconds()
	for i, b := range buckets {
		if s <= b {
			h.counts[i]++
		}
	}
	h.sum += s
	h.n++
}

func (m *Metrics) Write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintln(w, "# HELP gpuserve_requests_total Requests answered, by service, version and HTTP status.")
	fmt.Fprintln(w, "# TYPE gpuserve_requests_total counter")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(w, "gpuserve_requests_total{service=%q,version=%q,code=%q} %d\n", k.service, k.version, k.code, m.requests[k])
	}
	fmt.Fprintln(w, "# HELP gpuserve_retries_total Requests that failed on one version and were retried on another.")
	fmt.Fprintln(w, "# TYPE gpuserve_retries_total counter")
	for _, k := range sortedKeys(m.retries) {
		fmt.Fprintf(w, "gpuserve_retries_total{service=%q,from=%q,to=%q} %d\n", k.service, k.from, k.to, m.retries[k])
	}
	fmt.Fprintln(w, "# HELP gpuserve_response_seconds Time from request to response headers, by service and version.")
	fmt.Fprintln(w, "# TYPE gpuserve_response_seconds histogram")
	for _, k := range sortedKeys(m.latency) {
		h := m.latency[k]
		for i, b := range buckets {
			fmt.Fprintf(w, "gpuserve_response_seconds_bucket{service=%q,version=%q,le=\"%g\"} %d\n", k.service, k.version, b, h.counts[i])
		}
		fmt.Fprintf(w, "gpuserve_response_seconds_bucket{service=%q,version=%q,le=\"+Inf\"} %d\n", k.service, k.version, h.n)
		fmt.Fprintf(w, "gpuserve_response_seconds_sum{service=%q,version=%q} %g\n", k.service, k.version, h.sum)
		fmt.Fprintf(w, "gpuserve_response_seconds_count{service=%q,version=%q} %d\n", k.service, k.version, h.n)
	}
}

// sortedKeys gives a map's keys in a stable order (by their printed form), so that the
// metrics page and the weighted choice never depend on Go's random map order.
func sortedKeys[K comparable, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	return keys
}
