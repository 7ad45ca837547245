"""Real-traffic analysis: the gate's judgement over the requests users actually sent.

The splitter records every answer (service, version, status, time to response headers)
and serves them on each instance's admin socket (`/samples`). `collect` gathers them from
every instance; `figures` turns one window of them into per-version figures; `judge` is
the gate, a PURE function of two versions' figures and the thresholds.

- Errors are 5xx answers, connection failures (502) and timeouts (504): the version's
  fault. 4xx answers are the client's, counted apart, and gated only when asked.
- Latency compares the two distributions over the same window with a one-sided
  Mann-Whitney U test (canary slower than primary?), as Kayenta does, and requires the
  canary's median to be slower by more than a slack too, the larger of an absolute one
  (25 ms) and a share of the primary's median (25%): a significant but small shift (a
  busy machine, a wide distribution) is not a regression. A significance test alone
  fires on identical code at its p-value's rate, and did on this machine (bench/
  false_rollbacks.py); the slack is what keeps identical code calm.
- The reference median is the larger of the primary's now and the primary's before any
  traffic moved (`steady_median_ms`, real traffic the controller read before the first
  shift). Each wave is gated with both versions at the same load per replica
  (runtime/plan.py), yet the canary's few replicas queue longer than the primary's many
  (the bench's saturating healthy case, wave 1: 86 vs 59 ms, identical code). The
  primary as it ran before the rollout, all the traffic on N replicas, is the reference
  healthy canaries stayed within in the bench. With no primary traffic in the window
  (the canary at 100%), the primary's answers from then (`steady_ms`) are the latency
  test's reference.
- A failing reference is its own verdict: when the primary itself fails, judging the
  canary against it would mean nothing.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from dataclasses import dataclass, field

import httpx
import numpy as np

# The one percentile rule of gates and bench: numpy's "linear" method (Hyndman & Fan's
# type 7, numpy's and R's default), interpolating between the two nearest ranks.
PERCENTILE_METHOD = "linear"


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) of `values` by PERCENTILE_METHOD; 0.0 for none."""
    return float(np.percentile(values, q, method=PERCENTILE_METHOD)) if len(values) else 0.0


@dataclass(frozen=True)
class Figures:
    """One version's answers in one window."""

    requests: int
    errors: int  # 5xx, connection failures, timeouts
    client_errors: int  # 4xx
    latencies_ms: tuple[float, ...]  # of the answers that were not errors

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.latencies_ms, 95)

    def summary(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "client_errors": self.client_errors,
                "error_rate": round(self.error_rate, 4), "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1)}


@dataclass(frozen=True)
class Thresholds:
    min_success_rate: float = 0.99
    min_samples: int = 20  # per version in the window; fewer and probes fill in
    latency_p_value: float = 0.001  # one-sided Mann-Whitney U
    latency_slack_ms: float = 25.0  # the canary's median must be slower by more than this
    latency_slack_ratio: float = 0.25  # ... and by more than this share of the primary's median
    gate_client_errors: bool = False  # count 4xx as errors


@dataclass(frozen=True)
class Judgement:
    passed: bool | None  # None: not enough traffic to judge
    gate: str  # "traffic-errors", "traffic-latency", "reference-failing", "traffic", "insufficient"
    detail: str
    canary: Figures
    primary: Figures
    p_value: float | None = None  # the latency test's, when it ran
    slower_by_ms: float | None = None  # the canary's median minus the reference's, when it ran

    def record(self) -> dict:
        return {"source": "splitter", "gate": self.gate, "passed": self.passed, "detail": self.detail,
                "canary": self.canary.summary(), "primary": self.primary.summary(),
                **({"p_value": float(f"{self.p_value:.3g}")} if self.p_value is not None else {}),
                **({"slower_by_ms": round(self.slower_by_ms, 1)} if self.slower_by_ms is not None else {})}


@dataclass(frozen=True)
class Shift:
    """Whether one latency distribution is slower than another, beyond noise."""

    p_value: float  # one-sided Mann-Whitney U: canary slower than primary?
    slower_by_ms: float  # median difference
    slack_ms: float

    def significant(self, p_value: float) -> bool:
        return self.p_value < p_value and self.slower_by_ms > self.slack_ms

    def describe(self, p_value: float) -> str:
        return (f"+{self.slower_by_ms:.0f}ms {'>' if self.slower_by_ms > self.slack_ms else '<='} "
                f"{self.slack_ms:.0f}ms slack, Mann-Whitney p={self.p_value:.1e} "
                f"{'<' if self.p_value < p_value else '>='} {p_value:g}")


def latency_shift(canary_ms, primary_ms, t: Thresholds, steady_median_ms: float | None = None) -> Shift:
    """The latency test shared by real traffic and probes. Pure. The canary's median is
    compared with the larger of the primary's now and `steady_median_ms`."""
    reference = max(float(np.median(primary_ms)), steady_median_ms or 0.0)
    slower_by = float(np.median(canary_ms)) - reference
    slack = max(t.latency_slack_ms, t.latency_slack_ratio * reference)
    from scipy.stats import mannwhitneyu  # imported late: see preload()

    p = float(mannwhitneyu(canary_ms, primary_ms, alternative="greater").pvalue)
    return Shift(p, slower_by, slack)


def preload() -> threading.Thread:
    """Import scipy.stats off the rollout's path. It takes a second on an idle machine and
    three or more under a rollout's load: paid at the first latency judgement, that
    stretched wave 1's bake (bench: a 3 s bake that took 4.6). Imported in the background
    while the canary's first replica starts (seconds of waiting), it costs no step
    anything; a judgement that comes first waits on Python's import lock, as before."""
    thread = threading.Thread(target=importlib.import_module, args=("scipy.stats",), name="preload-scipy",
                              daemon=True)
    thread.start()
    return thread


def figures(samples: list[dict], version: str, count_client_errors: bool = False) -> Figures:
    """Per-version figures from splitter samples ({"v": version, "c": status, "ms": ...})."""
    mine = [s for s in samples if s["v"] == version]
    errors = [s for s in mine if s["c"] >= 500 or (count_client_errors and 400 <= s["c"] < 500)]
    client = [s for s in mine if 400 <= s["c"] < 500]
    ok = tuple(float(s["ms"]) for s in mine if s["c"] < 500 and not (count_client_errors and s["c"] >= 400))
    return Figures(len(mine), len(errors), len(client), ok)


def judge(canary: Figures, primary: Figures, t: Thresholds, steady_median_ms: float | None = None,
          latency: bool = True, steady_ms: tuple[float, ...] = ()) -> Judgement:
    """The gate over one window of real traffic. Pure. `steady_median_ms`: the primary's
    median before any traffic moved (None: the primary's now is the only reference).
    `latency=False` judges errors only. `steady_ms`: the primary's answers before any
    traffic moved; the latency test's reference when the primary answered too few now
    (the canary at 100%: a last wave, or blue/green's only one), when the canary runs as
    the primary did then, on N replicas with all the traffic."""
    max_errors = 1.0 - t.min_success_rate
    if canary.requests < t.min_samples:
        return Judgement(None, "insufficient", f"{canary.requests} canary requests < {t.min_samples} in the window",
                         canary, primary)
    if primary.requests >= t.min_samples and primary.error_rate > max_errors:
        return Judgement(False, "reference-failing",
                         f"the primary itself fails {primary.error_rate:.1%} of {primary.requests} requests "
                         f"(> {max_errors:.1%}): no sound reference to judge the canary against", canary, primary)
    if canary.error_rate > max_errors:
        return Judgement(False, "traffic-errors",
                         f"canary failed {canary.errors} of {canary.requests} real requests ({canary.error_rate:.1%} "
                         f"> {max_errors:.1%}); primary {primary.error_rate:.1%} of {primary.requests}", canary, primary)
    reference, then = primary.latencies_ms, False
    if len(reference) < t.min_samples and len(steady_ms) >= t.min_samples:
        reference, then = steady_ms, True
    versus = (f"primary {percentile(reference, 50):.0f}ms before the rollout (none now)" if then
              else f"primary {primary.p50_ms:.0f}ms")
    if latency and len(canary.latencies_ms) >= t.min_samples and len(reference) >= t.min_samples:
        shift = latency_shift(canary.latencies_ms, reference, t, steady_median_ms)
        p, slower_by = shift.p_value, shift.slower_by_ms
        if shift.significant(t.latency_p_value):
            steady = (f", {steady_median_ms:.0f}ms before the rollout"
                      if not then and steady_median_ms and steady_median_ms > primary.p50_ms else "")
            return Judgement(False, "traffic-latency",
                             f"canary slower: median {canary.p50_ms:.0f}ms vs {versus}{steady} "
                             f"({shift.describe(t.latency_p_value)}) over {len(canary.latencies_ms)}/"
                             f"{len(reference)} requests", canary, primary, p, slower_by)
    else:
        p = slower_by = None
    return Judgement(True, "traffic",
                     f"canary {1 - canary.error_rate:.1%} of {canary.requests} real requests ok, median "
                     f"{canary.p50_ms:.0f}ms vs {versus}", canary, primary, p, slower_by)


@dataclass
class _Kept:
    """What was read from one splitter instance."""

    pid: int | None
    floor_ms: int  # every answer of the service since then is in `samples`
    cursor_ms: int = 0  # the newest answer's time (of any service)
    at_cursor: int = 0  # how many answers at `cursor_ms` were read
    samples: list[dict] = field(default_factory=list)  # of the service, oldest first

    def __post_init__(self):
        self.cursor_ms = self.floor_ms


class SampleSource:
    """Every answer the live splitter instances gave for one service since a time.

    Called once a second through a bake and through every resize wait, on a machine the
    rollout itself keeps busy, so each call must cost little: one kept-alive client per
    admin socket (a new httpx client builds an SSL context: ~35 ms of CPU each), and only
    the answers since the last call are fetched. What was fetched before is kept, trimmed
    to the oldest time still asked for. An instance that restarted (its pid changed) is
    read afresh.
    """

    def __init__(self, admins: list[str], service: str, timeout_s: float = 2.0):
        self.service = service
        self.timeout_s = timeout_s
        self._clients = {admin: None for admin in admins}
        self._kept: dict[str, _Kept] = {}

    def __call__(self, since_ms: int) -> list[dict]:
        out: list[dict] = []
        for admin in self._clients:
            out += self._read(admin, since_ms)
        return out

    def _client(self, admin: str) -> httpx.Client:
        client = self._clients[admin]
        if client is None:
            client = httpx.Client(transport=httpx.HTTPTransport(uds=admin), timeout=self.timeout_s)
            self._clients[admin] = client
        return client

    def _read(self, admin: str, since_ms: int, fresh_start: bool = False) -> list[dict]:
        state = None if fresh_start else self._kept.get(admin)
        if state is not None and since_ms < state.floor_ms:
            state = None  # asked for older answers than were kept: read them all again
        try:
            body = self._client(admin).get("http://splitter/samples", params={
                "since_ms": since_ms if state is None else state.cursor_ms}).json()
        except (httpx.HTTPError, ValueError, FileNotFoundError):
            self._kept.pop(admin, None)
            return []  # a dead instance served nothing
        answers = body.get("samples") or []
        if state is None:
            state = _Kept(body.get("pid"), since_ms)
        elif body.get("pid") != state.pid:
            return self._read(admin, since_ms, fresh_start=True)  # restarted: its ring is new
        else:
            # The splitter answers `t >= since_ms` in the order it recorded them, so those
            # at the cursor's millisecond that were read before come first: skip them.
            skip = 0
            while skip < min(len(answers), state.at_cursor) and answers[skip]["t"] == state.cursor_ms:
                skip += 1
            answers = answers[skip:]
        if answers:
            last = answers[-1]["t"]
            at_last = sum(1 for _ in itertools.takewhile(lambda s: s["t"] == last, reversed(answers)))
            state.at_cursor = at_last + (state.at_cursor if last == state.cursor_ms else 0)
            state.cursor_ms = max(state.cursor_ms, last)
        state.samples = [s for s in state.samples + [a for a in answers if a.get("s") == self.service]
                         if s["t"] >= since_ms]
        state.floor_ms = max(state.floor_ms, since_ms)
        self._kept[admin] = state
        return state.samples

    def close(self) -> None:
        for client in self._clients.values():
            if client is not None:
                client.close()
        self._clients = dict.fromkeys(self._clients)
