"""What `gpuserve status` shows for a service, as plain data: PURE, from the live
service (runtime/live.py), the GPUs its replicas hold, and the rollout's recorded steps.

The live cluster is the truth for what serves now (versions, weights, replicas, phase);
the steps of the last run (the ModelRollout's `history` output) give the gate verdicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from runtime.live import LiveService

GATE_STEPS = ("gate",)
LAST_VERDICTS = 3


@dataclass(frozen=True)
class VersionStatus:
    version: str
    role: str  # "primary" | "canary" | "idle"
    weight: float
    declared: int
    ready: int
    status: str


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    pool: str | None
    phase: str
    versions: list[VersionStatus]
    gpus_in_use: float | None
    pool_gpus: float | None
    verdicts: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def phase(live: LiveService, hold_percent: float | None = None) -> str:
    """Where the service's rollout stands, from the router's record of the run."""
    if not live.declared:
        return "absent"
    if live.canary is None:
        return "steady"
    intent = live.intent or {}
    if intent.get("direction") == "rollback":
        return f"rolling back {live.canary} -> {live.primary}"
    wave = intent.get("wave")
    if hold_percent not in (None, 100) and live.canary_traffic == hold_percent:
        return f"held at {live.canary_traffic:.4g}% on {live.canary}"
    where = f"wave {wave}" if wave else "deploying the canary"
    return f"rolling out {live.primary} -> {live.canary}: {where}, {live.canary_traffic:.4g}% on the canary"


def versions(live: LiveService) -> list[VersionStatus]:
    def role(v: str) -> str:
        return "primary" if v == live.primary else "canary" if v == live.canary else "idle"
    weight = {live.primary: 100.0 - live.canary_traffic} if live.primary else {}
    if live.canary:
        weight[live.canary] = live.canary_traffic
    order = sorted(live.declared, key=lambda v: (role(v) != "primary", role(v) != "canary", v))
    return [VersionStatus(v, role(v), round(weight.get(v, 0.0), 4), live.declared.get(v, 0), live.ready.get(v, 0),
                          live.statuses.get(v, "")) for v in order]


def verdicts(history: list[dict] | None, last: int = LAST_VERDICTS) -> list[dict]:
    """The last gate verdicts of the last run, newest last, with their figures."""
    gates = [e for e in history or [] if e.get("step") in GATE_STEPS]
    return [{"at": e.get("at"), "wave": e.get("wave"), "message": e.get("message"), "figures": e.get("gate")}
            for e in gates[-last:]]


def _same_config(spec: dict, intent: dict | None) -> bool:
    if not intent or not intent.get("spec"):
        return True  # nothing under way, or a record from before digests: the state's spec stands
    from runtime.spec import ServiceSpec

    try:
        return ServiceSpec.model_validate({**spec, "http_url": spec.get("http_url") or "http://x"}).digest() == \
            intent["spec"]
    except ValueError:
        return False


def status(service: str, live: LiveService, spec: dict | None, history: list[dict] | None,
           gpus_in_use: float | None) -> ServiceStatus:
    spec = spec or {}
    capacity = spec.get("capacity") or {}
    # The state's spec is the last finished `up`'s: while another runs, its hold is not
    # this run's. Trusted only when the run under way is of that very config.
    hold = (spec.get("rollout") or {}).get("canary_percent") if _same_config(spec, live.intent) else None
    return ServiceStatus(service=service, pool=spec.get("pool"), phase=phase(live, hold), versions=versions(live),
                         gpus_in_use=gpus_in_use, pool_gpus=capacity.get("pool_gpus"),
                         verdicts=verdicts(history))
