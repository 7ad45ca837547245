"""The gpuserve policies as pulumi_policy objects. Build-only: constructing a
`PolicyPack` starts a server and blocks, so that happens in `__main__.py` alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import validators as v
from policies.once_per_call import plain_once

PACK_NAME = "gpuserve"
DEFAULT_ALLOWED = ["g5.xlarge", "g5.2xlarge", "g5.12xlarge", "g6.xlarge", "g6.2xlarge", "g6e.xlarge",
                   "p4d.24xlarge", "p5.48xlarge"]


def _report(messages: list[str], report: ReportViolation, urn: str | None = None) -> None:
    for message in messages:
        report(message, urn)


@dataclass(frozen=True)
class Resource:
    """What a resource validator reads: plain props, with unknown values as None."""

    props: dict
    urn: str
    config: dict

    def get_config(self) -> dict:
        return self.config


def _on(resource_type: str, check: Callable[[Resource], list[str]]):
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type == resource_type:
            _report(check(Resource(plain_once(args.props), args.urn, args.get_config())), report)
    return validate


def _rollout_check(check: Callable[[dict, bool, dict], list[str]]):
    def run(resource: Resource) -> list[str]:
        spec = resource.props.get("spec")
        if not isinstance(spec, Mapping):
            return []  # unknown during preview: checked again at update
        return check(spec, v.is_prod(resource.urn, resource.config, resource.props), resource.config)
    return _on(v.ROLLOUT, run)


def _stack(check: Callable[[list[dict], list[dict], dict], list[str]]):
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        # Stack policies see each resource's outputs (a component's registered outputs).
        pools = [plain_once(r.props) for r in args.resources if r.resource_type == v.POOL]
        rollouts = [props for props in (plain_once(r.props) for r in args.resources if r.resource_type == v.ROLLOUT)
                    if isinstance(props.get("spec"), Mapping)]
        _report(check(pools, rollouts, args.get_config()), report)
    return validate


def _schema(**properties) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


PROD_STACKS = {"type": "array", "items": {"type": "string"}, "default": ["prod"]}

POLICIES = [
    ResourceValidationPolicy(
        name="gpu-node-pool-tainted",
        description="GPU node groups carry the nvidia.com/gpu NoSchedule taint.",
        config_schema=_schema(taintKey={"type": "string", "default": v.GPU_TAINT_KEY}),
        validate=_on(v.NODE_GROUP, lambda a: v.gpu_node_pool_tainted(a.props, a.get_config())),
    ),
    ResourceValidationPolicy(
        name="gpu-instance-allowlist",
        description="GPU instance types come from a configured list.",
        config_schema=_schema(allowedInstanceTypes={"type": "array", "items": {"type": "string"},
                                                    "default": DEFAULT_ALLOWED}),
        validate=_on(v.NODE_GROUP, lambda a: v.gpu_instance_allowlist(a.props, a.get_config())),
    ),
    StackValidationPolicy(
        name="gpu-budget",
        description="Total GPUs across pools, including the rollout surge, stay within a budget.",
        config_schema=_schema(maxGpus={"type": "number", "default": 64}),
        validate=_stack(v.gpu_budget),
    ),
    # Judged per rollout rather than per stack: Pulumi skips stack policies in a preview
    # whose resources still have unknown outputs (a new stack), which is exactly when a
    # surge must be refused. The program puts the pool's capacity in the rollout's spec.
    ResourceValidationPolicy(
        name="rollout-surge-fits-capacity",
        description="Every service's rollout peak, (N + ceil(p% N)) x GPUs per replica, fits its node pool.",
        config_schema=_schema(headroomGpus={"type": "number", "default": 0}),
        validate=_rollout_check(lambda spec, _prod, config: v.rollout_surge_fits_capacity(spec, config)),
    ),
    ResourceValidationPolicy(
        name="rollout-surge-bounds",
        description="max_surge_percent lies within configured bounds (stricter in prod).",
        config_schema=_schema(minSurgePercent={"type": "integer", "default": 1},
                              maxSurgePercent={"type": "integer", "default": 100},
                              maxSurgePercentProd={"type": "integer", "default": 50}, prodStacks=PROD_STACKS),
        validate=_rollout_check(v.rollout_surge_bounds),
    ),
    ResourceValidationPolicy(
        name="rollout-has-gates",
        description="Rollouts keep health gates and a deadline; prod forbids a zero bake, disabled gates "
                    "and gates that cannot fail (floors on their thresholds).",
        config_schema=_schema(minBakeSecondsProd={"type": "number", "default": 1},
                              **{key: {"type": "number", "default": default}
                                 for _, key, default, _, _ in v.PROD_GATE_FLOORS},
                              prodStacks=PROD_STACKS),
        validate=_rollout_check(v.rollout_has_gates),
    ),
    ResourceValidationPolicy(
        name="prod-min-replicas",
        description="Prod services run at least two replicas.",
        config_schema=_schema(minReplicas={"type": "integer", "default": 2}, prodStacks=PROD_STACKS),
        validate=_rollout_check(v.prod_min_replicas),
    ),
    ResourceValidationPolicy(
        name="graceful-shutdown-covers-requests",
        description="graceful_shutdown_timeout_s is at least the service's request timeout.",
        config_schema=_schema(marginSeconds={"type": "number", "default": 0}),
        validate=_rollout_check(lambda spec, _prod, config: v.graceful_shutdown_covers_requests(spec, config)),
    ),
    ResourceValidationPolicy(
        name="load-shedding-configured",
        description="max_queued_requests is set, so overload gets 503 instead of an unbounded queue.",
        config_schema=_schema(maxQueuedRequests={"type": "integer", "default": 10000}),
        validate=_rollout_check(lambda spec, _prod, config: v.load_shedding_configured(spec, config)),
    ),
    ResourceValidationPolicy(
        name="lb-internal-unless-declared",
        description="A load balancer is internal unless declared public; a public one terminates TLS (aws) or admits only listed networks.",
        config_schema=_schema(requireTls={"type": "boolean", "default": True}),
        validate=_on(v.K8S_SERVICE, lambda a: v.lb_internal_unless_declared(a.props, a.get_config())),
    ),
    ResourceValidationPolicy(
        name="dashboard-not-public",
        description="The Ray dashboard is never exposed: no LoadBalancer or NodePort Service, head Service or public address.",
        config_schema=_schema(dashboardPort={"type": "integer", "default": v.DASHBOARD_PORT}),
        validate=[_on(v.K8S_SERVICE, lambda a: v.dashboard_not_public_service(a.props, a.get_config())),
                  _on(v.RAY_CLUSTER, lambda a: v.ray_head_not_exposed(a.props)),
                  _on(v.ROLLOUT, lambda a: v.dashboard_not_public_rollout(a.props))],
    ),
    ResourceValidationPolicy(
        name="ha-in-prod",
        description="In prod the RayCluster has GCS fault tolerance on an external Redis.",
        config_schema=_schema(prodStacks=PROD_STACKS),
        validate=_on(v.RAY_CLUSTER, lambda a: v.ha_in_prod(a.props, v.is_prod(a.urn, a.get_config(), a.props))),
    ),
    ResourceValidationPolicy(
        name="secrets-are-secret",
        description="Tokens and passwords reach resources only as Pulumi secrets.",
        config_schema=_schema(sensitiveKeys={"type": "array", "items": {"type": "string"},
                                             "default": list(v.SENSITIVE)}),
        validate=lambda a, report: _report(v.secrets_are_secret(a.resource_type, plain_once(a.props), a.get_config()),
                                           report),
    ),
]

ENFORCEMENT = EnforcementLevel.MANDATORY
