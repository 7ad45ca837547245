"""A canary whose replicas keep dying (each exits a few seconds after it starts serving,
and Serve restarts it: a crash loop) is rolled back under load, and the clients see no
failure: the splitter retries what the dying replicas drop on the primary."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import CLASSIFIER_SERVICE, Load, classifier_stack

pytestmark = pytest.mark.faults

BASE = CLASSIFIER_SERVICE


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = classifier_stack(tmp_path_factory.mktemp("crash-loop"), bake_seconds=10)
    with stack.running():
        yield stack


def test_a_crash_looping_canary_is_rolled_back_and_costs_the_clients_nothing(stack):
    stack.services = [{**BASE, "version": "v2-crashing", "artifact": "models/v2.npz",
                       "runtime_env": {"env_vars": {"GPUSERVE_FAULT_EXIT_AFTER_S": "2"}}}]
    stack.write_config()
    with Load(stack.endpoint("clf"), clients=4) as load:
        time.sleep(1)
        result = stack.up(check=False)
        time.sleep(1)
    assert not result.ok
    assert "rolled back" in result.log and "primary v1 serves 100%" in result.log, result.report()
    assert stack.routing("clf") == {"service": "clf", "primary": "v1", "canary": None, "weights": {"v1": 100.0}}
    assert load.failed == 0, (load.counts, load.errors[:5])
