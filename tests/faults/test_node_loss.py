"""A worker node of the pool dies in the middle of a rollout (SIGKILL of its raylet): the
clients lose at most the requests in flight on it, the rollout ends with one version
serving, and the next `pulumi up` restarts the node and converges."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from tests.integration.harness import CLASSIFIER_SERVICE, Load, LocalStack, gated_rollout

pytestmark = pytest.mark.faults

CLIENTS = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Three one-GPU nodes: two replicas and a surge of one.
    stack = LocalStack(tmp_path_factory.mktemp("node-loss"), gpus=3, pool={"gpus_per_node": 1},
                       services=[{**CLASSIFIER_SERVICE, "version": "v1"}], rollout=gated_rollout(5))
    with stack.running():
        yield stack


def raylet_of(node: dict) -> psutil.Process:
    return next(p for p in psutil.Process(int(node["pid"])).children(recursive=True) if p.name() == "raylet")


def test_a_node_lost_mid_rollout_costs_at_most_its_in_flight_requests_and_the_next_up_converges(stack):
    nodes = {n["node_name"]: n for n in stack.resource_outputs("LocalRayWorkers")["nodes"]}
    victim = nodes["gpu-0"]
    killed = threading.Event()

    def kill_at_first_wave(event) -> None:
        diag = event.diagnostic_event
        if diag and "wave 1/" in diag.message and not killed.is_set():
            killed.set()
            os.kill(raylet_of(victim).pid, signal.SIGKILL)

    stack.services = [{**CLASSIFIER_SERVICE, "version": "v2", "artifact": "models/v2.npz"}]
    stack.write_config()
    with Load(stack.endpoint("clf"), clients=CLIENTS) as load:
        first = stack.up(check=False, on_event=kill_at_first_wave)
        time.sleep(1)
    assert killed.is_set(), first.report()
    # Either the rollout went on once capacity allowed, or it rolled back: one version serves.
    routes = stack.routing("clf")
    assert routes["canary"] is None and routes["primary"] in ("v1", "v2"), (routes, first.report())
    assert load.failed <= CLIENTS, (load.counts, load.errors[:8])

    with Load(stack.endpoint("clf"), clients=CLIENTS) as load:
        second = stack.up()
    assert "Ray worker nodes not running: gpu-0" in second.log, second.report()
    assert stack.routing("clf")["primary"] == "v2" and stack.routing("clf")["canary"] is None
    assert load.failed == 0, (load.counts, load.errors[:8])
    assert "gpu-0" in stack.ray_nodes()
    assert stack.preview().changes == {}
