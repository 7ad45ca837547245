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

import contextlib
from typing import Any, Iterator

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

from components.providers.watchdog import arm

OUTPUT_KEYS = ("primary_version", "canary_version", "weights", "replicas", "replica_ids", "history", "operator",
               "rollouts")
KEPT_ROLLOUTS = 50  # past rollouts kept in state (the live record keeps runtime.record.KEEP)
MAX_IDENTITIES = 200  # labels remembered per service


def identity(version: dict) -> dict:
    return {"code": version.get("code_hash"), "artifact": version.get("artifact_hash")}


def known_identities(olds: dict) -> dict[str, dict]:
    """Every label deployed before, with its build: from the recorded inputs, plus the
    last spec's own version (state written before labels were recorded)."""
    known = dict(olds.get("identities") or {})
    last = (olds.get("spec") or {}).get("version") or {}
    if last.get("version") and last.get("code_hash") and last["version"] not in known:
        known[last["version"]] = identity(last)
    return known


def identity_conflict(service: str, label: str, claimed: dict, mine: dict) -> str:
    def short(h):
        return (h or "none")[:12]
    return (f"version {label} of {service} already names code {short(claimed['code'])} + artifact "
            f"{short(claimed['artifact'])}; this deploy has code {short(mine['code'])} + artifact "
            f"{short(mine['artifact'])}. Bump the version (a new label), because a request pinned with "
            f"x-serve-version: {label} must always reach the same code.")


@contextlib.contextmanager
def _session(props: dict) -> Iterator[tuple[Any, Any]]:
    """(controller, dashboard client) for one provider call. On a Kubernetes target the
    dashboard is reached through an API port-forward for the length of the call
    (runtime/k8s_forward.py), never across the network in plain HTTP."""
    from pathlib import Path

    from runtime.controller import RolloutController
    from runtime.k8s_forward import dashboard
    from runtime.serve_api import ServeClient
    from runtime.spec import ServiceSpec

    spec = ServiceSpec.model_validate({**props["spec"], "http_url": _http_url(props),
                                       "splitter_admins": props.get("splitter_admins") or []})
    # k8s: the token arrives as a (secret) input; local: it sits in the head's state dir.
    token = props.get("token") or Path(props["token_path"]).read_text().strip()
    # Locks are keyed by the declared address, not the forward's port of this call.
    with dashboard(props["dashboard_url"], props.get("kubeconfig")) as url, \
            ServeClient(url, token, cluster_key=props["dashboard_url"]) as client:
        yield RolloutController(spec, client), client


def _http_url(props: dict) -> str:
    # Older state kept the URL inside the spec.
    return props.get("http_url") or (props.get("spec") or {}).get("http_url")


def _converge(props: dict) -> dict:
    """Create and update are the same act: bring the live service to the spec."""
    from runtime.serve_api import service_lock

    try:
        with _session(props) as (controller, client), \
                service_lock(client.cluster_key, props["spec"]["service"], holder="pulumi up"):
            try:
                live = controller.converge()
            finally:
                controller.close()  # the webhooks' last events go out, within seconds
                _keep_record(props, controller)
    except Exception as exc:
        raise _failure(exc) from exc
    return _outputs(props, live, controller.history.entries)


def _keep_record(props: dict, controller) -> None:
    """The run's full record beside the stack's state, whatever the outcome (a failed
    `up` records no outputs): what `gpuserve timeline` draws."""
    from pathlib import Path

    from runtime.record import write_run

    run = controller.run_record()
    if run is None or not props.get("record_dir"):
        return
    try:
        write_run(Path(props["record_dir"]) / props["spec"]["service"], run)
    except OSError as exc:
        print(f"[{props['spec']['service']}] could not keep the rollout's record: {exc}", flush=True)


def _outputs(props: dict, live, history: list[dict] | None) -> dict:
    from runtime.record import merged

    return {**{k: v for k, v in props.items() if k not in OUTPUT_KEYS}, **live.outputs(),
            "history": history or [], "rollouts": merged(props.get("rollouts") or [], live.rollouts,
                                                          keep=KEPT_ROLLOUTS)}


def _failure(exc: Exception) -> Exception:
    # Pulumi prints the message of what a provider raises; keep it to our one line.
    from runtime.errors import GpuserveError

    if isinstance(exc, GpuserveError):
        return Exception(str(exc))
    return exc


def describe_change(olds: dict, news: dict) -> tuple[str, list[str]]:
    """('none' | 'light' | 'heavy' | 'strategy', changed field paths) between two states,
    as the spec's fields declare them (runtime/spec.py)."""
    from runtime.spec import LIGHT, classify_change

    kind, fields = classify_change(olds.get("spec") or {}, news.get("spec") or {})
    # Kept beside the spec in state, not in it: where the data plane is.
    moved = [k for k, before, after in (("http_url", _http_url(olds), _http_url(news)),
                                        ("splitter_admins", olds.get("splitter_admins"), news.get("splitter_admins")))
             if before != after]
    if moved:
        fields = [*fields, *moved]
        kind = LIGHT if kind in ("none", "strategy") else kind
    return kind, fields


def preview_lines(olds: dict, news: dict) -> str:
    """What `pulumi preview` prints for a change: the moves `up` will make, decided by the
    same function the controller runs (runtime/decisions.py) from the live state recorded
    in `olds`, each with its wave or rollback table."""
    from runtime.decisions import Intent, decide
    from runtime.spec import ServiceSpec

    kind, fields = describe_change(olds, news)
    spec = ServiceSpec.model_validate({**news["spec"], "http_url": _http_url(news) or ""})
    service = spec.service
    moves = decide(recorded_live(olds), spec)
    if [m.intent for m in moves] == [Intent.IN_PLACE]:
        if kind == "light":
            return f"[{service}] lightweight change applied in place, no replica restarts: {', '.join(fields)}"
        if kind == "strategy":
            return f"[{service}] rollout strategy change only ({', '.join(fields)}): takes effect on the next rollout"
    bake = f"; bake {spec.rollout.bake_seconds:g}s per wave" if any(m.intent is Intent.ROLLOUT for m in moves) else ""
    head = f"[{service}] planned: {len(moves)} move{'s' if len(moves) != 1 else ''}{bake}; changed: {', '.join(fields) or 'nothing (live drift)'}"
    return "\n".join([head] + [m.describe(service) for m in moves])


def recorded_live(props: dict):
    """The live service as the last `up` or `refresh` recorded it in state."""
    from runtime.live import LiveService
    from runtime.record import OperatorCommand

    spec = props.get("spec") or {}
    ready = {v: int(r) for v, r in (props.get("replicas") or {}).items()}
    primary = props.get("primary_version")
    if primary is None and not ready and (spec.get("version") or {}).get("version"):
        # State from before these outputs existed: the declared version serves at N.
        primary = spec["version"]["version"]
        scaling = spec.get("scaling") or {}
        ready = {primary: int(scaling.get("num_replicas") or scaling.get("max_replicas") or 1)}
    canary = props.get("canary_version")
    return LiveService(
        primary=primary, canary=canary,
        canary_traffic=float((props.get("weights") or {}).get(canary, 0.0)) if canary else 0.0,
        declared=dict(ready), ready=ready, replica_ids={}, statuses={}, started_at=None,
        latency_baseline_ms=None, router_config=None, operator=OperatorCommand.from_json(props.get("operator")),
    )


def _known(value: Any) -> bool:
    """False for Pulumi's placeholder of a value not known during preview."""
    return value is None or isinstance(value, dict)


def _live_state(props: dict):
    """The cluster's Serve state now, or None where it does not answer (an unreachable
    cluster is reported by the node pool's own read)."""
    try:
        with _session(props) as (_, client):
            return client.state()
    except Exception:  # noqa: BLE001
        return None


def operator_note(live, spec) -> str | None:
    """PURE. What an operator's command did that the stack config does not say yet: the
    config is the thing to change (runtime/record.py)."""
    command = live.operator
    want, hold = spec.version.version, spec.rollout.canary_percent
    if command is None or command.version != want:
        return None
    if command.command == "promote" and live.primary == want and hold not in (None, 100):
        return (f"{want} was {command.describe()}, but the stack config still holds it at canary_percent "
                f"{hold:g}: set the rollout's canary_percent to 100 (or remove it) to match")
    return None


def drift(state, spec) -> str | None:
    """PURE. A canary left by a killed run, a held canary whose Serve status failed, or a
    primary changed behind our back all need a `pulumi up` though the config stands still."""
    from runtime import apps
    from runtime.decisions import _operator_abort
    from runtime.live import observe
    from runtime.gates import serve_status_verdict

    live = observe(state, spec.service)
    want = spec.version.version
    hold = spec.rollout.canary_percent
    aborted = _operator_abort(live, spec, live.primary)
    if aborted is not None:
        return (f"{want} was {aborted.describe()}, and the stack config still declares it: set the service's "
                f"version back to {live.primary} to keep the abort, or run `gpuserve retry {spec.service}`")
    if not live.declared:
        return "the service has no apps on the cluster"
    if live.primary != want and live.canary != want:
        return f"live primary is {live.primary}, not {want}"
    if live.canary and live.canary != want:
        return f"stale canary {live.canary} is live"
    orphans = sorted(v for v in live.declared if v not in (live.primary, live.canary))
    if orphans:
        return f"versions that receive no traffic hold replicas: {', '.join(orphans)}"
    if live.canary and hold in (None, 100):
        return f"canary {live.canary} was left at {live.canary_traffic:.4g}% by an interrupted run"
    if live.canary:
        app = state.apps.get(apps.version_app_name(spec.service, live.canary))
        if app is None or not serve_status_verdict(app).passed:
            return f"held canary {live.canary} reports a failed Serve status"
    return None


class ModelRolloutProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        arm()
        if not _known(news.get("spec")) or not _known((olds or {}).get("spec")):
            return CheckResult(news, [])  # preview with unknowns: checked again at update
        old = ((olds or {}).get("spec") or {}).get("version") or {}
        new = (news.get("spec") or {}).get("version") or {}
        service = news["spec"].get("service")
        known = known_identities(olds or {})
        failures = []
        claimed = known.get(new.get("version"))
        mine = identity(new)
        if claimed and mine["code"] and claimed != mine:
            failures.append(CheckFailure("version", identity_conflict(service, new.get("version"), claimed, mine)))
        elif old and old.get("version") == new.get("version"):
            from runtime.spec import HEAVY, VersionSpec, fields_of_kind

            # Fields a 0.1 state lacks (None) are adopted, not changed.
            drift = [k for k in fields_of_kind(VersionSpec, HEAVY)
                     if k != "version" and k in old and old.get(k) != new.get(k)]
            if drift:
                failures.append(CheckFailure(
                    "version",
                    f"version {new.get('version')} of {service} is immutable, but "
                    f"{', '.join(drift)} changed; give this build a new version string so it rolls out",
                ))
        if mine["code"]:
            known = {**known, new["version"]: mine}
        # Recorded in the checked inputs, so every label ever deployed keeps its build.
        return CheckResult({**news, "identities": dict(list(known.items())[-MAX_IDENTITIES:])}, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        arm()
        if not _known(news.get("spec")) or not isinstance(_http_url(news), str):
            # Preview while the serving runtime is being replaced: its proxy URL is not
            # known yet, so neither is the plan.
            print(f"[{_id}] serving runtime changes: the service will be deployed afresh", flush=True)
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        from runtime.live import observe
        from runtime.spec import ServiceSpec

        kind, _ = describe_change(olds, news)
        moved = [k for k in ("dashboard_url", "token_path", "cluster_id")
                 if olds.get(k) is not None and olds.get(k) != news.get(k)]
        # Live state is the truth: read once, for drift and for what an operator did.
        state = _live_state({**olds, **news}) if not moved else None
        spec = ServiceSpec.model_validate({**news["spec"], "http_url": _http_url(news) or ""})
        live = observe(state, spec.service) if state is not None else None
        drift_now = drift(state, spec) if kind == "none" and state is not None else None
        note = operator_note(live, spec) if live is not None else None
        if note:
            print(f"[{spec.service}] {note}", flush=True)
        access = olds.get("kubeconfig") != news.get("kubeconfig")
        if kind == "none" and not moved and not drift_now:
            if access:
                # Only how the provider reaches the cluster changed: record it, move nothing.
                print(f"[{news['spec']['service']}] cluster credentials (kubeconfig) changed: "
                      "recorded, nothing moves", flush=True)
            return DiffResult(changes=access)
        if kind != "none":
            # An operator's command since the last `up` is known only live (a failed `up`
            # records no outputs).
            recorded = {**olds, "operator": live.outputs()["operator"]} if live is not None else olds
            print(preview_lines(recorded, news), flush=True)
        if drift_now:
            print(f"[{spec.service}] {drift_now}: `pulumi up` will converge it", flush=True)
        if moved:
            print(f"[{news['spec']['service']}] serving cluster changed ({', '.join(moved)}): "
                  "the service is deployed afresh there", flush=True)
        # A new cluster is converged like any other: the controller deploys what is missing.
        return DiffResult(changes=True, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        arm()
        return CreateResult(id_=props["spec"]["service"], outs=_converge(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        arm()
        return UpdateResult(outs=_converge(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm()
        import httpx

        from runtime.k8s_forward import ForwardError

        try:
            with _session(props) as (controller, _):
                live = controller.live()
        except (httpx.ConnectError, FileNotFoundError, ForwardError) as exc:
            # Keep what state says rather than forget a service over a network blip;
            # the node pool's own read reports whether the cluster is alive.
            print(f"[{props['spec']['service']}] cluster unreachable, state kept as is: {exc}", flush=True)
            return ReadResult(id_, props)
        if not live.declared:
            return ReadResult(None, {})  # gone from the cluster: refresh drops it
        return ReadResult(id_, _outputs(props, live, props.get("history")))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm()
        import httpx

        from runtime.k8s_forward import ForwardError

        try:
            with _session(props) as (controller, _):
                controller.remove()
        except (httpx.ConnectError, FileNotFoundError, ForwardError) as exc:
            # The cluster (or its token) is gone, and the apps with it.
            print(f"[{props['spec']['service']}] cluster at {props['dashboard_url']} unreachable; "
                  f"nothing to remove ({exc})", flush=True)


class ModelRollout(Resource, module="gpuserve", name="ModelRollout"):
    primary_version: pulumi.Output[str]
    canary_version: pulumi.Output[str | None]
    weights: pulumi.Output[dict]
    replicas: pulumi.Output[dict]
    history: pulumi.Output[list]

    def __init__(self, name: str, spec: dict, http_url: pulumi.Input[str], dashboard_url: pulumi.Input[str],
                 token_path: pulumi.Input[str] | None = None, cluster_id: pulumi.Input[str] | None = None,
                 token: pulumi.Input[str] | None = None, splitter_admins: pulumi.Input[list] | None = None,
                 kubeconfig: pulumi.Input[str] | None = None, opts: pulumi.ResourceOptions | None = None):
        """Exactly one of token_path (local: a file on this machine) or token (a secret).
        `kubeconfig` (a secret; None for the ambient one) reaches a `k8s-portforward://`
        dashboard address."""
        from runtime.constants import PROJECT_DIR

        props = {"spec": spec, "http_url": http_url, "splitter_admins": splitter_admins,
                 # Where each rollout's full record is kept (runtime/record.write_run).
                 "record_dir": str(PROJECT_DIR / ".state" / pulumi.get_stack() / "rollouts"),
                 "dashboard_url": dashboard_url, "token_path": token_path,
                 "token": token, "cluster_id": cluster_id, **{k: None for k in OUTPUT_KEYS}}
        if kubeconfig is not None:
            props["kubeconfig"] = kubeconfig
        secrets = [k for k, v in (("token", token), ("kubeconfig", kubeconfig)) if v is not None]
        if secrets:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=secrets))
        super().__init__(ModelRolloutProvider(), name, props, opts)
