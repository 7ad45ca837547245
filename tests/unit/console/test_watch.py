"""One frame of `gpuserve watch`: the wave table and the real-traffic figures, as data."""

from __future__ import annotations

from console.watch import bar, traffic_rows, wave_rows

SPEC = {"scaling": {"num_replicas": 4}, "rollout": {"max_surge_percent": 25}}


def test_the_wave_table_is_the_controllers_plan_with_the_intents_wave_marked():
    rows = wave_rows(SPEC, "v2", {"direction": "forward", "wave": 2})
    waves = [r.wave for r in rows if r.step == "wave"]
    assert waves == [1, 2, 3] and rows[-1].step == "finish" and rows[-1].canary_traffic == 100
    states = {r.wave: r.state for r in rows if r.wave}
    assert (states[1], states[2], states[3]) == ("done", "now", "next")
    assert max(r.primary_replicas + r.canary_replicas for r in rows) <= 5  # N + surge
    # Each wave is judged at the canary's share of the ready replicas, then resized at C/N.
    assert [(r.gated_at, r.canary_traffic) for r in rows if r.step == "wave"] == [(20, 25), (40, 50), (60, 75)]
    assert rows[0].gated_at is None  # deploying the canary is not gated


def test_no_canary_no_wave_table_and_a_hold_ends_the_table_at_the_hold():
    assert wave_rows(SPEC, None, None) == []
    held = wave_rows({**SPEC, "rollout": {"max_surge_percent": 25, "canary_percent": 50}}, "v2", {"wave": 1})
    assert held[-1].step == "hold" and held[-1].canary_traffic == 50


def test_real_traffic_rows_count_errors_and_take_p95_of_the_answers_that_were_not_errors():
    samples = [{"v": "v2", "c": 200, "ms": float(ms)} for ms in range(1, 101)] + [{"v": "v2", "c": 502, "ms": 9999.0}]
    (row,) = traffic_rows(samples, ["v2"])
    assert (row.requests, row.errors) == (101, 1) and 95 <= row.p95_ms <= 96
    (empty,) = traffic_rows([], ["v1"])
    assert (empty.requests, empty.p95_ms) == (0, None)


def test_a_bar_is_proportional_and_never_overflows():
    assert bar(0) == "·" * 20 and bar(100) == "█" * 20 and bar(25).count("█") == 5 and len(bar(250)) == 20
