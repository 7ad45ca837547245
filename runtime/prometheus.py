"""Gates over a Prometheus-compatible server: templated queries per service and version.

Like Flagger's MetricTemplates and Argo Rollouts' AnalysisTemplates: each check is a
PromQL query (built in, over Ray Serve's own metrics, or the user's), rendered with jinja2
for the canary, and its value must lie within the check's [min, max].

- `render` is pure: the query text for one check and one rollout.
- `verdict` is pure: one evaluation's values (or errors) against the thresholds.
- `PrometheusGate.judge` is the effect: it asks the server's `/api/v1/query` for each
  check and keeps the count of consecutive failed queries, so that one lost scrape or a
  restarting server does not roll back a good version, while a server that stays away
  does stop the rollout (a gate that cannot see must not pass).

Ray Serve's metrics (measured with Ray 2.60) label every request with the Serve app it
reached: `application="<service>--<version>"`, which is how a version is selected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import httpx
import jinja2

from runtime.spec import MetricCheck, PrometheusGate as PrometheusConfig
from traffic.protocol import version_app_name

# Over Ray Serve's HTTP proxy metrics. `or vector(0)`: no 5xx series yet means no errors,
# not no data; no requests at all leaves the ratio empty, which is "no data".
QUERIES = {
    "error-rate": (
        '(sum(rate(ray_serve_num_http_requests_total{application="{{ app }}",status_code=~"5.."}[{{ window }}]))'
        ' or vector(0))'
        ' / sum(rate(ray_serve_num_http_requests_total{application="{{ app }}"}[{{ window }}]))'
    ),
    "latency-p95-ms": (
        'histogram_quantile(0.95, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket'
        '{application="{{ app }}",status_code!~"5.."}[{{ window }}])))'
    ),
    "latency-p50-ms": (
        'histogram_quantile(0.5, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket'
        '{application="{{ app }}",status_code!~"5.."}[{{ window }}])))'
    ),
    "request-rate": 'sum(rate(ray_serve_num_http_requests_total{application="{{ app }}"}[{{ window }}]))',
}

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def duration(seconds: float) -> str:
    """A PromQL duration: whole milliseconds, e.g. 10s or 2500ms."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render(check: MetricCheck, service: str, primary: str, canary: str, window_s: float) -> str:
    """The check's PromQL for the canary of this rollout. Pure."""
    text = QUERIES[check.template] if check.template else check.query
    return _ENV.from_string(text).render(
        service=service, version=canary, app=version_app_name(service, canary),
        primary=primary, primary_app=version_app_name(service, primary),
        canary=canary, canary_app=version_app_name(service, canary), window=duration(window_s))


@dataclass(frozen=True)
class Reading:
    """One check's outcome in one evaluation: a value, no data, or an error."""

    check: MetricCheck
    query: str
    value: float | None = None
    error: str | None = None  # the query failed (server, network, or the query itself)
    rejected: bool = False  # the server refused the query as invalid: it will not heal

    def within(self) -> bool:
        low, high = self.check.min, self.check.max
        return (low is None or self.value >= low) and (high is None or self.value <= high)

    def record(self) -> dict:
        return {"check": self.check.name, "value": None if self.value is None else round(self.value, 6),
                "min": self.check.min, "max": self.check.max, **({"error": self.error} if self.error else {})}


@dataclass(frozen=True)
class MetricsJudgement:
    passed: bool | None  # None: no value yet to judge
    gate: str  # "prometheus", "prometheus-error", "insufficient"
    detail: str
    readings: tuple[Reading, ...] = field(default_factory=tuple)

    def record(self) -> dict:
        return {"source": "prometheus", "gate": self.gate, "passed": self.passed, "detail": self.detail,
                "checks": [r.record() for r in self.readings]}


def _bounds(check: MetricCheck) -> str:
    if check.min is not None and check.max is not None:
        return f"in [{check.min:g}, {check.max:g}]"
    return f">= {check.min:g}" if check.min is not None else f"<= {check.max:g}"


def verdict(readings: list[Reading], failures_in_a_row: int, max_query_failures: int) -> MetricsJudgement:
    """One evaluation's judgement. Pure. An out-of-range value fails at once; a rejected
    query fails at once (it will not heal); other query errors fail only after
    `max_query_failures` evaluations in a row; no value is no verdict."""
    readings = tuple(readings)
    for r in readings:
        if r.rejected:
            return MetricsJudgement(False, "prometheus-error",
                                    f"Prometheus rejected check {r.check.name}'s query: {r.error}; "
                                    f"fix rollout.gates.prometheus.checks", readings)
    if failures_in_a_row >= max_query_failures:
        errors = "; ".join(f"{r.check.name}: {r.error}" for r in readings if r.error)
        return MetricsJudgement(False, "prometheus-error",
                                f"Prometheus queries failed {failures_in_a_row} evaluations in a row ({errors}): "
                                "the gate cannot see the canary", readings)
    for r in readings:
        if r.value is not None and not r.within():
            return MetricsJudgement(False, "prometheus",
                                    f"canary {r.check.name} = {r.value:.4g}, not {_bounds(r.check)} "
                                    f"(Prometheus: {r.query})", readings)
    missing = [r.check.name for r in readings if r.value is None]
    if missing:
        why = "; ".join(f"{r.check.name}: {r.error}" for r in readings if r.error) or "no samples yet"
        return MetricsJudgement(None, "insufficient", f"no value for {', '.join(missing)} ({why})", readings)
    values = ", ".join(f"{r.check.name} {r.value:.4g} {_bounds(r.check)}" for r in readings)
    return MetricsJudgement(True, "prometheus", f"canary {values}", readings)


def query(client: httpx.Client, url: str, promql: str) -> tuple[float | None, str | None, bool]:
    """(value, error, rejected) of an instant query that must yield at most one number."""
    try:
        response = client.get(url.rstrip("/") + "/api/v1/query", params={"query": promql})
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}", False
    if body.get("status") != "success":
        # bad_data is the query's own fault; anything else (timeouts, 5xx) may pass.
        return None, f"{body.get('errorType')}: {str(body.get('error'))[:300]}", body.get("errorType") == "bad_data"
    data = body.get("data") or {}
    if data.get("resultType") == "scalar":
        samples = [data["result"]]
    else:
        samples = [item["value"] for item in data.get("result") or []]
    if len(samples) > 1:
        return None, f"the query returned {len(samples)} series; aggregate it to one (e.g. sum(...))", True
    if not samples:
        return None, None, False
    value = float(samples[0][1])
    return (None, None, False) if math.isnan(value) or math.isinf(value) else (value, None, False)


class PrometheusGate:
    """Asks a Prometheus-compatible server for every check, once per evaluation."""

    def __init__(self, config: PrometheusConfig, window_s: float, transport: httpx.BaseTransport | None = None):
        self.config = config
        self.transport = transport
        self.window_s = config.window_seconds or window_s
        self.failures_in_a_row = 0

    def judge(self, service: str, primary: str, canary: str) -> MetricsJudgement:
        readings = []
        with httpx.Client(timeout=self.config.timeout_seconds, headers=self.config.headers,
                          transport=self.transport) as client:
            for check in self.config.checks:
                promql = render(check, service, primary, canary, self.window_s)
                value, error, rejected = query(client, self.config.url, promql)
                readings.append(Reading(check, promql, value, error, rejected))
        failed = any(r.error and not r.rejected for r in readings)
        self.failures_in_a_row = self.failures_in_a_row + 1 if failed else 0
        return verdict(readings, self.failures_in_a_row, self.config.max_query_failures)
