"""Health gates that decide each rollout step.

- Serve status: the canary app or deployment reports UNHEALTHY or DEPLOY_FAILED.
- Canary probes: the service's probe request (GateConfig.probe: method, path, body),
  pinned with `x-serve-version: canary`, compared
  with the same number pinned to the primary: success rate >= threshold (served: the
  probe's expected statuses, by default any below 400), and canary
  p95 latency <= max(ratio x primary p95, floor) -- unless the two samples do not differ
  beyond noise: a p95 of 20 probes on a busy machine is one slow request, and did roll
  back identical code in CI (canary p95 102 ms against a 45 ms primary). A p95 breach
  fails only when the latency test real traffic uses (runtime/analysis.py: one-sided
  Mann-Whitney at latency_p_value, median slower by more than the slack) agrees.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from runtime import analysis
from runtime.causes import MAX_TEXT, replica_cause
from runtime.serve_api import AppState
from runtime.spec import GateConfig, ProbeRequest
from traffic.protocol import VERSION_HEADER

FAILED_STATUSES = ("DEPLOY_FAILED", "UNHEALTHY")


@dataclass(frozen=True)
class ProbeStats:
    sent: int
    ok: int
    p95_ms: float
    answers: str = ""  # what failed probes got, e.g. "404 x18, timeout x2"
    latencies_ms: tuple[float, ...] = ()  # of the served probes, for the significance test

    @property
    def success_rate(self) -> float:
        return self.ok / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    gate: str  # which gate decided: "serve-status", "success-rate", "latency", "probes"
    detail: str  # figures observed against thresholds, for logs and errors
    canary: ProbeStats | None = None
    primary: ProbeStats | None = None

    def figures(self) -> dict:
        out: dict = {"gate": self.gate, "passed": self.passed, "detail": self.detail}
        for side, stats in (("canary", self.canary), ("primary", self.primary)):
            if stats:
                out[side] = {"sent": stats.sent, "ok": stats.ok,
                             "success_rate": round(stats.success_rate, 4), "p95_ms": round(stats.p95_ms, 1)}
        return out


def p95(latencies_ms: list[float]) -> float:
    return analysis.percentile(latencies_ms, 95)


def serve_status_verdict(app: AppState) -> GateVerdict:
    """Fails when the app or one of its deployments failed; the detail carries each failed
    deployment's own cause (the replica's exception, runtime/causes.py) rather than the
    app's summary ("Failed to update the deployments ['Model']")."""
    bad = []
    for deployment in app.deployments.values():
        if deployment.status in FAILED_STATUSES:
            cause = replica_cause(deployment.message) or deployment.message.strip()[:MAX_TEXT]
            bad.append(f"deployment {deployment.name} {deployment.status}" + (f": {cause}" if cause else ""))
    if app.status in FAILED_STATUSES and not bad:
        bad.append(f"app {app.status}" + (f": {app.message.strip()[:MAX_TEXT]}" if app.message.strip() else ""))
    if bad:
        return GateVerdict(False, "serve-status", "; ".join(bad))
    return GateVerdict(True, "serve-status", f"app {app.status}")


def judge(gates: GateConfig, canary: ProbeStats, primary: ProbeStats | None,
          baseline_p95_ms: float | None = None) -> GateVerdict:
    """Pure decision from probe figures.

    The latency reference is the larger of the primary's p95 now and its p95 before the
    rollout moved any traffic (`baseline_p95_ms`): late in a rollout the primary is
    nearly idle, and comparing a loaded canary with an idle primary would fail healthy
    versions.
    """
    if canary.sent < gates.min_probes:
        return GateVerdict(False, "probes", f"only {canary.sent} probes < minimum {gates.min_probes}", canary, primary)
    if canary.success_rate < gates.min_success_rate:
        return GateVerdict(
            False, "success-rate",
            f"canary success rate {canary.success_rate:.1%} < {gates.min_success_rate:.1%} "
            f"over {canary.sent} probes of {gates.probe.method} {gates.probe.path}"
            + (f" (failed: {canary.answers})" if canary.answers else ""),
            canary, primary,
        )
    if primary is not None and primary.ok:
        reference = max(primary.p95_ms, baseline_p95_ms or 0.0)
        budget = max(gates.max_latency_ratio * reference, gates.latency_floor_ms)
        if canary.p95_ms > budget:
            source = "primary p95" if reference == primary.p95_ms else "primary p95 before the rollout"
            breach = (f"canary p95 {canary.p95_ms:.0f}ms > {budget:.0f}ms "
                      f"({gates.max_latency_ratio:g}x {source} {reference:.0f}ms)")
            shift = _probe_shift(gates, canary, primary)
            if shift is None or shift.significant(gates.latency_p_value):
                why = f" ({shift.describe(gates.latency_p_value)})" if shift else ""
                return GateVerdict(False, "latency", breach + why, canary, primary)
            return GateVerdict(True, "probes", f"{breach}, but not beyond noise "
                               f"({shift.describe(gates.latency_p_value)})", canary, primary)
    primary_note = f", primary p95 {primary.p95_ms:.0f}ms" if primary else ""
    return GateVerdict(
        True, "probes",
        f"canary {canary.success_rate:.1%} of {canary.sent} ok, p95 {canary.p95_ms:.0f}ms{primary_note}",
        canary, primary,
    )


def _probe_shift(gates: GateConfig, canary: ProbeStats, primary: ProbeStats) -> analysis.Shift | None:
    """The significance test over the probes' latencies; None without enough of them on
    either side (then the p95 budget alone decides)."""
    if min(len(canary.latencies_ms), len(primary.latencies_ms)) < 2:
        return None
    return analysis.latency_shift(canary.latencies_ms, primary.latencies_ms, analysis.Thresholds(
        latency_p_value=gates.latency_p_value, latency_slack_ms=gates.latency_slack_ms,
        latency_slack_ratio=gates.latency_slack_ratio))


class Prober:
    """Sends pinned probe requests (GateConfig.probe) through the service's public route."""

    def __init__(self, endpoint: str, request: ProbeRequest | None = None, timeout_s: float = 10.0):
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.request = request or ProbeRequest()

    def url(self) -> str:
        return self.endpoint + ("" if self.request.path == "/" else self.request.path)

    def probe(self, side: str, count: int, concurrency: int) -> ProbeStats:
        request = self.request
        content = request.body.encode() if request.body is not None else None
        headers = {**request.headers, VERSION_HEADER: side}

        def one(client: httpx.Client) -> tuple[bool, float]:
            start = time.perf_counter()
            try:
                if request.json_body is not None:
                    response = client.request(request.method, self.url(), json=request.json_body, headers=headers)
                else:
                    response = client.request(request.method, self.url(), content=content, headers=headers)
                ok, answer = request.served(response.status_code), str(response.status_code)
            except httpx.TimeoutException:
                ok, answer = False, "timeout"
            except httpx.HTTPError as exc:
                ok, answer = False, type(exc).__name__
            return ok, (time.perf_counter() - start) * 1000, answer

        with httpx.Client(timeout=self.timeout_s) as client, \
                concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(lambda _: one(client), range(count)))
        latencies = [ms for ok, ms, _ in results if ok]
        failed = collections.Counter(answer for ok, _, answer in results if not ok)
        answers = ", ".join(f"{a} x{n}" for a, n in failed.most_common())
        return ProbeStats(sent=count, ok=sum(ok for ok, _, _ in results), p95_ms=p95(latencies), answers=answers,
                          latencies_ms=tuple(latencies))

    def evaluate(self, gates: GateConfig, baseline_p95_ms: float | None = None) -> GateVerdict:
        if not gates.enabled:
            return GateVerdict(True, "disabled", "gates disabled by config")
        canary = self.probe("canary", gates.min_probes, gates.probe_concurrency)
        primary = self.probe("primary", gates.min_probes, gates.probe_concurrency)
        return judge(gates, canary, primary, baseline_p95_ms)


class TrafficGate:
    """Judges the canary on the requests users sent, as the splitter instances saw them
    (runtime/analysis.py). `source(since_ms)` returns the service's samples since then."""

    def __init__(self, source: Callable[[int], list[dict]]):
        self.source = source

    def judge(self, gates: GateConfig, primary: str, canary: str, since_ms: int,
              steady_median_ms: float | None = None, latency: bool = True,
              steady_ms: tuple[float, ...] = ()) -> analysis.Judgement:
        window_start = max(since_ms, int(time.time() * 1000 - gates.window_seconds * 1000))
        samples = self.source(window_start)
        thresholds = analysis.Thresholds(
            min_success_rate=gates.min_success_rate, min_samples=gates.min_samples,
            latency_p_value=gates.latency_p_value, latency_slack_ms=gates.latency_slack_ms,
            latency_slack_ratio=gates.latency_slack_ratio,
            gate_client_errors=gates.gate_client_errors)
        return analysis.judge(analysis.figures(samples, canary, gates.gate_client_errors),
                              analysis.figures(samples, primary, gates.gate_client_errors), thresholds,
                              steady_median_ms, latency=latency, steady_ms=steady_ms)

    def steady(self, gates: GateConfig, primary: str) -> analysis.Figures:
        """The primary's answers over the last window of real traffic."""
        samples = self.source(int(time.time() * 1000 - gates.window_seconds * 1000))
        return analysis.figures(samples, primary, gates.gate_client_errors)
