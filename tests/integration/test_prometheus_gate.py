"""A rollout gated on a real Prometheus server: Debian's `prometheus` (unpacked by
scripts/install-prometheus) scrapes the local Ray node's metrics page every second, and
the gate's only real-traffic source is its templated queries over Ray Serve's metrics."""

from __future__ import annotations

import os
import time

import pytest

from runtime.local_cluster import metrics_port
from tests.integration.harness import Load, LocalStack, PrometheusServer

pytestmark = pytest.mark.integration

BASE = {"name": "clf", "pool": "gpu", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1},
        "graceful_shutdown_timeout_s": 1, "max_ongoing_requests": 32, "max_queued_requests": 128,
        "request_timeout_s": 10}
CHECKS = [{"name": "error-rate", "template": "error-rate", "max": 0.01},
          {"name": "p95", "template": "latency-p95-ms", "max": 2000}]


def rollout(prometheus_url: str) -> dict:
    return {"max_surge_percent": 50, "bake_seconds": 12, "step_timeout_seconds": 120,
            "gates": {"source": "prometheus", "min_probes": 10,
                      "probe": {"method": "POST", "json_body": {"features": [5.9, 3.0, 4.2, 1.5]}},
                      "prometheus": {"url": prometheus_url, "window_seconds": 5, "checks": CHECKS}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = PrometheusServer.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Prometheus-gated rollout, but: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("prometheus")
    stack = LocalStack(root, gpus=4, services=[{**BASE, "version": "v1"}],
                       local={"metrics_report_interval_ms": 1000})
    target = f"127.0.0.1:{metrics_port(stack.ports['internal_ports_start'])}"
    with PrometheusServer(root / "prometheus", [target]) as server:
        stack.rollout = rollout(server.url)
        stack.write_config()
        with stack.running():
            stack.prometheus = server
            yield stack


def roll(stack: LocalStack, version: str, env: dict | None = None):
    stack.services = [{**BASE, "version": version, "artifact": "models/v1.npz",
                       **({"runtime_env": {"env_vars": env}} if env else {})}]
    stack.write_config()
    with Load(stack.endpoint("clf"), clients=4) as load:
        time.sleep(1)
        result = stack.up(check=False)
    return result, load


def test_the_stack_exports_the_metrics_page_that_prometheus_scrapes(stack):
    assert stack.outputs()["metrics_url"].endswith(f":{metrics_port(stack.ports['internal_ports_start'])}/metrics")
    assert [s["value"][1] for s in stack.prometheus.query('up{job="ray"}')] == ["1"]


def test_a_healthy_canary_is_promoted_on_prometheus_figures(stack):
    result, load = roll(stack, "v2")
    assert result.ok, result.report()
    assert "gate after wave 1 at 33.33%: pass: canary error-rate 0 <= 0.01, p95" in result.log, result.report()
    assert "prometheus pass: canary error-rate 0" in result.log  # the per-second evaluations
    assert load.failed == 0
    evaluations = [e for e in stack.resource_outputs("ModelRollout")["history"] if e.get("step") == "evaluation"]
    assert evaluations and {e["source"] for e in evaluations} == {"prometheus"}
    assert any(e["passed"] and e["checks"][0]["value"] == 0 for e in evaluations)


def test_a_failing_canary_is_rolled_back_by_a_prometheus_check(stack):
    result, _ = roll(stack, "v3-down", {"GPUSERVE_FAULT_ERROR_RATE": "1.0"})
    assert not result.ok
    assert "(prometheus gate): canary error-rate = 1, not <= 0.01" in result.log, result.report()
    assert stack.routing("clf")["primary"] == "v2"
