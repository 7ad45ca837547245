"""A dashboard that stops answering for a while (its process frozen with SIGSTOP, as a
machine under heavy load or a long GC pause would) is waited out: `pulumi up` retries with
backoff, never replaces the Ray head, and traffic keeps flowing meanwhile."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from tests.integration.harness import Load, LocalStack

pytestmark = pytest.mark.faults

SERVICE = {"name": "clf", "pool": "gpu", "version": "v1", "num_replicas": 1,
           "ray_actor_options": {"num_gpus": 1}, "graceful_shutdown_timeout_s": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("slow-dashboard"), gpus=2, services=[SERVICE],
                       rollout={"bake_seconds": 0})
    with stack.running():
        yield stack


def dashboard_process(stack: LocalStack) -> psutil.Process:
    head = psutil.Process(stack.ray_head()["pid"])
    for process in head.children(recursive=True):
        cmd = " ".join(process.cmdline())
        if "dashboard/dashboard.py" in cmd and f"--port={stack.ports['dashboard_port']}" in cmd:
            return process
    raise AssertionError("no dashboard process under the Ray head")


def test_a_frozen_dashboard_is_waited_out_and_never_replaces_the_head(stack):
    head_pid = stack.ray_head()["pid"]
    dashboard = dashboard_process(stack)
    # A lightweight change: `up` must reach the dashboard to apply it.
    stack.services = [{**SERVICE, "max_queued_requests": 17}]
    stack.write_config()
    frozen_s = 20
    with Load(stack.endpoint("clf"), clients=2) as load:
        os.kill(dashboard.pid, signal.SIGSTOP)
        thaw = threading.Timer(frozen_s, lambda: os.kill(dashboard.pid, signal.SIGCONT))
        thaw.start()
        try:
            started = time.monotonic()
            result = stack.up(check=False)
        finally:
            thaw.cancel()
            os.kill(dashboard.pid, signal.SIGCONT)
    assert result.ok, result.report()
    assert time.monotonic() - started >= frozen_s - 1  # it waited the freeze out, then applied the change
    assert "applying lightweight change" in result.log, result.report()
    assert "will be replaced" not in result.log and result.changes.get("replace", 0) == 0, result.changes
    assert stack.ray_head()["pid"] == head_pid
    assert load.failed == 0, (load.counts, load.errors[:5])  # the data plane never needed the dashboard
