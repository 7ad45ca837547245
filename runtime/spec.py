"""What a service should look like, split the way Serve treats changes:

- `VersionSpec`: heavyweight fields. Any change needs new replicas, so it rolls out.
- `ScalingSpec`: lightweight fields. Serve applies them in place with no restart.

These are plain pydantic models so the Pulumi provider can pass them as dicts and the
controller can rebuild them; nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VersionSpec(_Frozen):
    version: str
    import_path: str
    artifact: str
    working_dir: str | None = None
    env_vars: dict[str, str] = {}
    num_gpus: float = 1.0
    num_cpus: float = 0.0


class ScalingSpec(_Frozen):
    num_replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    max_ongoing_requests: int = 8
    max_queued_requests: int = 64
    graceful_shutdown_timeout_s: float = 10.0
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    user_config: dict[str, Any] | None = None

    @property
    def autoscaling(self) -> bool:
        return self.num_replicas is None

    @property
    def replicas(self) -> int:
        """N: the replica count the planner works with (autoscaling: max_replicas)."""
        return self.num_replicas if self.num_replicas is not None else int(self.max_replicas or 1)


class GateSpec(_Frozen):
    enabled: bool = True
    min_success_rate: float = 0.99
    max_latency_ratio: float = 2.0
    latency_floor_ms: float = 50.0
    min_probes: int = 20
    probe_concurrency: int = 4


class RolloutSpec(_Frozen):
    max_surge_percent: int = 25
    traffic_steps: list[int] | None = None
    bake_seconds: float = 30.0
    deadline_minutes: float = 120.0
    step_timeout_seconds: float = 600.0
    canary_percent: int | None = None
    gates: GateSpec = GateSpec()


class ServiceSpec(_Frozen):
    service: str
    pool: str | None = None  # the node pool it runs on (for policies and reports)
    route_prefix: str
    request_timeout_s: float = 30.0
    version: VersionSpec
    scaling: ScalingSpec
    rollout: RolloutSpec = RolloutSpec()
    http_url: str = Field(description="Serve HTTP proxy base URL, for probes")
    # Serve's http_options when this service is the first to start Serve (k8s target);
    # None keeps whatever the running Serve instance has (local target).
    http_options: dict[str, Any] | None = None
    # Capacity facts for the policy pack ({pool_gpus, others_steady_gpus}); unused here.
    capacity: dict[str, float] | None = None
