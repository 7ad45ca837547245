"""The real-traffic judge: pure, checked with hypothesis where it matters most (an
identical canary must pass)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.analysis import Figures, Thresholds, figures, judge

T = Thresholds()


def answers(version: str, n: int, ms: float, errors: int = 0, client_errors: int = 0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = [{"v": version, "c": 200, "ms": float(x)} for x in rng.gamma(4.0, ms / 4.0, n - errors - client_errors)]
    return out + [{"v": version, "c": 503, "ms": 1.0}] * errors + [{"v": version, "c": 404, "ms": 1.0}] * client_errors


def test_figures_count_5xx_as_errors_and_4xx_apart():
    f = figures(answers("v2", 100, 20, errors=3, client_errors=5), "v2")
    assert (f.requests, f.errors, f.client_errors, len(f.latencies_ms)) == (100, 3, 5, 97)
    assert figures(answers("v2", 100, 20, client_errors=5), "v2", count_client_errors=True).errors == 5


def test_too_little_canary_traffic_is_no_verdict_so_probes_fill_in():
    verdict = judge(figures(answers("v2", 5, 20), "v2"), figures(answers("v1", 100, 20), "v1"), T)
    assert verdict.passed is None and verdict.gate == "insufficient"


def test_a_canary_failing_beyond_the_threshold_fails_with_its_figures():
    verdict = judge(figures(answers("v2", 100, 20, errors=5), "v2"), figures(answers("v1", 100, 20), "v1"), T)
    assert (verdict.passed, verdict.gate) == (False, "traffic-errors")
    assert verdict.detail.startswith("canary failed 5 of 100 real requests (5.0% > 1.0%)")


def test_a_failing_primary_is_diagnosed_rather_than_used_as_the_reference():
    verdict = judge(figures(answers("v2", 100, 20), "v2"), figures(answers("v1", 100, 20, errors=50), "v1"), T)
    assert (verdict.passed, verdict.gate) == (False, "reference-failing")


def test_fifty_ms_on_a_twenty_ms_service_is_caught():
    verdict = judge(figures(answers("v2", 60, 70, seed=1), "v2"), figures(answers("v1", 60, 20, seed=2), "v1"), T)
    assert (verdict.passed, verdict.gate) == (False, "traffic-latency")


def test_a_significant_but_tiny_slowdown_is_not_a_regression():
    verdict = judge(figures(answers("v2", 2000, 23, seed=1), "v2"), figures(answers("v1", 2000, 20, seed=2), "v1"), T)
    assert verdict.passed is True


# Derandomized: the same 200 samples every run, so the suite is deterministic. "Enough
# samples" is 200 a side: with fewer, any significance test fires on identical code at
# about its p-value's rate whenever the distribution is wide (hypothesis found such a
# sample at n=363 before the relative slack: medians 279 vs 254 ms, p=1e-4).
@settings(max_examples=200, deadline=None, derandomize=True)
@given(n=st.integers(200, 600), ms=st.floats(1.0, 500.0), seed=st.integers(0, 2**32 - 1))
def test_a_canary_identical_to_the_primary_never_fails_at_the_defaults(n, ms, seed):
    # The same latency distribution (gamma, 50% spread) and no errors on both sides: the
    # judge passes it (the slack absorbs what the significance test alone would not).
    canary = figures(answers("v2", n, ms, seed=seed), "v2")
    primary = figures(answers("v1", n, ms, seed=seed + 1), "v1")
    assert judge(canary, primary, T).passed is True


def test_the_slack_grows_with_a_slow_primary():
    # The counterexample hypothesis found for an absolute slack alone: identical code,
    # medians 279 vs 254 ms, p=1e-4: a 25 ms shift on a 254 ms service is within 25%.
    canary = figures(answers("v2", 363, 292.0, seed=993738), "v2")
    primary = figures(answers("v1", 363, 292.0, seed=993739), "v1")
    assert judge(canary, primary, T).passed is True
    assert judge(canary, primary, Thresholds(latency_slack_ratio=0.0)).gate == "traffic-latency"


def test_figures_summary_is_what_the_history_records():
    f = Figures(10, 1, 0, (10.0, 20.0, 30.0))
    assert f.summary() == {"requests": 10, "errors": 1, "client_errors": 0, "error_rate": 0.1,
                           "p50_ms": 20.0, "p95_ms": 29.0}


def test_a_canary_as_fast_as_the_steady_primary_passes_though_the_surged_primary_is_faster():
    # The canary at the steady per-replica load (~70 ms), the primary lighter with the
    # surge's extra replica (~20 ms), and 80 ms before the rollout moved anything.
    canary = figures(answers("v2", 200, 70, seed=1), "v2")
    primary = figures(answers("v1", 200, 20, seed=2), "v1")
    assert judge(canary, primary, T).gate == "traffic-latency"
    assert judge(canary, primary, T, steady_median_ms=80.0).passed is True
    assert judge(figures(answers("v2", 200, 160, seed=1), "v2"), primary, T, steady_median_ms=80.0).passed is False


def test_judging_errors_only_passes_a_slower_canary_but_not_a_failing_one():
    slow, primary = figures(answers("v2", 200, 80), "v2"), figures(answers("v1", 200, 20, seed=1), "v1")
    assert judge(slow, primary, T).gate == "traffic-latency"
    assert judge(slow, primary, T, latency=False).passed is True
    failing = figures(answers("v2", 200, 80, errors=20), "v2")
    assert judge(failing, primary, T, latency=False).gate == "traffic-errors"


def test_with_no_primary_traffic_the_canary_is_judged_against_the_primary_before_the_rollout():
    # The canary at 100% (a last wave, or blue/green's only one): N replicas, all the
    # traffic, as the primary ran before anything moved.
    steady = figures(answers("v1", 300, 40, seed=3), "v1").latencies_ms
    nobody = figures([], "v1")
    slow = judge(figures(answers("v2", 200, 90), "v2"), nobody, T, steady_median_ms=40.0, steady_ms=steady)
    assert slow.gate == "traffic-latency" and "before the rollout (none now)" in slow.detail, slow.detail
    same = judge(figures(answers("v2", 200, 40, seed=4), "v2"), nobody, T, steady_median_ms=40.0, steady_ms=steady)
    assert same.passed is True and "before the rollout (none now)" in same.detail
    # Without that reference there is nothing to judge latency against: errors only.
    assert judge(figures(answers("v2", 200, 90), "v2"), nobody, T).passed is True


def test_the_primary_now_stays_the_reference_while_it_has_traffic():
    steady = figures(answers("v1", 300, 200, seed=3), "v1").latencies_ms  # slower then: ignored
    verdict = judge(figures(answers("v2", 200, 90), "v2"), figures(answers("v1", 200, 20, seed=1), "v1"), T,
                    steady_ms=steady)
    assert verdict.gate == "traffic-latency" and "vs primary 18ms (" in verdict.detail, verdict.detail


def test_the_record_carries_what_the_latency_test_compared_with_its_slack():
    primary = figures(answers("v1", 200, 20, seed=1), "v1")
    record = judge(figures(answers("v2", 200, 20, seed=2), "v2"), primary, T).record()
    assert abs(record["slower_by_ms"]) < 5 and "p_value" in record
    assert "slower_by_ms" not in judge(figures(answers("v2", 5, 20), "v2"), primary, T).record()
