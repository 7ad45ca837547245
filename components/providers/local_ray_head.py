"""LocalRayHead: a dynamic resource that owns one Ray head process tree on 127.0.0.1.

create  starts `ray start --head --block` in its own session; records pid and sid
read    reports whether the head is alive, by its process identity (runtime/local_cluster.py)
diff    no change while alive and the spec is the same; only a head that is really gone is
        replaced, never one whose dashboard is merely slow
delete  stops exactly that session (never the Ray CLI's stop-everything command)
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from components.providers.watchdog import arm

SPEC_KEYS = ("name", "gpus", "num_cpus", "gcs_port", "dashboard_port", "internal_ports_start", "state_dir",
             "metrics_report_interval_ms")


def _spec(props: dict):
    from runtime.local_cluster import LocalClusterSpec

    # Pulumi's wire format carries every number as a float.
    return LocalClusterSpec(**{k: int(props[k]) if isinstance(props[k], float) else props[k]
                               for k in SPEC_KEYS if k in props})


def _handle(props: dict) -> dict:
    keys = ("pid", "sid", "started_at", "dashboard_url", "token_path", "log_path", "create_time")
    handle = {k: props.get(k) for k in keys}
    for k in ("pid", "sid"):
        handle[k] = int(handle[k]) if handle[k] is not None else None
    return handle



class LocalRayHeadProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        arm()
        from runtime import local_cluster

        spec = _spec(props)
        print(f"starting Ray head '{spec.name}' with {spec.gpus} virtual GPUs on 127.0.0.1", flush=True)
        handle = local_cluster.start(spec)
        print(f"Ray head '{spec.name}' up: pid {handle.pid}, dashboard {handle.dashboard_url}", flush=True)
        return CreateResult(id_=f"{spec.name}-{handle.pid}", outs={**props, **handle.as_dict(), "alive": True})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        arm()
        from runtime import local_cluster

        changed = [k for k in SPEC_KEYS if olds.get(k) != news.get(k)]
        handle = _handle(olds)
        if handle["pid"] is not None and not local_cluster.alive(handle):
            # The head died (reboot, OOM, killed by hand): start a fresh one.
            print(f"Ray head '{olds.get('name')}' (pid {olds.get('pid')}) is not running: it will be replaced", flush=True)
            changed.append("alive")
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm()
        from runtime import local_cluster

        handle = _handle(props)
        return ReadResult(id_, {**props, "alive": local_cluster.alive(handle)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm()
        from runtime import local_cluster

        handle = _handle(props)
        stopped = local_cluster.stop(handle)
        # Ray's session files (sockets, logs) go with the cluster; ray-head.log stays.
        import shutil

        shutil.rmtree(local_cluster.ray_temp_dir(int(props["gcs_port"])), ignore_errors=True)
        print(f"Ray head '{props.get('name')}' stopped ({stopped} processes of session {int(props['sid'])})", flush=True)


class LocalRayHead(Resource, module="gpuserve", name="LocalRayHead"):
    dashboard_url: pulumi.Output[str]
    token_path: pulumi.Output[str]
    pid: pulumi.Output[int]
    alive: pulumi.Output[bool]

    def __init__(self, name: str, spec: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        props = {**spec, "dashboard_url": None, "token_path": None, "pid": None, "sid": None,
                 "started_at": None, "log_path": None, "alive": None}
        super().__init__(LocalRayHeadProvider(), name, props, opts)
