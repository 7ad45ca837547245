"""Smoke test of the benchmark: one short scenario, few requests; every field present.
No thresholds here: figures belong in the benchmark's output."""

from __future__ import annotations

import json

import pytest

from bench import run
from bench.run import PulumiClock
from tests.unit.bench.test_report import FIELDS

pytestmark = pytest.mark.integration

def test_a_smoke_run_writes_every_figure_for_gpuserve_and_serves_own_update(tmp_path):
    from bench import report

    assert run.main(["--smoke", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*-rollouts.json")
    data = json.loads(path.read_text())
    assert {"cores", "ray", "pulumi"} <= set(data["machine"]) and data["settings"]["percentile_method"] == "linear"
    assert [c["peer"] for c in data["cases"]] == ["gpuserve", "serve-surge"]
    for case in data["cases"]:
        assert FIELDS <= set(case["metrics"]), FIELDS - set(case["metrics"])
        assert case["metrics"]["sent"] > 0 and case["metrics"]["min_capacity"] is not None
        assert (tmp_path / case["timeline_png"]).stat().st_size > 1000
    gpuserve = data["cases"][0]["metrics"]
    assert gpuserve["failed"] == 0, gpuserve
    assert gpuserve["ideal_s"] and gpuserve["actual_over_ideal"]
    # Where the time went: every kind of step of a completed rollout, and Pulumi's part of
    # it told apart by the engine's own events; the change ends at `pulumi up`'s summary.
    assert {"deploy", "ready wait", "bake", "traffic shift", "drain", "delete",
            *PulumiClock.PHASES} <= set(gpuserve["time_by_step"])
    assert gpuserve["automation_api_reads_s"] >= 0
    assert "| peer |" in report.markdown(data)


def smoke_report(bench, suffix: str, out) -> tuple[dict, object]:
    """Run one bench entry point's smoke mode into `out`; its one results JSON, and its path."""
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    (report_path,) = out.glob(f"*-{suffix}.json")
    return json.loads(report_path.read_text()), report_path


def test_a_smoke_run_of_the_router_overhead_bench_writes_every_column(tmp_path):
    from bench import router_overhead

    report, report_path = smoke_report(router_overhead, "router", tmp_path)
    assert {"cores", "ray", "pulumi"} <= set(report["machine"])
    (row,) = report["rows"]
    assert row["requests_per_path"] == 30
    assert row["p50_ms_direct"] > 0 and row["p50_ms_splitter"] > 0 and row["splitter_cpu_ms_per_request"] >= 0
    assert "| clients |" in (tmp_path / report_path.name.replace(".json", ".md")).read_text()


def test_a_smoke_run_of_the_false_rollback_bench_counts_each_rollout(tmp_path):
    from bench import false_rollbacks

    report, _ = smoke_report(false_rollbacks, "false-rollbacks", tmp_path)
    assert [row["run"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["sent"] > 0 and row["evaluations"] >= 1 or row["rolled_back"]
    assert "rollouts of identical code under load" in report["summary"]


def test_a_smoke_run_of_the_preview_bench_times_ours_and_pulumis_floor_side_by_side(tmp_path):
    from bench import preview_scale

    report, _ = smoke_report(preview_scale, "preview", tmp_path)
    assert [row["services"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert all(row[column] > 0 for column in preview_scale.COLUMNS), row
    parts = report["ms_per_added_service_by_part"]
    assert {"policy pack", "program", "floor (Pulumi alone)", "ours above the floor, pack included"} <= set(parts)
