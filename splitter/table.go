package main

// The routing table: read from Ray Serve's declarative state, never kept anywhere else.
//
// Each service has a routing record, a Serve app named after the service whose
// deployment "Router" carries the table in its user_config (written by the operator's
// controller, runtime/apps.py). Each version is a Serve app "<service>--<version>" on a
// hidden route prefix. The splitter maps the service's public prefix onto those.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

// RouterDeployment must match traffic/protocol.py ROUTER_DEPLOYMENT.
const RouterDeployment = "Router"

type Route struct {
	Service      string             `json:"service"`
	Prefix       string             `json:"prefix"`
	Primary      string             `json:"primary"`
	Canary       string             `json:"canary"`
	Weights      map[string]float64 `json:"weights"`
	Upstreams    map[string]string  `json:"upstreams"` // version -> hidden route prefix
	TimeoutS     float64            `json:"request_timeout_s"`
	MaxBodyBytes int64              `json:"max_body_bytes"`
	// Fallback (fallback.go): retries may add this share of requests; 0 turns it off.
	RetryBudgetPercent float64  `json:"retry_budget_percent"`
	RetryMinPerSecond  float64  `json:"retry_min_per_second"` // allowed on top of the share
	RetryMethods       []string `json:"retry_methods"`        // empty: every method
}

// The retry budget when the routing record names none: Linkerd's defaults.
const (
	DefaultRetryBudgetPercent = 20
	DefaultRetryMinPerSecond  = 10
)

type Table struct {
	Routes   []Route   `json:"routes"` // longest prefix first
	LoadedAt time.Time `json:"loaded_at"`
}

// Match returns the route owning path: the longest prefix equal to it or followed by "/".
func (t *Table) Match(path string) (*Route, string) {
	for i := range t.Routes {
		r := &t.Routes[i]
		if r.Prefix == "/" {
			return r, path
		}
		if path == r.Prefix {
			return r, ""
		}
		if strings.HasPrefix(path, r.Prefix+"/") {
			return r, path[len(r.Prefix):]
		}
	}
	return nil, ""
}

type serveState struct {
	Applications map[string]struct {
		RoutePrefix *string `json:"route_prefix"`
		Status      string  `json:"status"`
		Config      *struct {
			Deployments []struct {
				Name       string          `json:"name"`
				UserConfig json.RawMessage `json:"user_config"`
			} `json:"deployments"`
		} `json:"deployed_app_config"`
	} `json:"applications"`
}

type record struct {
	Primary      string             `json:"primary"`
	Canary       *string            `json:"canary"`
	Weights      map[string]float64 `json:"weights"`
	RoutePrefix  string             `json:"route_prefix"`
	TimeoutS     float64            `json:"request_timeout_s"`
	MaxBodyBytes int64              `json:"max_body_bytes"`
	RetryBudget  *float64           `json:"retry_budget_percent"`
	RetryMin     *float64           `json:"retry_min_per_second"`
	RetryMethods []string           `json:"retry_methods"`
}

// BuildTable turns Serve's application state into routes. Pure.
func BuildTable(body []byte, defaultMaxBody int64) (*Table, error) {
	var state serveState
	if err := json.Unmarshal(body, &state); err != nil {
		return nil, fmt.Errorf("serve state is not JSON: %w", err)
	}
	hidden := map[string]string{} // app name -> route prefix
	for name, app := range state.Applications {
		if app.RoutePrefix != nil && *app.RoutePrefix != "" {
			hidden[name] = *app.RoutePrefix
		}
	}
	table := &Table{LoadedAt: time.Now()}
	for name, app := range state.Applications {
		if app.Config == nil || strings.Contains(name, "--") {
			continue
		}
		for _, d := range app.Config.Deployments {
			if d.Name != RouterDeployment || len(d.UserConfig) == 0 {
				continue
			}
			var rec record
			if err := json.Unmarshal(d.UserConfig, &rec); err != nil || rec.RoutePrefix == "" {
				continue // a 0.1 router record: it serves its own prefix on the Serve proxy
			}
			route := Route{Service: name, Prefix: strings.TrimRight(rec.RoutePrefix, "/"), Primary: rec.Primary,
				Weights: map[string]float64{}, Upstreams: map[string]string{},
				TimeoutS: rec.TimeoutS, MaxBodyBytes: rec.MaxBodyBytes,
				RetryBudgetPercent: DefaultRetryBudgetPercent, RetryMinPerSecond: DefaultRetryMinPerSecond,
				RetryMethods: rec.RetryMethods}
			if rec.RetryBudget != nil {
				route.RetryBudgetPercent = *rec.RetryBudget
			}
			if rec.RetryMin != nil {
				route.RetryMinPerSecond = *rec.RetryMin
			}
			if route.Prefix == "" {
				route.Prefix = "/"
			}
			if rec.Canary != nil {
				route.Canary = *rec.Canary
			}
			if route.MaxBodyBytes <= 0 {
				route.MaxBodyBytes = defaultMaxBody
			}
			if route.TimeoutS <= 0 {
				route.TimeoutS = 30
			}
			for _, v := range []string{route.Primary, route.Canary} {
				if p, ok := hidden[name+"--"+v]; ok && v != "" {
					route.Upstreams[v] = strings.TrimRight(p, "/")
				}
			}
			for v, w := range rec.Weights {
				if w > 0 {
					route.Weights[v] = w
				}
			}
			table.Routes = append(table.Routes, route)
		}
	}
	sort.Slice(table.Routes, func(i, j int) bool {
		a, b := table.Routes[i].Prefix, table.Routes[j].Prefix
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	return table, nil
}

// Source fetches Serve's state from the dashboard's REST API.
type Source struct {
	URL       string
	TokenFile string
	Client    *http.Client
}

func (s *Source) Fetch() ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(s.URL, "/")+"/api/serve/applications/", nil)
	if err != nil {
		return nil, err
	}
	if s.TokenFile != "" {
		token, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading the dashboard token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", req.URL.Path, resp.StatusCode)
	}
	return body, nil
}
