"""LocalSplitter: a dynamic resource that owns the local data plane, N splitter
instances sharing 127.0.0.1:<public_port> (runtime/splitter.py).

create  starts every instance, each in a session of its own
read    reports which instances are alive
diff    a changed spec or a new splitter build replaces the set, new before old: the
        instances share the port, so the new set serves before the old one drains;
        a dead instance is restarted in place
delete  drains and stops exactly the recorded pids
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.providers.watchdog import arm

SPEC_KEYS = ("listen", "upstream", "serve_api", "token_path", "state_dir", "instances",
             "max_body_bytes", "max_header_bytes", "binary_sha")


def _spec(props: dict):
    from runtime.splitter import SplitterSpec

    ints = ("instances", "max_body_bytes", "max_header_bytes")  # Pulumi's wire carries floats
    return SplitterSpec(**{k: int(props[k]) if k in ints else props[k] for k in SPEC_KEYS if k != "binary_sha"})


def _outs(props: dict, instances) -> dict:
    from runtime.splitter import as_dicts

    return {**props, "instances_live": as_dicts(instances), "admins": [i.admin for i in instances],
            "url": f"http://{props['listen']}"}


class LocalSplitterProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        arm()
        from runtime import splitter

        spec = _spec(props)
        instances = splitter.start(spec)
        print(f"splitter: {len(instances)} instances on {spec.listen} (pids "
              f"{', '.join(str(i.pid) for i in instances)}) in front of {spec.upstream}", flush=True)
        return CreateResult(id_=f"splitter-{spec.listen}", outs=_outs(props, instances))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        arm()
        from runtime.splitter import from_dicts

        changed = [k for k in SPEC_KEYS if olds.get(k) != news.get(k)]
        dead = [i.pid for i in from_dicts(olds.get("instances_live")) if not i.alive()]
        if dead and not changed:
            print(f"splitter instances {dead} are not running: they will be restarted", flush=True)
            return DiffResult(changes=True, replaces=[])
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        arm()
        from runtime import splitter

        spec = _spec(news)
        live = [i for i in splitter.from_dicts(olds.get("instances_live")) if i.alive()]
        for index in range(len(live), spec.instances):
            live.append(splitter.start_instance(spec, index))
            print(f"splitter instance restarted: pid {live[-1].pid}", flush=True)
        return UpdateResult(outs=_outs(news, live))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm()
        from runtime.splitter import as_dicts, from_dicts

        live = [i for i in from_dicts(props.get("instances_live")) if i.alive()]
        if not live:
            return ReadResult(None, {})
        return ReadResult(id_, {**props, "instances_live": as_dicts(live), "admins": [i.admin for i in live]})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm()
        from runtime import splitter

        for instance in splitter.from_dicts(props.get("instances_live")):
            splitter.stop_instance(instance)
        print(f"splitter on {props.get('listen')} stopped", flush=True)


class LocalSplitter(Resource, module="gpuserve", name="LocalSplitter"):
    url: pulumi.Output[str]
    admins: pulumi.Output[list]

    def __init__(self, name: str, spec: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(LocalSplitterProvider(), name, {**spec, "instances_live": None, "admins": None, "url": None},
                         opts)
