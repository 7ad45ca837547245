package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const state = `{"applications": {
  "llm": {"route_prefix": null, "status": "RUNNING", "deployed_app_config": {"deployments": [
    {"name": "Router", "user_config": {"primary": "v1", "canary": "v2", "weights": {"v1": 75, "v2": 25},
     "route_prefix": "/llm", "request_timeout_s": 0.5, "max_body_bytes": 16}}]}},
  "llm--v1": {"route_prefix": "/_v/llm/v1", "status": "RUNNING", "deployed_app_config": {"deployments": []}},
  "llm--v2": {"route_prefix": "/_v/llm/v2", "status": "RUNNING", "deployed_app_config": {"deployments": []}},
  "old": {"route_prefix": "/old", "status": "RUNNING", "deployed_app_config": {"deployments": [
    {"name": "Router", "user_config": {"primary": "v1", "weights": {"v1": 100}}}]}}
}}`

func splitterFor(t *testing.T, upstream http.Handler) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	s := NewSplitter(u, 1024, NewMetrics())
	table, err := BuildTable([]byte(state), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.table.Store(table)
	front := httptest.NewServer(s)
	t.Cleanup(front.Close)
	return front
}

func TestTableReadsTheRoutingRecordAndIgnoresLegacyRouters(t *testing.T) {
	table, err := BuildTable([]byte(state), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Routes) != 1 || table.Routes[0].Upstreams["v2"] != "/_v/llm/v2" {
		t.Fatalf("routes: %+v", table.Routes)
	}
	if r, rest := table.Match("/llm/a/b"); r == nil || rest != "/a/b" {
		t.Fatalf("match /llm/a/b: %v %q", r, rest)
	}
	if r, _ := table.Match("/llmx"); r != nil {
		t.Fatal("/llmx must not match /llm")
	}
}

// A record without a retry budget gets Linkerd's defaults; one that names it, its own.
func TestTheRetryBudgetComesFromTheRecordOrLinkerdsDefaults(t *testing.T) {
	table, err := BuildTable([]byte(state), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r := table.Routes[0]; r.RetryBudgetPercent != 20 || r.RetryMinPerSecond != 10 {
		t.Fatalf("defaults: %+v", r)
	}
	named := strings.Replace(state, `"max_body_bytes": 16`,
		`"max_body_bytes": 16, "retry_budget_percent": 5, "retry_min_per_second": 0`, 1)
	table, err = BuildTable([]byte(named), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r := table.Routes[0]; r.RetryBudgetPercent != 5 || r.RetryMinPerSecond != 0 {
		t.Fatalf("named: %+v", r)
	}
}

func TestPinnedRequestReachesItsVersionWithPathAndQuery(t *testing.T) {
	var seen string
	front := splitterFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.URL.RequestURI()
		w.WriteHeader(201)
	}))
	req, _ := http.NewRequest("PATCH", front.URL+"/llm/items/7?x=1&y=%20", nil)
	req.Header.Set("x-serve-version", "canary")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 || seen != "/_v/llm/v2/items/7?x=1&y=%20" || resp.Header.Get("x-serve-version") != "v2" {
		t.Fatalf("status %d, upstream saw %q, version %q", resp.StatusCode, seen, resp.Header.Get("x-serve-version"))
	}
}

func TestErrorsHaveOneShapeAndEchoNothing(t *testing.T) {
	front := splitterFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	cases := []struct {
		name, pin, body string
		header          int
		want            int
	}{
		{"unknown pin", "v9-<script>", "", 0, 404},
		{"body over the limit", "", strings.Repeat("x", 17), 0, 413},
		{"headers over the limit", "", "", 2000, 431},
		{"timeout", "", "", 0, 504},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("POST", front.URL+"/llm", strings.NewReader(c.body))
		if c.pin != "" {
			req.Header.Set("x-serve-version", c.pin)
		}
		if c.header > 0 {
			req.Header.Set("x-big", strings.Repeat("h", c.header))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		var shape map[string]string
		if resp.StatusCode != c.want || json.Unmarshal(body, &shape) != nil || shape["error"] == "" {
			t.Fatalf("%s: status %d body %s", c.name, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "script") || strings.Contains(string(body), "hhhh") {
			t.Fatalf("%s: echoed input: %s", c.name, body)
		}
	}
}

func TestRedirectsNameThePublicPrefix(t *testing.T) {
	front := splitterFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/_v/llm/v1/docs?a=b", http.StatusFound)
	}))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", front.URL+"/llm/docs", nil)
	req.Header.Set("x-serve-version", "v1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("Location"); got != "/llm/docs?a=b" {
		t.Fatalf("Location %q", got)
	}
}

func TestStreamsReachTheClientChunkByChunk(t *testing.T) {
	release := make(chan struct{})
	front := splitterFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release // the last chunk waits until the client has the first
		io.WriteString(w, "data: last\n\n")
	}))
	resp, err := http.Get(front.URL + "/llm/stream")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if line != "data: first\n" {
		t.Fatalf("first line %q", line)
	}
	close(release)
}

// A service whose canary takes all weighted traffic, and an upstream where the canary
// fails the way `canary` says and the primary answers 200 with the body it got.
func failingCanary(t *testing.T, budget string, canary func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *Metrics) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_v/svc/v2") {
			canary(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	metrics := NewMetrics()
	s := NewSplitter(u, 1<<16, metrics)
	table, err := BuildTable([]byte(`{"applications": {
	  "svc": {"route_prefix": null, "deployed_app_config": {"deployments": [{"name": "Router", "user_config":
	    {"primary": "v1", "canary": "v2", "weights": {"v2": 100}, "route_prefix": "/svc", "request_timeout_s": 0.3`+budget+`}}]}},
	  "svc--v1": {"route_prefix": "/_v/svc/v1", "deployed_app_config": {"deployments": []}},
	  "svc--v2": {"route_prefix": "/_v/svc/v2", "deployed_app_config": {"deployments": []}}}}`), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.table.Store(table)
	front := httptest.NewServer(s)
	t.Cleanup(front.Close)
	return front, metrics
}

func post(t *testing.T, url, pin, body string) (int, string, string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if pin != "" {
		req.Header.Set("x-serve-version", pin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("x-serve-version"), string(got)
}

func TestACanaryFailureBeforeAnyByteIsRetriedOnThePrimaryWithTheSameBody(t *testing.T) {
	failures := map[string]func(http.ResponseWriter, *http.Request){
		"5xx":     func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) },
		"timeout": func(w http.ResponseWriter, r *http.Request) { time.Sleep(time.Second) },
		"reset": func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
	}
	for name, fail := range failures {
		front, metrics := failingCanary(t, "", fail)
		status, version, body := post(t, front.URL+"/svc/x", "", "payload-"+name)
		if status != 200 || version != "v1" || body != "payload-"+name {
			t.Fatalf("%s: got %d from %q: %q", name, status, version, body)
		}
		// The gates still see the canary's failure.
		samples := metrics.Since(0)
		if len(samples) != 2 || samples[0].Version != "v2" || samples[0].Status < 500 || samples[1].Version != "v1" {
			t.Fatalf("%s: samples %+v", name, samples)
		}
	}
}

func TestAPinnedRequestGetsItsVersionsFailureAndIsNeverRetried(t *testing.T) {
	front, metrics := failingCanary(t, "", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	if status, version, _ := post(t, front.URL+"/svc", "canary", "x"); status != 500 || version != "v2" {
		t.Fatalf("pinned: %d from %q", status, version)
	}
	if len(metrics.Since(0)) != 1 {
		t.Fatal("a pinned request was sent twice")
	}
}

func TestPastTheRetryBudgetErrorsPassThrough(t *testing.T) {
	front, _ := failingCanary(t, `, "retry_budget_percent": 20`, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	failed := 0
	for i := 0; i < 200; i++ {
		if status, _, _ := post(t, front.URL+"/svc", "", "x"); status != 200 {
			failed++
		}
	}
	// 200 requests within a window (or two, on a slow machine): retries <= 10 per second
	// of the window (100) + 20% of 200 = 140; the other 60 fail through.
	if failed < 50 || failed > 65 {
		t.Fatalf("%d of 200 failed", failed)
	}
}

func TestARetryBudgetOfZeroTurnsTheFallbackOff(t *testing.T) {
	front, _ := failingCanary(t, `, "retry_budget_percent": 0`, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	if status, version, _ := post(t, front.URL+"/svc", "", "x"); status != 500 || version != "v2" {
		t.Fatalf("got %d from %q", status, version)
	}
}

// Hung canary replicas can stall every client for a whole budget window: the window then
// holds no request, yet each stalled request still gets its retry (active ones count).
func TestRetryBudgetCountsRequestsStillWaitingWhenTheWindowIsEmpty(t *testing.T) {
	b := newBudgets()
	for i := 0; i < 200; i++ {
		b.request("svc")
	}
	// Age the window: every slot's second moves past the window, as after a 10 s stall.
	w := b.windows["svc"]
	for i := range w.second {
		w.second[i] -= budgetWindow + 1
	}
	allowed := 0
	for i := 0; i < 200; i++ {
		if b.allow("svc", 20, 10) {
			allowed++
		}
	}
	// 100 always (10 per second of the window), plus 20% of the 200 still waiting: 140.
	if allowed != 140 {
		t.Fatalf("stalled requests got %d retries, want 140", allowed)
	}
	for i := 0; i < 200; i++ {
		b.finished("svc")
	}
	if b.active["svc"] != 0 {
		t.Fatalf("active requests left: %d", b.active["svc"])
	}
}
