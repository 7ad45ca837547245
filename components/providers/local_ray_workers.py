"""LocalRayWorkers: a local node pool's worker nodes (runtime/local_nodes.py), one resource.

create  starts nodes 0..n-1 (each in its own session), and stops them again if one fails
diff    a node count change, or a node that died, is an in-place update; only a new head or a
        new node shape (GPUs, CPUs, ports) replaces the nodes
update  restarts dead nodes, adds slots when the pool grows; when it shrinks, refuses if the
        GPU work on the leaving nodes cannot fit on the rest, else drains and stops them
delete  stops every node
read    marks each node alive or not, by process identity

A node's handle is also written to `<state_dir>/<node>.json` the moment it starts: a
provider killed before Pulumi recorded the outputs leaves no node nobody knows of, since
update and delete adopt what those files name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.providers.watchdog import arm

# Changing any of these changes what a node is: the nodes are replaced.
SHAPE_KEYS = ("pool", "gpus_per_node", "cpus_per_node", "gcs_port", "internal_ports_start", "state_dir",
              "cluster_id", "metrics_report_interval_ms")


def _int(value):
    return int(value) if isinstance(value, float) else value  # Pulumi's wire carries numbers as floats


def _spec(props: dict, slot: int):
    from runtime.local_nodes import WorkerSpec

    return WorkerSpec(pool=props["pool"], slot=slot, gpus=_int(props["gpus_per_node"]),
                      num_cpus=_int(props["cpus_per_node"]), gcs_port=_int(props["gcs_port"]),
                      internal_ports_start=_int(props["internal_ports_start"]), token_path=props["token_path"],
                      state_dir=props["state_dir"],
                      metrics_report_interval_ms=_int(props.get("metrics_report_interval_ms")))


def _record(props: dict, handle: dict) -> None:
    path = Path(props["state_dir"]) / f"{handle['node_name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(handle))


def _forget(props: dict, handle: dict) -> None:
    (Path(props["state_dir"]) / f"{handle['node_name']}.json").unlink(missing_ok=True)


def _known(props: dict) -> dict[int, dict]:
    """Every node this pool may have running, by slot: the recorded outputs, and the
    handle files of nodes started by a provider that did not live to record them."""
    nodes = {int(h["slot"]): dict(h) for h in props.get("nodes") or []}
    state = Path(props["state_dir"])
    for path in sorted(state.glob(f"{props['pool']}-*.json")) if state.is_dir() else []:
        try:
            handle = json.loads(path.read_text())
            nodes.setdefault(int(handle["slot"]), handle)
            if nodes[int(handle["slot"])].get("pid") != handle.get("pid"):
                nodes[int(handle["slot"])] = handle  # the file is written last: it wins
        except (OSError, ValueError, KeyError):
            continue
    return nodes


def _start(props: dict, slots: range | list[int], started: list[dict]) -> list[dict]:
    """Start the nodes of `slots`, appending each handle to `started` as it comes up."""
    from runtime import local_nodes

    for slot in slots:
        spec = _spec(props, slot)
        print(f"starting Ray worker node '{spec.node_name}' with {spec.gpus} virtual GPUs", flush=True)
        handle = local_nodes.start(spec, props["dashboard_url"])
        _record(props, handle)
        started.append(handle)
    return started


class LocalRayWorkersProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        arm()
        from runtime import local_nodes

        started: list[dict] = []
        try:
            _start(props, range(_int(props["nodes_wanted"])), started)
        except Exception:
            for handle in started:  # compensation: no half-made pool
                local_nodes.stop_node(handle)
                _forget(props, handle)
            raise
        return CreateResult(id_=f"{props['pool']}-workers", outs={**props, "nodes": started})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        arm()
        from runtime import local_nodes

        replaces = [k for k in SHAPE_KEYS if olds.get(k) != news.get(k)]
        changed = list(replaces)
        if _int(olds.get("nodes_wanted")) != _int(news.get("nodes_wanted")):
            changed.append("nodes_wanted")
        dead = [h["node_name"] for h in olds.get("nodes") or [] if not local_nodes.node_alive(h)]
        if dead:
            print(f"Ray worker nodes not running: {', '.join(dead)}; they will be restarted", flush=True)
            changed.append("nodes")
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        arm()
        from runtime import local_nodes
        from runtime.errors import LocalClusterError

        known = _known(olds)
        wanted = _int(news["nodes_wanted"])
        leaving = [known[s] for s in sorted(known, reverse=True) if s >= wanted]
        if leaving:
            live_leaving = [h for h in leaving if local_nodes.node_alive(h)]
            used = local_nodes.gpus_in_use(news["dashboard_url"], news["token_path"])
            # Dead nodes among those that stay are restarted before any node drains.
            refusal = local_nodes.shrink_refusal(live_leaving, wanted * _int(news["gpus_per_node"]), used)
            if refusal:
                raise LocalClusterError(f"cannot shrink pool '{news['pool']}' to {wanted} nodes: {refusal}")
        kept_nodes = []
        for slot in range(wanted):
            handle = known.get(slot)
            if handle and local_nodes.node_alive(handle):
                kept_nodes.append(handle)
                continue
            if handle:
                # A node that lost its raylet may leave workers and agents behind, on the
                # very ports its replacement takes: end its session first.
                leftovers = local_nodes.stop_node(handle)
                if leftovers:
                    print(f"stopped {leftovers} leftover processes of Ray worker node '{handle['node_name']}'",
                          flush=True)
            _start(news, [slot], kept_nodes)
        for handle in leaving:
            print(f"draining Ray worker node '{handle['node_name']}'", flush=True)
            local_nodes.drain(handle, _int(news["gcs_port"]), news["token_path"], news["dashboard_url"])
            _forget(news, handle)
            print(f"Ray worker node '{handle['node_name']}' removed", flush=True)
        return UpdateResult(outs={**news, "nodes": kept_nodes})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm()
        from runtime import local_nodes

        nodes = [{**h, "alive": local_nodes.node_alive(h)} for h in props.get("nodes") or []]
        return ReadResult(id_, {**props, "nodes": nodes})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm()
        from runtime import local_nodes

        for handle in _known(props).values():
            stopped = local_nodes.stop_node(handle)
            _forget(props, handle)
            print(f"Ray worker node '{handle['node_name']}' stopped ({stopped} processes)", flush=True)


class LocalRayWorkers(Resource, module="gpuserve", name="LocalRayWorkers"):
    nodes: pulumi.Output[list]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(LocalRayWorkersProvider(), name, {**props, "nodes": None}, opts)
