"""SIGKILL of `pulumi up` (the engine process itself) at each kind of rollout step, under
load: within 10 s nothing the update started is left running (the supervisor ends its
session), no client request fails, and the next `make up` (a stale-lock recovery, then
`up`) finishes what was under way, in the same direction."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import CLASSIFIER_SERVICE, Load, LocalStack, alive_of, classifier_stack

pytestmark = pytest.mark.faults

BASE = CLASSIFIER_SERVICE


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = classifier_stack(tmp_path_factory.mktemp("killed"), bake_seconds=5)
    with stack.running():
        yield stack


def declare(stack: LocalStack, version: str, env: dict | None = None) -> None:
    stack.services = [{**BASE, "version": version, "artifact": "models/v1.npz",
                       **({"runtime_env": {"env_vars": env}} if env else {})}]
    stack.write_config()


def killed_then_resumed(stack: LocalStack, at: str):
    """Kill `up` when a line containing `at` arrives; check nothing is left; `make up` again."""
    with Load(stack.endpoint("clf"), clients=4) as load:
        time.sleep(1)
        _, session = stack.up_killed_when(lambda line: at in line)
        deadline = time.monotonic() + 10
        while alive_of(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = alive_of(session)
        stack.recover_if_stale()
        resumed = stack.up(check=False)
    return left, resumed, load


@pytest.mark.parametrize("version, at", [
    ("v2", "deployed: 1 ready at 0% traffic"),  # after deploy-canary
    ("v3", "evaluation at 33.33%"),  # mid-bake of wave 1 (1 canary, 2 primary replicas)
    ("v4", "serves 100%; draining"),  # during finish
])
def test_a_rollout_killed_at_any_step_leaves_nothing_behind_and_is_finished_by_the_next_up(stack, version, at):
    declare(stack, version)
    left, resumed, load = killed_then_resumed(stack, at)
    assert left == [], f"processes of the killed update still alive after 10 s: {left}"
    assert resumed.ok, resumed.report()
    assert stack.routing("clf")["primary"] == version and stack.routing("clf")["canary"] is None
    assert load.failed == 0, (load.counts, load.errors[:5])


def test_a_rollback_killed_midway_stays_a_rollback(stack):
    """Killed as the rollback of a failing canary begins. Where the kill lands is a race
    with a rollback that takes about a second: if the canary is still live, the next `up`
    finishes the recorded rollback; if it was already deleted, the next `up` is a new
    attempt that the gates roll back again. Either way the failing version never becomes
    the primary (every cut-off point is covered deterministically in
    tests/unit/runtime/test_controller.py)."""
    start = stack.routing("clf")["primary"]
    declare(stack, "v9-down", {"GPUSERVE_FAULT_ERROR_RATE": "1.0"})
    left, resumed, _ = killed_then_resumed(stack, "rolling back v9-down")
    assert left == []
    assert not resumed.ok
    assert ("finishing the interrupted rollback" in resumed.log
            or f"rollout {start} -> v9-down" in resumed.log), resumed.report()
    assert stack.routing("clf") == {"service": "clf", "primary": start, "canary": None, "weights": {start: 100.0}}
    declare(stack, start)
    assert stack.up().ok
