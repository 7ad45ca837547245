"""Smoke test of the benchmark: one short scenario, few requests; every field present.
No thresholds here: figures belong in the benchmark's output."""

from __future__ import annotations

import json

import pytest

from bench import run

pytestmark = pytest.mark.integration

FIELDS = {"sent", "failed", "failure_rate", "failed_by_status", "failed_by_exception", "p50_ms_before",
          "p99_ms_before", "p50_ms_during", "p99_ms_during", "peak_gpus", "steady_gpus", "peak_over_steady",
          "min_capacity", "wall_s", "waves", "replica_ready_s", "ideal_s", "actual_over_ideal", "rollback_s",
          "detect_to_primary_s", "retries", "outcome"}


def test_a_smoke_run_writes_every_field(tmp_path):
    assert run.main(["--smoke", "--out", str(tmp_path)]) == 0
    (report_path,) = tmp_path.glob("*.json")
    report = json.loads(report_path.read_text())
    assert {"cores", "ray", "pulumi"} <= set(report["machine"])
    (scenario,) = report["scenarios"]
    assert FIELDS <= set(scenario["metrics"])
    assert scenario["metrics"]["sent"] > 0
    assert (tmp_path / scenario["timeline_png"]).stat().st_size > 1000
    assert "| scenario |" in (tmp_path / report_path.name.replace(".json", ".md")).read_text()


def test_a_smoke_run_of_the_router_overhead_bench_writes_every_column(tmp_path):
    from bench import router_overhead

    assert router_overhead.main(["--smoke", "--out", str(tmp_path)]) == 0
    (report_path,) = tmp_path.glob("*-router.json")
    report = json.loads(report_path.read_text())
    assert {"cores", "ray", "pulumi"} <= set(report["machine"])
    (row,) = report["rows"]
    assert row["requests_per_path"] == 30
    assert row["p50_ms_direct"] > 0 and row["p50_ms_splitter"] > 0 and row["splitter_cpu_ms_per_request"] >= 0
    assert "| clients |" in (tmp_path / report_path.name.replace(".json", ".md")).read_text()


def test_a_smoke_run_of_the_false_rollback_bench_counts_each_rollout(tmp_path):
    from bench import false_rollbacks

    assert false_rollbacks.main(["--smoke", "--out", str(tmp_path)]) == 0
    (report_path,) = tmp_path.glob("*-false-rollbacks.json")
    report = json.loads(report_path.read_text())
    assert [row["run"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["sent"] > 0 and row["evaluations"] >= 1 or row["rolled_back"]
    assert "rollouts of identical code under load" in report["summary"]
