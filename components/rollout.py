"""ModelRollout: the dynamic resource that owns a service's Serve applications.

A thin adapter: `runtime.controller` does the work, `runtime.plan` the math.

check   a version string names one immutable build: changing its artifact, code,
        runtime env or actor options without a new version string is refused
diff    nothing when spec and version are unchanged; lightweight fields update in
        place; a new version rolls out. The planned wave table is printed, so
        `pulumi preview` shows it before anything moves
create  deploys the version and the router
update  converges the live service to the spec from whatever the cluster shows
        (a rollout killed half-way resumes or rolls back; see runtime.controller)
read    reports live versions, weights and replicas, so `pulumi refresh` tells the truth
delete  removes the service's apps
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

OUTPUT_KEYS = ("primary_version", "canary_version", "weights", "replicas", "replica_ids", "history")
HEAVY = ("version", "import_path", "artifact", "working_dir", "env_vars", "num_gpus", "num_cpus")


def _controller(props: dict):
    from pathlib import Path

    from runtime.controller import RolloutController
    from runtime.serve_api import ServeClient
    from runtime.spec import ServiceSpec

    spec = ServiceSpec.model_validate(props["spec"])
    client = ServeClient(props["dashboard_url"], Path(props["token_path"]).read_text().strip())
    return RolloutController(spec, client), client


def _outputs(props: dict, live, history: list[dict] | None) -> dict:
    return {**{k: v for k, v in props.items() if k not in OUTPUT_KEYS}, **live.outputs(),
            "history": history or []}


def _failure(exc: Exception) -> Exception:
    # Pulumi prints the message of what a provider raises; keep it to our one line.
    from runtime.errors import GpuserveError

    if isinstance(exc, GpuserveError):
        return Exception(str(exc))
    return exc


def describe_change(olds: dict, news: dict) -> tuple[str, list[str]]:
    """('none' | 'light' | 'heavy', changed field paths) between two specs."""
    old, new = olds.get("spec") or {}, news.get("spec") or {}
    heavy = [f"version.{k}" for k in HEAVY if (old.get("version") or {}).get(k) != (new.get("version") or {}).get(k)]
    light = [f"scaling.{k}" for k in set(old.get("scaling") or {}) | set(new.get("scaling") or {})
             if (old.get("scaling") or {}).get(k) != (new.get("scaling") or {}).get(k)]
    light += [k for k in ("route_prefix", "request_timeout_s", "http_url") if old.get(k) != new.get(k)]
    other = [f"rollout.{k}" for k in set(old.get("rollout") or {}) | set(new.get("rollout") or {})
             if (old.get("rollout") or {}).get(k) != (new.get("rollout") or {}).get(k)]
    if heavy:
        return "heavy", heavy + light + other
    if light:
        return "light", light + other
    if other:
        return "strategy", other
    return "none", []


def preview_lines(olds: dict, news: dict) -> str:
    """What `pulumi preview` prints for a change: the wave table for a rollout."""
    from runtime.plan import plan_rollout
    from runtime.spec import ServiceSpec

    kind, fields = describe_change(olds, news)
    spec = ServiceSpec.model_validate(news["spec"])
    service = spec.service
    if kind == "heavy":
        old_version = olds.get("primary_version") or (olds.get("spec") or {}).get("version", {}).get("version")
        hold = spec.rollout.canary_percent
        plan = plan_rollout(
            spec.scaling.replicas, spec.rollout.max_surge_percent,
            traffic_steps=spec.rollout.traffic_steps,
            hold_at=None if hold in (None, 100) else hold,
            old_gpus_per_replica=(olds.get("spec") or {}).get("version", {}).get("num_gpus", spec.version.num_gpus),
            new_gpus_per_replica=spec.version.num_gpus,
        )
        head = (f"[{service}] planned rollout {old_version} -> {spec.version.version}: "
                f"{plan.waves} waves, surge {plan.surge} of N={plan.n}, peak {plan.peak_gpus:g} GPUs, "
                f"bake {spec.rollout.bake_seconds:g}s per wave; changed: {', '.join(fields)}")
        return head + "\n" + plan.table()
    if kind == "light":
        return f"[{service}] lightweight change applied in place, no replica restarts: {', '.join(fields)}"
    return f"[{service}] rollout strategy change only ({', '.join(fields)}): takes effect on the next rollout"


class ModelRolloutProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        old = ((olds or {}).get("spec") or {}).get("version") or {}
        new = (news.get("spec") or {}).get("version") or {}
        failures = []
        if old and old.get("version") == new.get("version"):
            drift = [k for k in HEAVY if k != "version" and old.get(k) != new.get(k)]
            if drift:
                failures.append(CheckFailure(
                    "spec",
                    f"version {new.get('version')} of {news['spec'].get('service')} is immutable, but "
                    f"{', '.join(drift)} changed; give this build a new version string so it rolls out",
                ))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        kind, _ = describe_change(olds, news)
        moved = [k for k in ("dashboard_url", "token_path") if olds.get(k) != news.get(k)]
        if kind == "none" and not moved:
            return DiffResult(changes=False)
        if kind != "none":
            print(preview_lines(olds, news), flush=True)
        # A new cluster (dashboard moved) means a fresh deploy there: replace.
        return DiffResult(changes=True, replaces=["dashboard_url"] if moved else [],
                          delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        controller, client = _controller(props)
        try:
            live = controller.converge()
        except Exception as exc:
            raise _failure(exc) from exc
        finally:
            client.close()
        return CreateResult(id_=controller.spec.service, outs=_outputs(props, live, controller.history.entries))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        controller, client = _controller(news)
        try:
            live = controller.converge()
        except Exception as exc:
            raise _failure(exc) from exc
        finally:
            client.close()
        return UpdateResult(outs=_outputs(news, live, controller.history.entries))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        controller, client = _controller(props)
        try:
            live = controller.live()
        finally:
            client.close()
        if not live.declared:
            return ReadResult(None, {})  # gone from the cluster: refresh drops it
        return ReadResult(id_, _outputs(props, live, props.get("history")))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        controller, client = _controller(props)
        try:
            controller.remove()
        finally:
            client.close()


class ModelRollout(Resource, module="gpuserve", name="ModelRollout"):
    primary_version: pulumi.Output[str]
    canary_version: pulumi.Output[str | None]
    weights: pulumi.Output[dict]
    replicas: pulumi.Output[dict]
    history: pulumi.Output[list]

    def __init__(self, name: str, spec: pulumi.Input[dict], dashboard_url: pulumi.Input[str],
                 token_path: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        props = {"spec": spec, "dashboard_url": dashboard_url, "token_path": token_path,
                 **{k: None for k in OUTPUT_KEYS}}
        super().__init__(ModelRolloutProvider(), name, props, opts)
