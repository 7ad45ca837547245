"""A service as the live cluster shows it: read from Serve's state, never remembered.

The only state kept outside the version apps sits in the Router's user_config: which
version is primary, which is canary, the weights, when the rollout started (for the
deadline), the primary's latency before traffic moved, and the run's intent (forward or
rollback, written before each step). It lives in the cluster, so it
survives a crash of `pulumi up`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from runtime import apps, record
from runtime.record import OperatorCommand
from runtime.serve_api import ServeState


@dataclass(frozen=True)
class LiveService:
    """A service as the cluster shows it now."""

    primary: str | None
    canary: str | None
    canary_traffic: float
    declared: dict[str, int]  # version -> declared replicas
    ready: dict[str, int]  # version -> RUNNING replicas
    replica_ids: dict[str, list[str]]
    statuses: dict[str, str]  # version -> app status
    started_at: float | None  # rollout start, from the router
    latency_baseline_ms: float | None  # primary p95 before traffic moved, from the router
    router_config: dict | None
    # What the run that wrote the router was doing, written before each step: direction
    # ("forward" | "rollback"), target, wave, reason, and the config's digest then.
    intent: dict | None = None
    # The operator's last command and the past rollouts (runtime/record.py).
    operator: OperatorCommand | None = None
    rollouts: list[dict] = field(default_factory=list)

    def outputs(self) -> dict:
        weights = {}
        if self.primary:
            weights[self.primary] = 100 - self.canary_traffic
        if self.canary:
            weights[self.canary] = self.canary_traffic
        return {
            "primary_version": self.primary,
            "canary_version": self.canary,
            "weights": weights,
            "replicas": dict(self.ready),
            "replica_ids": {v: sorted(ids) for v, ids in self.replica_ids.items()},
            "operator": self.operator.to_json() if self.operator else None,
        }


def observe(state: ServeState, service: str) -> LiveService:
    router = state.apps.get(service)
    primary, canary, weights = apps.router_weights(router.config if router else None)
    declared, ready, ids, statuses = {}, {}, {}, {}
    for name, app in state.apps.items():
        version = apps.version_of(name)
        if apps.service_of(name) != service or version is None:
            continue
        declared[version] = apps.app_replicas(app.config)
        ready[version] = app.running_replicas
        ids[version] = sorted(app.replica_ids)
        statuses[version] = app.status
    # A canary whose app is gone (deleted by a finished or aborted run) is not live.
    if canary and canary not in declared:
        canary = None
    if primary and primary not in declared:
        primary = None
    started = baseline = intent = None
    if router:
        for deployment in router.config.get("deployments", []):
            user = deployment.get("user_config") or {}
            started = user.get("rollout_started_at", started)
            baseline = user.get("latency_baseline_ms", baseline)
            intent = user.get("intent", intent)
    return LiveService(
        primary=primary,
        canary=canary,
        canary_traffic=float(weights.get(canary, 0.0)) if canary else 0.0,
        declared=declared,
        ready=ready,
        replica_ids=ids,
        statuses=statuses,
        started_at=started,
        latency_baseline_ms=baseline,
        router_config=router.config if router else None,
        intent=intent if canary else None,  # with no canary, nothing is under way
        operator=record.operator_of(router.config if router else None),
        rollouts=record.rollouts_of(router.config if router else None),
    )


@dataclass
class History:
    """Steps of the current run, with timestamps and gate figures: a resource output."""

    entries: list[dict] = field(default_factory=list)

    def add(self, **entry) -> None:
        self.entries.append({"at": round(time.time(), 3), **entry})
