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
