"""`gpuserve metrics`: the rollouts' state as Prometheus metrics, read live at each scrape."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from console import app as console_app

from runtime.live import LiveService
from runtime.record import OperatorCommand
from tests.unit.console.test_app import live

RUNNER = CliRunner()


def scraped(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_one_scrape_reports_phase_wave_weights_replicas_and_the_windows_real_traffic(rolling):
    result = RUNNER.invoke(console_app.app, ["metrics", "--once"])
    assert result.exit_code == 0, result.output
    m = scraped(result.output)
    assert m[("gpuserve_rollout_phase", (("phase", "rolling out"), ("service", "llm")))] == 1
    assert m[("gpuserve_rollout_phase", (("phase", "steady"), ("service", "llm")))] == 0
    assert m[("gpuserve_rollout_wave", (("service", "llm"),))] == 1
    assert m[("gpuserve_traffic_percent", (("role", "canary"), ("service", "llm"), ("version", "v2")))] == 25
    assert m[("gpuserve_replicas", (("service", "llm"), ("state", "ready"), ("version", "v1")))] == 3
    assert m[("gpuserve_window_requests", (("service", "llm"), ("version", "v2")))] == 10
    assert m[("gpuserve_window_error_ratio", (("service", "llm"), ("version", "v2")))] == 0.1
    assert m[("gpuserve_window_p95_seconds", (("service", "llm"), ("version", "v1")))] == 0.02
    assert m[("gpuserve_gpus_in_use", (("service", "llm"),))] == 2
    assert m[("gpuserve_scrape_error", (("service", "llm"),))] == 0


def test_a_standing_operator_command_and_the_history_are_exported(monkeypatch):
    from tests.unit.console.test_app import FakeSource

    base = live("v1")
    service = LiveService(**{**base.__dict__, "operator": OperatorCommand("abort", "v2", 1.0, "ops@desk"),
                             "rollouts": [{"id": 1, "outcome": "aborted"}, {"id": 2, "outcome": "promoted"},
                                          {"id": 3, "outcome": "promoted"}]})
    monkeypatch.setattr(console_app, "source_for", lambda name: FakeSource(name, {"llm": service}))
    monkeypatch.setattr(FakeSource, "samples", lambda self, rollout, since: [], raising=False)
    m = scraped(RUNNER.invoke(console_app.app, ["metrics", "--once"]).output)
    assert m[("gpuserve_operator_command", (("command", "abort"), ("service", "llm"), ("version", "v2")))] == 1
    assert m[("gpuserve_rollouts", (("outcome", "promoted"), ("service", "llm")))] == 2


def test_a_cluster_that_does_not_answer_is_a_metric_not_a_failed_scrape(monkeypatch):
    from tests.unit.console.test_app import FakeSource

    monkeypatch.setattr(console_app, "source_for",
                        lambda name: FakeSource(name, {"llm": None}, fail="the cluster does not answer"))
    result = RUNNER.invoke(console_app.app, ["metrics", "--once"])
    assert result.exit_code == 0, result.output
    assert scraped(result.output)[("gpuserve_scrape_error", (("service", "llm"),))] == 1


def test_the_exporter_serves_on_loopback(rolling):
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    from console.metrics import RolloutCollector

    source = console_app.source_for("local")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RolloutCollector(source, source.rollouts()))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        assert server.server_address[0] == "127.0.0.1"
        body = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
        assert "gpuserve_traffic_percent" in body
    finally:
        server.shutdown()
        server.server_close()
        assert isinstance(thread, threading.Thread)


def test_metrics_json_is_one_scrape_as_data(rolling):
    import json

    result = RUNNER.invoke(console_app.app, ["metrics", "--json"])
    assert result.exit_code == 0, result.output
    samples = json.loads(result.output)["metrics"]
    weights = {s["labels"]["version"]: s["value"] for s in samples if s["name"] == "gpuserve_traffic_percent"}
    assert weights == {"v1": 75.0, "v2": 25.0}
