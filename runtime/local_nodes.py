"""A local node pool's worker nodes: real Ray nodes on 127.0.0.1 that join the head.

Each node is `ray start --address=<head> --block` in a session of its own, with the pool's
virtual GPUs and a label resource `pool:<name>`, named `<pool>-<slot>`. Slots are stable:
growing adds the next ones, shrinking drains and removes the highest ones, so a node's
ports (a block per slot above the head's) never move.

- Identity, not latency: a node is alive while its `ray start` process (pid + start time)
  runs in its own session, as for the head (runtime/local_cluster.py).
- Shrinking drains first: GCS marks the node draining (`ray drain-node`, the call Ray's
  autoscaler makes before it terminates a node), Serve starts replacement replicas
  elsewhere, and the node goes once no GPU actor is left on it. A shrink whose GPU work
  cannot fit on the remaining nodes is refused before anything moves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from runtime.constants import LOCAL_NODE_PORTS, LOCAL_NODE_PORTS_START, PROJECT_DIR
from runtime.environment import child_environment
from runtime.errors import LocalClusterError
from runtime.local_cluster import (LocalClusterHandle, alive, last_words, ray_start_command, stop, wait_started,
                                   with_one_more_try)
from runtime.ray_start import LOOPBACK_ENV

PORTS_PER_NODE = LOCAL_NODE_PORTS
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # replicas pass little through the object store


@dataclass(frozen=True)
class WorkerSpec:
    pool: str
    slot: int
    gpus: int
    num_cpus: int
    gcs_port: int
    internal_ports_start: int  # the head's; this node's block is above it
    token_path: str
    state_dir: str
    metrics_report_interval_ms: int | None = None

    @property
    def node_name(self) -> str:
        return f"{self.pool}-{self.slot}"

    @property
    def ports_start(self) -> int:
        return worker_ports_start(self.internal_ports_start, self.slot)


def worker_ports_start(internal_ports_start: int, slot: int) -> int:
    return internal_ports_start + LOCAL_NODE_PORTS_START + PORTS_PER_NODE * slot


def pool_resource(pool: str) -> str:
    return f"pool:{pool}"


def command(spec: WorkerSpec) -> list[str]:
    """The node's `ray start`. Pure."""
    p = spec.ports_start
    return [
        *ray_start_command(), "start", f"--address=127.0.0.1:{spec.gcs_port}", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--node-name={spec.node_name}",
        f"--num-gpus={spec.gpus}",
        f"--num-cpus={spec.num_cpus}",
        f'--resources={{"{pool_resource(spec.pool)}": {spec.gpus}}}',
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--node-manager-port={p}",
        f"--object-manager-port={p + 1}",
        f"--metrics-export-port={p + 2}",
        f"--dashboard-agent-listen-port={p + 3}",
        f"--dashboard-agent-grpc-port={p + 4}",
        f"--runtime-env-agent-port={p + 5}",
        f"--min-worker-port={p + 6}",
        f"--max-worker-port={p + PORTS_PER_NODE - 1}",
    ]


def _environment(spec: WorkerSpec) -> dict[str, str]:
    return child_environment(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=spec.token_path,
        RAY_USAGE_STATS_ENABLED="0",
        **LOOPBACK_ENV,
        **({"RAY_metrics_report_interval_ms": str(spec.metrics_report_interval_ms)}
           if spec.metrics_report_interval_ms else {}),
        PYTHONPATH=str(PROJECT_DIR),
    )


def start(spec: WorkerSpec, dashboard_url: str, ready_timeout_s: float = 90.0, attempts: int = 2) -> dict:
    """Start one worker node and wait until the cluster lists it ALIVE. Returns its handle.
    A node that gave up only because its raylet registered too slowly is started again."""
    return with_one_more_try(lambda: _start_once(spec, dashboard_url, ready_timeout_s),
                             f"Ray worker node '{spec.node_name}'", attempts)


def _start_once(spec: WorkerSpec, dashboard_url: str, ready_timeout_s: float) -> dict:
    state = Path(spec.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / f"ray-{spec.node_name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command(spec), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=_environment(spec), cwd=PROJECT_DIR, start_new_session=True)
    handle = {"slot": spec.slot, "node_name": spec.node_name, "pid": process.pid, "sid": process.pid,
              "create_time": psutil.Process(process.pid).create_time(), "log_path": str(log_path)}

    def joined() -> dict | None:
        node = _nodes(dashboard_url, spec.token_path).get(spec.node_name)
        return {**handle, "node_id": node["node_id"]} if node and node.get("state") == "ALIVE" else None

    return wait_started(
        process, joined, ready_timeout_s, lambda: stop_node(handle),
        died=lambda code: (f"Ray worker node '{spec.node_name}' exited with code {code} while joining "
                           f"127.0.0.1:{spec.gcs_port}: {last_words(log_path)} (see {log_path}; its ports are "
                           f"{spec.ports_start}-{spec.ports_start + PORTS_PER_NODE - 1})"),
        late=f"Ray worker node '{spec.node_name}' did not join the cluster within {ready_timeout_s:.0f}s; "
             f"see {log_path}")


def node_alive(handle: dict) -> bool:
    return alive(_as_cluster_handle(handle))


def stop_node(handle: dict) -> int:
    return stop(_as_cluster_handle(handle))


def _as_cluster_handle(handle: dict) -> LocalClusterHandle:
    return LocalClusterHandle(pid=int(handle["pid"]), sid=int(handle["sid"]), started_at=0.0, dashboard_url="",
                              token_path="", log_path=handle.get("log_path", ""),
                              create_time=handle.get("create_time"))


# -- the cluster's view -------------------------------------------------------------------
def _get(dashboard_url: str, token_path: str, path: str) -> dict:
    token = Path(token_path).read_text().strip()
    response = httpx.get(f"{dashboard_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    response.raise_for_status()
    return response.json()


def _nodes(dashboard_url: str, token_path: str) -> dict[str, dict]:
    """Live nodes by name (the state API; dead nodes of the same name are left out)."""
    try:
        result = _get(dashboard_url, token_path, "/api/v0/nodes?limit=1000&detail=true")["data"]["result"]["result"]
    except (httpx.HTTPError, OSError, KeyError, ValueError):
        return {}
    return {n.get("node_name"): n for n in result if n.get("state") == "ALIVE"}


def gpus_in_use(dashboard_url: str, token_path: str) -> dict[str, float]:
    """GPUs held by live actors (replicas), per node id."""
    result = _get(dashboard_url, token_path,
                  "/api/v0/actors?limit=10000&detail=true&filter_keys=state&filter_predicates=%3D"
                  "&filter_values=ALIVE")["data"]["result"]["result"]
    used: dict[str, float] = {}
    for actor in result:
        gpus = float((actor.get("required_resources") or {}).get("GPU", 0.0))
        if gpus:
            used[actor["node_id"]] = used.get(actor["node_id"], 0.0) + gpus
    return used


def shrink_refusal(removed: list[dict], kept_gpus: float, used: dict[str, float]) -> str | None:
    """Why removing `removed` nodes would strand GPU work, or None when it fits. Pure."""
    leaving = sum(used.get(n.get("node_id", ""), 0.0) for n in removed)
    kept_free = kept_gpus - (sum(used.values()) - leaving)
    if leaving > kept_free:
        names = ", ".join(n["node_name"] for n in removed)
        return (f"replicas on {names} hold {leaving:g} GPUs and the nodes that stay have {kept_free:g} free: "
                f"lower the services' num_replicas (or move them to another pool) first, then shrink the pool")
    return None


def drain(handle: dict, spec_gcs_port: int, token_path: str, dashboard_url: str, timeout_s: float = 120.0) -> None:
    """Mark the node draining, wait until no GPU actor is left on it, then stop it."""
    ray = str(Path(sys.executable).with_name("ray"))
    env = child_environment(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path,
                            RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(PROJECT_DIR), **LOOPBACK_ENV)
    if handle.get("node_id") and node_alive(handle):
        result = subprocess.run(
            [ray, "drain-node", f"--address=127.0.0.1:{spec_gcs_port}", f"--node-id={handle['node_id']}",
             "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=gpuserve: node pool shrinks",
             f"--deadline-remaining-seconds={int(timeout_s)}"],
            capture_output=True, text=True, env=env, cwd=PROJECT_DIR, timeout=60)
        if result.returncode != 0:
            raise LocalClusterError(f"could not drain Ray worker node '{handle['node_name']}': "
                                    f"{(result.stderr or result.stdout).strip()[-500:]}")
        deadline = time.monotonic() + timeout_s
        while gpus_in_use(dashboard_url, token_path).get(handle["node_id"], 0.0) > 0:
            if time.monotonic() > deadline:
                raise LocalClusterError(f"Ray worker node '{handle['node_name']}' still holds GPU replicas "
                                        f"{timeout_s:.0f}s after it was drained; it stays in the pool")
            time.sleep(1.0)
    stop_node(handle)
