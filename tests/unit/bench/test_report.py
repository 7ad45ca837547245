"""The committed results of the newest full bench run, and the README generated from them."""

from __future__ import annotations

import itertools
import json

import pytest

from bench import report, run

# Every figure a case reports (bench/run.py); None where it does not apply to a peer.
FIELDS = {"sent", "failed", "failure_rate", "failed_by_status", "failed_by_exception", "p50_ms_before",
          "p99_ms_before", "p50_ms_during", "p99_ms_during", "p99_during_over_before", "peak_gpus", "steady_gpus",
          "peak_over_steady", "min_capacity", "wall_s", "waves", "replica_ready_s", "ideal_s", "actual_over_ideal",
          "detect_to_primary_s", "retries", "time_by_step", "node_lost", "outcome"}

FULL = report.newest("full")


@pytest.fixture(scope="module")
def data():
    return json.loads(FULL.read_text())


def test_the_full_run_covers_every_peer_scenario_and_load(data):
    seen = {(c["load"], c["scenario"], c["peer"]) for c in data["cases"]}
    assert seen == set(itertools.product(run.LOADS, run.SCENARIOS, [p.key for p in run.PEERS]))


def test_every_case_reports_every_figure_and_its_timeline(data):
    for case in data["cases"]:
        assert FIELDS <= set(case["metrics"]), (case["case"], FIELDS - set(case["metrics"]))
        assert (FULL.parent / case["timeline_png"]).is_file(), case["timeline_png"]


def test_gpuserve_failed_no_client_request_except_when_a_node_was_lost(data):
    failed = {c["case"]: c["metrics"]["failed"] for c in data["cases"]
              if c["peer"] == "gpuserve" and c["scenario"] != "node-loss"}
    assert failed and not any(failed.values()), failed


def test_the_saturating_load_offers_at_least_ninety_percent_of_the_measured_capacity(data):
    for case in data["cases"]:
        if case["load"] == "saturating":
            m = case["metrics"]
            assert m["offered_rps"] >= 0.9 * m["capacity_rps"] - 0.1, case["case"]


def test_the_readme_table_is_generated_from_the_committed_run(data):
    block = report.readme_block(data, f"bench/results/{FULL.name}")
    assert block in report.README.read_text(), "run `python -m bench.report --readme` after a full bench run"
