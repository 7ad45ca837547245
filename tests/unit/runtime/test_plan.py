"""Wave planning: Anyscale's rollout rules as tables and as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.plan import StepKind, plan_rollback, plan_rollout, surge_replicas, traffic_cap


def shape(plan):
    return [(s.kind.value, s.primary_replicas, s.canary_replicas, s.canary_traffic) for s in plan.steps]


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        pytest.param(4, 25, [("deploy-canary", 4, 1, 0), ("wave", 3, 2, 25), ("wave", 2, 3, 50),
                             ("wave", 1, 4, 75), ("finish", 0, 4, 100)],
                     id="N=4 p=25 grows the canary one replica a wave within 5 replicas"),
        pytest.param(4, 100, [("deploy-canary", 4, 4, 0), ("finish", 0, 4, 100)],
                     id="p=100 is blue/green: one wave at 2N"),
        pytest.param(2, 50, [("deploy-canary", 2, 1, 0), ("wave", 1, 2, 50), ("finish", 0, 2, 100)],
                     id="N=2 p=50 takes two waves"),
        pytest.param(1, 1, [("deploy-canary", 1, 1, 0), ("finish", 0, 1, 100)],
                     id="a single replica surges by one, never by zero"),
        pytest.param(10, 30, [("deploy-canary", 10, 3, 0), ("wave", 7, 6, 30), ("wave", 4, 9, 60),
                              ("wave", 1, 10, 90), ("finish", 0, 10, 100)],
                     id="N=10 p=30 never goes past max surge"),
    ],
)
def test_rollout_waves(n, p, expected):
    assert shape(plan_rollout(n, p)) == expected


def test_each_wave_gates_at_the_canarys_share_of_the_ready_replicas():
    plan = plan_rollout(4, 25)
    gated = [(s.primary_replicas, s.canary_replicas, s.judged_at, s.canary_traffic) for s in plan.steps if s.gated]
    # Gated with (P, C) = (4, 1), (3, 2), (2, 3), then the finish: both versions carry
    # the same load per replica; then up to the cap for the resize.
    assert gated == [(3, 2, 20, 25), (2, 3, 40, 50), (1, 4, 60, 75), (0, 4, 100, 100)]


def test_a_hold_holds_at_its_percent_and_a_low_explicit_step_gates_at_the_step():
    assert plan_rollout(4, 25, hold_at=25).steps[-1].judged_at == 25
    assert [s.judged_at for s in plan_rollout(4, 25, traffic_steps=[10]).steps if s.gated][:2] == [10, 20]


def test_explicit_traffic_steps_are_capped_by_ready_capacity():
    plan = plan_rollout(4, 25, traffic_steps=[10, 50])
    traffic = [s.canary_traffic for s in plan.steps if s.kind is not StepKind.DEPLOY_CANARY]
    assert traffic == [10, 25, 50, 75, 100]


def test_canary_percent_holds_the_split_with_both_versions_live():
    plan = plan_rollout(4, 25, hold_at=25)
    assert shape(plan)[-1] == ("hold", 4, 1, 25)


def test_resuming_from_a_held_split_continues_where_it_stopped():
    plan = plan_rollout(4, 25, primary=4, canary=1, canary_traffic=25)
    assert shape(plan)[0] == ("wave", 3, 2, 25)
    assert plan.steps[-1].kind is StepKind.FINISH


def test_fractional_gpus_count_in_the_peak():
    plan = plan_rollout(4, 25, old_gpus_per_replica=0.5, new_gpus_per_replica=0.5)
    assert plan.peak_gpus == 2.5


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param((1, 4, 100), [("rollback", 2, 3, 75), ("rollback", 3, 2, 50), ("rollback", 4, 1, 25),
                                   ("remove-canary", 4, 0, 0)],
                     id="after 100% migrated, the primary regains capacity before traffic returns"),
        pytest.param((4, 1, 0), [("remove-canary", 4, 0, 0)],
                     id="a canary that never took traffic is simply removed"),
        pytest.param((4, 4, 100), [("remove-canary", 4, 0, 0)],
                     id="blue/green rolls back in one move: the primary is still whole"),
        pytest.param((2, 3, 50), [("rollback", 3, 2, 50), ("rollback", 4, 1, 25), ("remove-canary", 4, 0, 0)],
                     id="rolling back mid-way frees canary replicas first"),
    ],
)
def test_rollback_steps(state, expected):
    p, c, t = state
    assert shape(plan_rollback(4, 25, primary=p, canary=c, canary_traffic=t)) == expected


# -- properties over N in 1..64 and p in 1..100 -------------------------------------

EPS = 1e-3  # percents are rounded to 4 decimals
sizes = st.integers(min_value=1, max_value=64)
surges = st.integers(min_value=1, max_value=100)
gpus = st.sampled_from([0.25, 0.5, 1.0, 2.0])


def walk(plan, p0, c0, t0):
    """Yield (P, C, t) after each sub-move, in the controller's order: traffic,
    then shrink, then grow."""
    p, c, t = p0, c0, t0
    for s in plan.steps:
        if s.gated:
            # The bake's and the gate's share, before the resize: at most the canary's
            # share of the ready replicas, unless traffic was past it already.
            assert s.kind is StepKind.HOLD or c >= plan.n or s.judged_at <= max(t, 100 * c / (c + p)) + EPS, \
                "gated at most at the canary's share of the ready replicas"
            t = s.judged_at
            yield p, c, t
        t = s.canary_traffic
        yield p, c, t
        if s.primary_replicas < p:
            p = s.primary_replicas
        if s.canary_replicas < c:
            c = s.canary_replicas
        yield p, c, t
        p, c = max(p, s.primary_replicas), max(c, s.canary_replicas)
        yield p, c, t


@settings(max_examples=300, deadline=None)
@given(n=sizes, p=surges, g=gpus)
def test_rollout_invariants(n, p, g):
    plan = plan_rollout(n, p, old_gpus_per_replica=g, new_gpus_per_replica=g)
    surge = surge_replicas(n, p)
    assert surge == min(n, max(1, math.ceil(p * n / 100)))
    assert plan.steps[0].canary_replicas == surge
    for primary, canary, t in walk(plan, n, 0, 0):
        assert primary + canary <= n + surge, "never past max surge"
        assert t <= traffic_cap(canary, n) + EPS, "canary traffic within its ready share"
        if t < 100:
            assert 100 - t <= traffic_cap(primary, n) + EPS, "primary traffic within its ready share"
            assert primary >= 1, "one primary replica until 100%"
    assert plan.peak_gpus <= (n + surge) * g
    assert plan.steps[-1].kind is StepKind.FINISH and plan.steps[-1].canary_replicas == n
    traffic = [t for s in plan.steps for t in (s.judged_at, s.canary_traffic)]
    assert traffic == sorted(traffic), "traffic only moves forward"
    grown = [s.canary_replicas for s in plan.steps]
    assert all(b - a <= surge for a, b in zip(grown, grown[1:])), "canary grows by at most the surge a wave"


@settings(max_examples=300, deadline=None)
@given(n=sizes, p=surges, data=st.data())
def test_rollback_from_any_point_of_a_rollout_is_capacity_safe(n, p, data):
    forward = plan_rollout(n, p)
    cut = data.draw(st.integers(min_value=0, max_value=len(forward.steps) - 1))
    step = forward.steps[cut]
    primary = step.primary_replicas if step.kind is not StepKind.FINISH else forward.steps[cut - 1].primary_replicas if cut else n
    primary = max(primary, 1)
    plan = plan_rollback(n, p, primary=primary, canary=step.canary_replicas, canary_traffic=step.canary_traffic)
    surge = surge_replicas(n, p)
    for prim, canary, t in walk(plan, primary, step.canary_replicas, step.canary_traffic):
        assert prim + canary <= n + surge
        assert t <= traffic_cap(canary, n) + EPS
        assert 100 - t <= traffic_cap(prim, n) + EPS
    last = plan.steps[-1]
    assert (last.kind, last.primary_replicas, last.canary_replicas, last.canary_traffic) == \
        (StepKind.REMOVE_CANARY, n, 0, 0)


@settings(max_examples=200, deadline=None)
@given(n=sizes, p=surges, steps=st.lists(st.integers(1, 100), max_size=5, unique=True))
def test_explicit_steps_terminate_within_the_rules(n, p, steps):
    plan = plan_rollout(n, p, traffic_steps=sorted(steps))
    surge = surge_replicas(n, p)
    for primary, canary, t in walk(plan, n, 0, 0):
        assert primary + canary <= n + surge
        assert t <= traffic_cap(canary, n) + EPS
    assert plan.steps[-1].kind is StepKind.FINISH
