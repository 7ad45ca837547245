"""Gate verdicts from probe figures and Serve status."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.gates import ProbeStats, judge, p95, serve_status_verdict
from runtime.serve_api import AppState, DeploymentState
from runtime.spec import GateConfig, ProbeRequest

DATA = Path(__file__).parent / "data"
GATES = GateConfig(min_success_rate=0.99, max_latency_ratio=2.0, latency_floor_ms=50, min_probes=20)
HEALTHY_PRIMARY = ProbeStats(sent=40, ok=40, p95_ms=40.0)


@pytest.mark.parametrize(
    ("canary", "gate", "passed"),
    [
        pytest.param(ProbeStats(40, 40, 45.0), "probes", True, id="a healthy canary passes"),
        pytest.param(ProbeStats(40, 32, 45.0), "success-rate", False, id="80% success fails the success-rate gate"),
        pytest.param(ProbeStats(40, 40, 81.0), "latency", False, id="p95 above 2x the primary fails the latency gate"),
        pytest.param(ProbeStats(10, 10, 10.0), "probes", False, id="too few probes cannot pass"),
    ],
)
def test_probe_verdicts(canary, gate, passed):
    verdict = judge(GATES, canary, HEALTHY_PRIMARY)
    assert (verdict.gate, verdict.passed) == (gate, passed)


def test_latency_budget_has_a_floor_for_a_very_fast_primary():
    verdict = judge(GATES, ProbeStats(40, 40, 30.0), ProbeStats(40, 40, 2.0))
    assert verdict.passed


def test_success_rate_failure_names_the_figures():
    verdict = judge(GATES, ProbeStats(120, 85, 10.0), HEALTHY_PRIMARY)
    assert verdict.detail == "canary success rate 70.8% < 99.0% over 120 probes of GET /"


def test_success_rate_failure_names_the_probe_and_what_it_got_so_a_wrong_probe_is_obvious():
    gates = GATES.model_copy(update={"probe": ProbeRequest(method="POST", path="/generate")})
    verdict = judge(gates, ProbeStats(20, 0, 0.0, answers="404 x20"), HEALTHY_PRIMARY)
    assert verdict.detail.endswith("of POST /generate (failed: 404 x20)")


def app(status: str, deployment_status: str, deployment_message: str = "", message: str = "") -> AppState:
    deployment = DeploymentState("TextModel", deployment_status, deployment_message, 1, ())
    return AppState("llm--v2", status, message, {}, {deployment.name: deployment})


@pytest.mark.parametrize("status", ["DEPLOY_FAILED", "UNHEALTHY"])
def test_a_failed_serve_status_fails_the_gate(status):
    verdict = serve_status_verdict(app(status, status, "constructor raised"))
    assert not verdict.passed and verdict.gate == "serve-status"
    assert verdict.detail == f"deployment TextModel {status}: constructor raised"


def test_a_failed_deployment_names_the_replicas_own_exception_not_the_apps_summary():
    real = (DATA / "deploy_failed_message.txt").read_text()  # as Ray 2.60 reported a raising constructor
    verdict = serve_status_verdict(app("DEPLOY_FAILED", "DEPLOY_FAILED", real,
                                       "Failed to update the deployments ['TextModel']."))
    assert verdict.detail.startswith("deployment TextModel DEPLOY_FAILED: ValueError: This file contains pickled")
    assert "(at runtime/app/tiny_model.py:34 in load <- runtime/app/model.py:34 in __init__)" in verdict.detail
    assert "Failed to update" not in verdict.detail and "pid=" not in verdict.detail


def test_a_running_app_passes_the_status_gate():
    assert serve_status_verdict(app("RUNNING", "HEALTHY")).passed


def test_p95_is_numpys_linear_percentile_the_one_rule_of_gates_and_bench():
    # Between the 19th and 20th of twenty: 19 + 0.05 x (20 - 19).
    assert p95([float(i) for i in range(1, 21)]) == pytest.approx(19.05)
    assert p95([]) == 0.0


def test_a_loaded_canary_is_judged_against_the_primarys_load_before_the_rollout():
    # Late in a rollout the primary is nearly idle (p95 5ms); the baseline under full
    # load was 40ms, so a canary at 70ms is healthy.
    verdict = judge(GATES, ProbeStats(40, 40, 70.0), ProbeStats(40, 40, 5.0), baseline_p95_ms=40.0)
    assert verdict.passed


def test_without_a_baseline_an_idle_primary_sets_the_budget():
    verdict = judge(GATES, ProbeStats(40, 40, 70.0), ProbeStats(40, 40, 5.0))
    assert (verdict.passed, verdict.gate) == (False, "latency")


def test_every_probe_sends_the_services_own_request_pinned_to_its_side():
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from runtime.gates import Prober

    seen = []

    class App(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            seen.append((self.command, self.path, self.headers["x-serve-version"], json.loads(body)))
            self.send_response(404 if self.path != "/svc/generate" else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/svc"
        request = ProbeRequest(method="POST", path="/generate", json_body={"prompt": "hi"})
        stats = Prober(endpoint, request).probe("primary", 3, 1)
        wrong = Prober(endpoint, ProbeRequest(method="POST", path="/nope", json_body={})).probe("canary", 2, 1)
    finally:
        server.shutdown()
    assert (stats.sent, stats.ok) == (3, 3)
    assert seen[0] == ("POST", "/svc/generate", "primary", {"prompt": "hi"})
    assert (wrong.ok, wrong.answers) == (0, "404 x2")


def probes(latencies_ms: list[float]) -> ProbeStats:
    return ProbeStats(len(latencies_ms), len(latencies_ms), p95(latencies_ms), latencies_ms=tuple(latencies_ms))


def test_one_slow_probe_on_a_busy_machine_does_not_roll_back_identical_code():
    # As CI saw it: 20 probes each side, same code; the canary's p95 is one request that
    # waited behind load (102ms > 2 x 45ms), its median the primary's.
    primary = probes([30.0 + i for i in range(19)] + [45.0])
    canary = probes([31.0 + i for i in range(18)] + [102.0, 110.0])
    verdict = judge(GATES, canary, primary)
    assert verdict.passed, verdict.detail
    assert "not beyond noise" in verdict.detail and "Mann-Whitney" in verdict.detail


def test_a_canary_slower_on_every_probe_fails_on_latency_with_the_test_that_says_so():
    primary = probes([30.0 + i for i in range(20)])
    canary = probes([230.0 + i for i in range(20)])
    verdict = judge(GATES, canary, primary)
    assert (verdict.passed, verdict.gate) == (False, "latency")
    assert verdict.detail.startswith("canary p95 248ms > 96ms (2x primary p95 48ms) (+200ms > 25ms slack")
