"""A local node pool is a set of real Ray worker nodes: the head runs no GPU work, growing
adds nodes in place, shrinking drains them (or is refused when the work cannot fit), and
the head is never touched by any of it."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.harness import LocalStack, Load

pytestmark = pytest.mark.integration

SERVICE = {"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 2,
           "ray_actor_options": {"num_gpus": 1}, "graceful_shutdown_timeout_s": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("pools"), gpus=2, pool={"gpus_per_node": 1},
                       services=[dict(SERVICE)], rollout={"bake_seconds": 0})
    with stack.running():
        yield stack


def workers(stack: LocalStack) -> dict[str, dict]:
    return {name: node for name, node in stack.ray_nodes().items() if not node["is_head_node"]}


def replica_nodes(stack: LocalStack) -> list[str]:
    """The node name of every live GPU replica of the service."""
    result = httpx.get(f"{stack.dashboard_url}/api/v0/actors?limit=1000&detail=true",
                       headers={"Authorization": f"Bearer {stack.token()}"}, timeout=10).json()
    names = {n["node_id"]: name for name, n in stack.ray_nodes().items()}
    return sorted(names.get(a["node_id"], "?") for a in result["data"]["result"]["result"]
                  if a["state"] == "ALIVE" and (a.get("required_resources") or {}).get("GPU"))


def declare(stack: LocalStack, gpus: int, replicas: int) -> None:
    stack.gpus = gpus
    stack.services = [{**SERVICE, "num_replicas": replicas}]
    stack.write_config()


def test_the_pool_is_worker_nodes_and_the_head_holds_no_gpu(stack):
    head = next(n for n in stack.ray_nodes().values() if n["is_head_node"])
    assert "GPU" not in head["resources_total"]
    nodes = workers(stack)
    assert sorted(nodes) == ["gpu-0", "gpu-1"]
    assert all(n["resources_total"]["GPU"] == 1 and n["resources_total"]["pool:gpu"] == 1 for n in nodes.values())
    assert replica_nodes(stack) == ["gpu-0", "gpu-1"]


def test_growing_the_pool_adds_a_node_in_place_and_leaves_the_head_alone(stack):
    head = stack.ray_head()
    declare(stack, gpus=3, replicas=2)
    preview = stack.preview()
    assert ("update", "pulumi-python:dynamic/gpuserve:LocalRayWorkers") in preview.steps
    # Nothing else is replaced, created or deleted; the head is not touched at all.
    assert set(preview.changes) == {"update"}, preview.steps
    assert not [t for _, t in preview.steps if t.endswith("LocalRayHead")], preview.steps
    with Load(stack.endpoint("llm")) as load:
        stack.up()
    assert sorted(workers(stack)) == ["gpu-0", "gpu-1", "gpu-2"]
    assert (stack.ray_head()["pid"], stack.ray_head()["create_time"]) == (head["pid"], head["create_time"])
    assert load.sent > 0 and load.failed == 0, load.errors


def test_a_shrink_that_would_strand_replicas_is_refused_and_nothing_moves(stack):
    declare(stack, gpus=3, replicas=3)
    stack.up()
    declare(stack, gpus=2, replicas=2)  # the pool shrinks before the service does: refused
    result = stack.up(check=False)
    assert not result.ok
    assert "cannot shrink pool 'gpu' to 2 nodes: replicas on gpu-2 hold 1 GPUs" in result.log, result.report()
    assert "lower the services' num_replicas" in result.log
    assert sorted(workers(stack)) == ["gpu-0", "gpu-1", "gpu-2"]
    assert httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}, timeout=30).status_code == 200


def test_a_shrink_drains_the_leaving_node_while_traffic_flows(stack):
    declare(stack, gpus=3, replicas=2)
    stack.up()
    head = stack.ray_head()
    declare(stack, gpus=2, replicas=2)
    with Load(stack.endpoint("llm")) as load:
        result = stack.up()
    assert "draining Ray worker node 'gpu-2'" in result.log
    assert sorted(workers(stack)) == ["gpu-0", "gpu-1"]
    assert replica_nodes(stack) == ["gpu-0", "gpu-1"]
    assert stack.ray_head()["pid"] == head["pid"]
    assert load.sent > 0 and load.failed == 0, load.errors
    assert stack.preview().changes == {}


def test_every_listener_of_the_cluster_is_on_loopback(stack):
    """Ray would put the node address, and with it the GCS, raylets, agents, the client
    server and every worker's gRPC server, on the machine's outward address or on every
    interface; runtime/ray_start.py keeps them on 127.0.0.1. One exception, hard-coded in
    Ray Serve 2.60 (replica.py binds "[::]:0"): each replica's inter-deployment gRPC
    server, which Ray guards with the cluster token (README, "What listens where")."""
    import psutil

    from runtime.local_cluster import session_pids

    sessions = [int(stack.ray_head()["sid"])] + [int(n["sid"]) for n in
                                                  stack.resource_outputs("LocalRayWorkers")["nodes"]]
    pids = {pid for sid in sessions for pid in session_pids(sid)}
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening
    exposed = [(psutil.Process(c.pid).name(), c.laddr) for c in listening
               if c.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    replicas_grpc = [(name, addr) for name, addr in exposed if name.startswith("ray::ServeReplica") and addr.ip == "::"]
    assert [e for e in exposed if e not in replicas_grpc] == []
    assert len(replicas_grpc) <= len([c for c in listening if psutil.Process(c.pid).name().startswith("ray::ServeRep")])
