"""`gpuserve timeline`: a rollout's full record drawn against time."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from console import app as console_app
from console.source import Rollout
from console.timeline import series
from runtime import record
from runtime.errors import RolloutFailed
from tests.unit.console.test_app import FakeSource, live
from tests.unit.runtime import test_controller as tc

RUNNER = CliRunner()


def rolled_back_run() -> dict:
    """A real controller's record of v1 -> v2 that real traffic fails in wave 2."""
    serve = tc.serving("v1")
    controller = tc.RolloutController(tc.baking(3), serve, prober=tc.FakeProber(), log=lambda line: None, poll_s=1.0,
                                      traffic=tc.FakeTraffic(fail_from=6))
    with tc.offline(serve), pytest.raises(RolloutFailed):
        controller.converge()
    return controller.run_record()


def test_the_series_follow_traffic_replicas_errors_and_p95_per_version_with_the_gates_marked():
    run = rolled_back_run()
    data = series(run)
    assert (data.source, data.target, data.outcome) == ("v1", "v2", "rolled back")
    assert data.traffic["v2"][0] == 0 and max(data.traffic["v2"]) > 0 and data.traffic["v2"][-1] == 0
    assert all(a + b == 100 for a, b in zip(data.traffic["v1"], data.traffic["v2"]))
    assert data.replicas["v2"][-1] == 0 and data.replicas["v1"][-1] == tc.N
    assert max(r for r in data.error_rate["v2"] if r is not None) == 0.1  # 10 of 100 failing
    assert set(p for p in data.p95_ms["v1"] if p is not None) == {20.0}
    assert [passed for _, passed, _ in data.gates] == [True, False]
    assert data.rollback_at is not None and data.rollback_at >= data.gates[-1][0]
    assert data.t_shape == sorted(data.t_shape) and data.t_eval == sorted(data.t_eval)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    run = rolled_back_run()
    record.write_run(tmp_path / "llm", run)

    class Recorded(FakeSource):
        def rollouts(self):
            return [Rollout(service="llm", spec={}, history=[], dashboard_url="http://127.0.0.1:1", token="t",
                            token_path=None, kubeconfig=None, rollouts=[run["summary"]],
                            props={"record_dir": str(tmp_path)})]

        def run_record(self, rollout, rollout_id):
            from console.source import StackSource

            return StackSource.run_record(self, rollout, rollout_id)

    monkeypatch.setattr(console_app, "source_for", lambda name: Recorded(name, {"llm": live("v1")}))
    return run


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".html", b"<!doctype html>")])
def test_timeline_draws_the_last_rollout_to_a_png_or_a_self_contained_html_page(recorded, tmp_path, suffix, magic):
    out = tmp_path / f"timeline{suffix}"
    result = RUNNER.invoke(console_app.app, ["timeline", "llm", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["outcome"] == "rolled back"
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 20_000
    if suffix == ".html":
        assert "rolling back v2 -&gt; v1" in out.read_text()


def test_timeline_says_what_is_missing_rather_than_drawing_nothing(recorded, tmp_path):
    result = RUNNER.invoke(console_app.app, ["timeline", "llm", "--rollout", "2", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "llm has 1 rollouts on record; --rollout takes 1 to 1" in result.output
    result = RUNNER.invoke(console_app.app, ["timeline", "llm", "--out", str(tmp_path / "x.svg")])
    assert result.exit_code == 1 and "give a .png or an .html file" in result.output


def test_runs_of_one_rollout_are_kept_as_one_record(tmp_path):
    first = {"id": 7, "summary": {"outcome": "held"}, "history": [{"at": 1.0, "step": "wave", "message": "w1"}]}
    second = {"id": 7, "summary": {"outcome": "promoted"}, "history": [{"at": 1.0, "step": "wave", "message": "w1"},
                                                                       {"at": 2.0, "step": "finish", "message": "f"}]}
    record.write_run(tmp_path, first)
    path = record.write_run(tmp_path, second)
    kept = record.read_run(path)
    assert kept["summary"]["outcome"] == "promoted" and [e["message"] for e in kept["history"]] == ["w1", "f"]
