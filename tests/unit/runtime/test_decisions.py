"""`decide`: the moves `pulumi up` makes from a live state, the same list preview prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from runtime.decisions import Intent, decide
from runtime.plan import StepKind
from runtime.spec import ServiceSpec

N = 4


def spec(version: str = "v2", canary_percent: int | None = None, surge: int = 25) -> ServiceSpec:
    return ServiceSpec.model_validate({
        "service": "llm", "route_prefix": "/llm", "http_url": "http://127.0.0.1:1",
        "version": {"version": version, "import_path": "m:app", "artifact": "a.npz"},
        "scaling": {"num_replicas": N},
        "rollout": {"max_surge_percent": surge, "canary_percent": canary_percent},
    })


@dataclass
class Live:
    primary: str | None = "v1"
    canary: str | None = None
    canary_traffic: float = 0.0
    ready: dict[str, int] = field(default_factory=lambda: {"v1": N})
    intent: dict | None = None

    @property
    def declared(self) -> dict[str, int]:
        return dict(self.ready)


def intents(live: Live, wanted: ServiceSpec) -> list[Intent]:
    return [move.intent for move in decide(live, wanted)]


def test_nothing_live_is_created():
    assert intents(Live(primary=None, ready={}), spec()) == [Intent.CREATE]


def test_the_primary_as_target_changes_in_place_only():
    assert intents(Live(), spec("v1")) == [Intent.IN_PLACE]


def test_a_new_version_rolls_out_from_a_full_primary():
    (move,) = decide(Live(), spec("v2"))
    assert move.intent is Intent.ROLLOUT and not move.resumed
    assert (move.primary, move.canary) == ("v1", "v2")
    assert move.plan.steps[0].kind is StepKind.DEPLOY_CANARY


def test_a_live_canary_of_the_target_is_resumed_from_its_replicas_and_traffic():
    live = Live(canary="v2", canary_traffic=25.0, ready={"v1": 3, "v2": 2})
    (move,) = decide(live, spec("v2"))
    assert move.intent is Intent.ROLLOUT and move.resumed
    assert StepKind.DEPLOY_CANARY not in [s.kind for s in move.plan.steps]
    assert move.plan.steps[-1].kind is StepKind.FINISH


@pytest.mark.parametrize("traffic,ready", [(50.0, {"v1": 2, "v2": 2}), (75.0, {"v1": 1, "v2": 4})])
def test_reverting_to_the_primary_previews_a_capacity_safe_rollback_then_nothing_else(traffic, ready):
    live = Live(canary="v2", canary_traffic=traffic, ready=ready)
    rollback, stay = decide(live, spec("v1"))
    assert rollback.intent is Intent.ROLLBACK_STALE and stay.intent is Intent.IN_PLACE
    assert rollback.plan.steps[-1].kind is StepKind.REMOVE_CANARY
    # Traffic returns to the primary only as its ready capacity grows.
    for step in rollback.plan.steps:
        assert 100 - step.canary_traffic <= 100 * step.primary_replicas / N + 1e-6
    assert "rolling back v2 -> v1: stale canary v2: reverted to the primary" in rollback.describe("llm")


def test_a_canary_of_a_third_version_is_rolled_back_before_the_new_rollout():
    live = Live(canary="v2", canary_traffic=25.0, ready={"v1": 4, "v2": 1})
    assert intents(live, spec("v3")) == [Intent.ROLLBACK_STALE, Intent.ROLLOUT]


def test_canary_percent_zero_aborts_a_live_canary_and_declines_a_new_one():
    assert intents(Live(canary="v2", canary_traffic=25.0, ready={"v1": 4, "v2": 1}), spec("v2", 0)) == [Intent.ABORT]
    assert intents(Live(), spec("v2", 0)) == [Intent.DECLINE]


def test_a_hold_plans_up_to_the_held_share():
    (move,) = decide(Live(), spec("v2", 50))
    assert move.plan.steps[-1].kind is StepKind.HOLD and move.plan.steps[-1].canary_traffic == 50


def test_version_apps_without_a_router_are_adopted_first():
    live = Live(primary=None, ready={"v1": 4, "v0": 1})
    moves = decide(live, spec("v2"))
    assert [m.intent for m in moves] == [Intent.ADOPT, Intent.ROLLOUT]
    assert moves[0].primary == "v1"


def test_only_adopt_and_stale_rollback_are_followed_by_another_decision():
    assert {i for i in Intent if not i.terminal} == {Intent.ADOPT, Intent.ROLLBACK_STALE}


def test_an_interrupted_rollback_of_the_target_is_finished_not_rolled_forward():
    wanted = spec("v2")
    live = Live(canary="v2", canary_traffic=25.0, ready={"v1": 3, "v2": 2},
                intent={"direction": "rollback", "target": "v1", "reason": "canary failed 10 of 100",
                        "spec": wanted.digest()})
    (move,) = decide(live, wanted)
    assert move.intent is Intent.RESUME_ROLLBACK and move.intent.terminal
    assert move.describe("llm").startswith("[llm] rolling back v2 -> v1: finishing the interrupted rollback "
                                           "(canary failed 10 of 100)")


def test_a_changed_config_since_the_interrupted_rollback_lets_the_rollout_resume():
    live = Live(canary="v2", canary_traffic=25.0, ready={"v1": 3, "v2": 2},
                intent={"direction": "rollback", "target": "v1", "spec": spec("v2").digest()})
    (move,) = decide(live, spec("v2", surge=50))  # the user changed the config: a new attempt
    assert move.intent is Intent.ROLLOUT and move.resumed
    forward = Live(canary="v2", canary_traffic=25.0, ready={"v1": 3, "v2": 2},
                   intent={"direction": "forward", "target": "v2", "spec": spec("v2").digest()})
    assert decide(forward, spec("v2"))[0].intent is Intent.ROLLOUT
