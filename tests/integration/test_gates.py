"""Gates that see what users see, on real engines: real traffic from 4 clients, judged
from the splitter's own samples every second, with the splitter's fallback keeping a bad
canary's failures away from the clients. Each test counts client-side failures."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.harness import CLASSIFIER_SERVICE, Load, LocalStack, classifier_stack, gated_rollout

pytestmark = pytest.mark.integration

BASE = CLASSIFIER_SERVICE
ROLLOUT = gated_rollout(bake_seconds=8)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = classifier_stack(tmp_path_factory.mktemp("gates"), bake_seconds=8)
    with stack.running():
        yield stack


def primary(stack: LocalStack) -> str:
    return stack.routing("clf")["primary"]


def other(version: str) -> str:
    return "v2" if version == "v1" else "v1"


def roll(stack: LocalStack, version: str, env: dict | None = None, **service):
    """Declare `version` (with fault knobs in `env`), run `up` under load, restore the
    primary's declaration; returns (result, load)."""
    start = primary(stack)
    artifact = f"models/{'v2' if version.startswith('v2') else 'v1'}.npz"
    stack.services = [{**BASE, "version": version, "artifact": artifact,
                       **({"runtime_env": {"env_vars": env}} if env else {}), **service}]
    stack.write_config()
    with Load(stack.endpoint("clf"), clients=4) as load:
        time.sleep(1)
        result = stack.up(check=False)
        time.sleep(1)
    if not result.ok:
        stack.services = [{**BASE, "version": start, "artifact": f"models/{start}.npz"}]
        stack.write_config()
    return result, load


def test_a_canary_that_starts_failing_late_is_rolled_back_with_no_failed_request(stack):
    result, load = roll(stack, "v2-late", {"GPUSERVE_FAULT_AFTER_S": "8"})
    assert not result.ok
    assert "(traffic-errors gate): canary failed" in result.log, result.report()
    assert load.failed == 0, (load.counts, load.errors[:5])


def test_a_canary_that_fails_every_request_costs_the_clients_nothing(stack):
    result, load = roll(stack, "v2-down", {"GPUSERVE_FAULT_ERROR_RATE": "1.0"})
    assert not result.ok and "gate): canary" in result.log
    assert load.failed == 0, (load.counts, load.errors[:5])


def test_a_slower_canary_is_rolled_back_on_latency(stack):
    result, load = roll(stack, "v2-slow", {"GPUSERVE_EXTRA_LATENCY_MS": "80"})
    assert not result.ok
    assert "(traffic-latency gate): canary slower" in result.log, result.report()
    assert load.failed == 0


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_an_identical_canary_is_promoted(stack, attempt):
    target = other(primary(stack))
    result, load = roll(stack, target)
    assert result.ok, result.report()
    assert "gate after wave 1 at 33.33%: pass: canary" in result.log
    assert load.failed == 0
    assert primary(stack) == target


def test_past_the_retry_budget_errors_pass_through_and_the_canary_is_rolled_back(stack):
    result, load = roll(stack, "v2-down", {"GPUSERVE_FAULT_ERROR_RATE": "1.0"}, retry_budget_percent=1,
                        retry_min_per_second=0)
    assert not result.ok and "gate): canary" in result.log
    assert load.failed > 0
    assert {status for (status, version) in load.counts if version == primary(stack)} == {200}


def test_a_request_pinned_to_a_failing_canary_gets_the_failure_and_is_not_retried(stack):
    start = primary(stack)
    held = {"rollout": {**ROLLOUT, "canary_percent": 50, "gates": {**ROLLOUT["gates"], "enabled": False}}}
    # Held at 50% with no gate, the canary fails half of all requests: a budget of 100%
    # extra requests lets every one of them fall back (the default 20% would not).
    result, load = roll(stack, "v2-down", {"GPUSERVE_FAULT_ERROR_RATE": "1.0"}, retry_budget_percent=100, **held)
    try:
        assert result.ok, result.report()
        assert load.failed == 0, (load.counts, load.errors[:5])  # weighted requests fell back to the primary
        pinned = httpx.post(stack.endpoint("clf"), json={"features": [5.9, 3.0, 4.2, 1.5]},
                            headers={"x-serve-version": "canary"}, timeout=30)
        assert (pinned.status_code, pinned.headers["x-serve-version"]) == (500, "v2-down")
    finally:
        stack.services = [{**BASE, "version": start, "artifact": f"models/{start}.npz"}]
        stack.write_config()
        stack.up()  # the declared primary again: the held canary is rolled back
    assert stack.routing("clf") == {"service": "clf", "primary": start, "canary": None, "weights": {start: 100.0}}
