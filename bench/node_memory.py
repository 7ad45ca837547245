"""What one local worker node costs in memory: the resident set of every process of its
session (the `ray start` CLI, the raylet, its agents and log monitor), idle, next to the
head's, measured side by side in one run.

    .venv/bin/python -m bench.node_memory

Starts a GPU-less head and one worker node with 1 virtual GPU on free 127.0.0.1 ports,
measures, and stops both (their sessions only).
"""

from __future__ import annotations

import sys
import tempfile
import time

import psutil

from runtime import local_cluster, local_nodes
from tests.integration.harness import free_port_block


def resident_mb(sid: int) -> tuple[float, list[str]]:
    total, names = 0, []
    for pid in local_cluster.session_pids(sid):
        try:
            process = psutil.Process(pid)
            total += process.memory_info().rss
            names.append(process.name())
        except psutil.Error:
            continue
    return total / 2**20, sorted(names)


def main() -> int:
    base = free_port_block(210 + 30)
    with tempfile.TemporaryDirectory(prefix="gpuserve-nodes-") as state:
        spec = local_cluster.LocalClusterSpec(name="bench", gpus=0, num_cpus=1, gcs_port=base, dashboard_port=base + 1,
                                              internal_ports_start=base + 5, state_dir=state)
        head = local_cluster.start(spec)
        node = None
        try:
            node = local_nodes.start(local_nodes.WorkerSpec(
                pool="gpu", slot=0, gpus=1, num_cpus=1, gcs_port=base, internal_ports_start=base + 5,
                token_path=head.token_path, state_dir=state), head.dashboard_url)
            time.sleep(10)  # past start-up: agents settle
            head_mb, _ = resident_mb(head.sid)
            node_mb, names = resident_mb(int(node["sid"]))
        finally:
            if node:
                local_nodes.stop_node(node)
            local_cluster.stop(head)
            import shutil

            shutil.rmtree(local_cluster.ray_temp_dir(base), ignore_errors=True)
    print(f"worker node processes: {', '.join(names)}")
    print("| process tree | resident MiB |\n|---|---|")
    print(f"| head (no GPUs, Serve not started) | {head_mb:.0f} |")
    print(f"| one worker node, idle | {node_mb:.0f} |")
    print(f"| worker / head | {node_mb / head_mb:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
