"""The local head's liveness is its identity, never its dashboard's speed."""

from __future__ import annotations

import subprocess
import sys

import psutil

from runtime import local_cluster
from runtime.local_cluster import LocalClusterHandle


def handle(process: subprocess.Popen, create_time: float | None) -> LocalClusterHandle:
    # The dashboard URL answers nothing at all: a dashboard that is down or hanging.
    return LocalClusterHandle(pid=process.pid, sid=process.pid, started_at=0.0,
                              dashboard_url="http://127.0.0.1:9", token_path="/nonexistent",
                              log_path="/dev/null", create_time=create_time)


def test_a_head_whose_dashboard_does_not_answer_is_still_alive_and_a_recycled_pid_is_not():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        started = psutil.Process(process.pid).create_time()
        assert local_cluster.alive(handle(process, started))
        assert not local_cluster.alive(handle(process, started - 100))  # the same pid, another process
    finally:
        process.kill()
        process.wait()
    assert not local_cluster.alive(handle(process, started))


def test_a_start_that_dies_or_never_gets_ready_is_compensated_and_says_why():
    import subprocess
    import sys

    import pytest

    from runtime.errors import LocalClusterError
    from runtime.local_cluster import wait_started

    stopped = []
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(LocalClusterError, match="exited with 3"):
        wait_started(dead, lambda: None, 5, lambda: stopped.append("dead"), died=lambda c: f"exited with {c}", late="late")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(LocalClusterError, match="never ready"):
            wait_started(alive, lambda: None, 0.6, lambda: stopped.append("late"), died=str, late="never ready")
        assert wait_started(alive, lambda: "up", 5, lambda: stopped.append("no"), died=str, late="") == "up"
    finally:
        alive.kill()
        alive.wait()
    assert stopped == ["dead", "late"]


def test_a_head_whose_raylet_registered_too_slowly_is_started_once_more(monkeypatch):
    from runtime import local_cluster
    from runtime.errors import LocalClusterError

    tries = []

    def once(spec, timeout):
        tries.append(1)
        if len(tries) == 1:
            raise LocalClusterError("Ray head 'gpu' exited with code 1 while starting: Exception: The current node "
                                    "timed out during startup.")
        return "handle"

    monkeypatch.setattr(local_cluster, "_start_once", once)

    class Spec:
        name = "gpu"

    assert local_cluster.start(Spec()) == "handle" and len(tries) == 2
