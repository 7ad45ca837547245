"""Prometheus-gated checks: the query text per rollout, the verdict as a pure function,
and the HTTP exchange with a server (httpx.MockTransport speaking /api/v1/query)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import prometheus
from runtime.prometheus import PrometheusGate, Reading, render, verdict
from runtime.spec import BUILTIN_QUERIES, MetricCheck, PrometheusGate as PrometheusConfig

ERRORS = MetricCheck(name="errors", template="error-rate", max=0.01)
P95 = MetricCheck(name="p95", template="latency-p95-ms", max=200)


def test_every_built_in_query_has_a_text_and_selects_the_canary_app_over_the_window():
    assert set(prometheus.QUERIES) == set(BUILTIN_QUERIES)
    for name in BUILTIN_QUERIES:
        text = render(MetricCheck(name="c", template=name, max=1), "llm", "v1", "v2", 10)
        assert 'application="llm--v2"' in text and "[10s]" in text and "llm--v1" not in text


def test_a_user_query_may_compare_the_canary_with_the_primary():
    check = MetricCheck(name="ratio", max=1.5, query=(
        'sum(rate(x{application="{{ canary_app }}"}[{{ window }}])) / '
        'sum(rate(x{application="{{ primary_app }}"}[{{ window }}])) # {{ service }} {{ version }}'))
    assert render(check, "llm", "v1", "v2", 2.5) == (
        'sum(rate(x{application="llm--v2"}[2500ms])) / sum(rate(x{application="llm--v1"}[2500ms])) # llm v2')


def reading(check: MetricCheck, value: float | None = None, error: str | None = None, rejected: bool = False):
    return Reading(check, "q", value, error, rejected)


def test_a_value_out_of_range_fails_and_says_which_check_and_why():
    judged = verdict([reading(ERRORS, 0.0), reading(P95, 350.0)], 0, 3)
    assert judged.passed is False and judged.gate == "prometheus"
    assert judged.detail.startswith("canary p95 = 350, not <= 200")


def test_no_value_is_no_verdict_and_values_in_range_pass():
    assert verdict([reading(ERRORS, 0.0), reading(P95)], 0, 3).passed is None
    judged = verdict([reading(ERRORS, 0.0), reading(P95, 120.0)], 0, 3)
    assert judged.passed is True and judged.detail == "canary errors 0 <= 0.01, p95 120 <= 200"
    assert judged.record()["checks"][1] == {"check": "p95", "value": 120.0, "min": None, "max": 200.0}


def test_a_rejected_query_fails_at_once_but_a_lost_server_only_after_several_evaluations():
    rejected = verdict([reading(ERRORS, error="bad_data: parse error", rejected=True)], 1, 3)
    assert rejected.passed is False and "rejected check errors's query: bad_data" in rejected.detail
    assert verdict([reading(ERRORS, error="ConnectError: refused")], 2, 3).passed is None
    lost = verdict([reading(ERRORS, error="ConnectError: refused")], 3, 3)
    assert lost.passed is False and lost.gate == "prometheus-error" and "3 evaluations in a row" in lost.detail


@given(low=st.floats(-1e6, 1e6), width=st.floats(0, 1e6), at=st.floats(0, 1))
def test_any_value_within_the_range_passes(low, width, at):
    check = MetricCheck(name="c", template="request-rate", min=low, max=low + width)
    value = min(low + width, low + at * width)
    assert verdict([reading(check, value)], 0, 3).passed is True


def server(answers: list[dict | int]):
    """A Prometheus that gives `answers` in turn (a dict is the JSON body; an int, a
    status with no body) and records the queries it was asked."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        asked.append(request.url.params["query"])
        answer = answers[min(len(asked), len(answers)) - 1]
        return httpx.Response(answer) if isinstance(answer, int) else httpx.Response(200, json=answer)

    return httpx.MockTransport(handle), asked


def vector(*values: str) -> dict:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [1.0, v]} for v in values]}}


@pytest.mark.parametrize("answer, expected", [
    (vector("0.25"), (0.25, None, False)),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, (3.0, None, False)),
    (vector(), (None, None, False)),
    (vector("NaN"), (None, None, False)),
    (vector("1", "2"), (None, "the query returned 2 series; aggregate it to one (e.g. sum(...))", True)),
    ({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"},
     (None, "bad_data: parse error at char 3", True)),
    ({"status": "error", "errorType": "timeout", "error": "query timed out"}, (None, "timeout: query timed out", False)),
])
def test_a_query_yields_one_number_or_says_why_not(answer, expected):
    transport, _ = server([answer])
    with httpx.Client(transport=transport) as client:
        assert prometheus.query(client, "http://prom:9090/", "up") == expected


def test_the_gate_queries_every_check_each_evaluation_and_counts_failures_in_a_row():
    transport, asked = server([503, 503, vector("0"), 503, 503, 503])
    config = PrometheusConfig(url="http://prom:9090", max_query_failures=3)
    gate = PrometheusGate(config, window_s=5, transport=transport)
    outcomes = [gate.judge("llm", "v1", "v2").passed for _ in range(6)]
    assert outcomes == [None, None, True, None, None, False]  # the 3rd success resets the count
    assert len(asked) == 6 and 'application="llm--v2"' in asked[0] and "[5s]" in asked[0]
