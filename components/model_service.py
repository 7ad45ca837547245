"""ModelService: one model endpoint. Renders the service spec and owns its ModelRollout."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config import ServiceConfig
from components.load_balancer import InferenceLoadBalancer
from components.rollout import ModelRollout
from components.serving_runtime import ServingRuntime


@dataclass(frozen=True)
class ModelServiceArgs:
    service: ServiceConfig
    runtime: ServingRuntime
    load_balancer: InferenceLoadBalancer
    # GPUs of the service's node pool, and those the pool's other services hold at
    # steady state. Carried in the rollout's inputs so `rollout-surge-fits-capacity`
    # can judge at preview time, when stack policies do not run for new resources.
    pool_gpus: float = 0.0
    others_steady_gpus: float = 0.0
    # The most GPUs one node of the pool has, where the pool is made of nodes (a replica
    # runs on one node); None where the pool is one head (local stacks before node pools).
    gpus_per_node: float | None = None
    environment: str | None = None  # gpuserve:environment


def service_spec(service: ServiceConfig, http_options: dict | None = None,
                 capacity: dict | None = None, environment: str | None = None) -> dict:
    """The plain dict the rollout provider receives (runtime.spec.ServiceSpec, less http_url)."""
    scaling = {
        "max_ongoing_requests": service.max_ongoing_requests,
        "max_queued_requests": service.max_queued_requests,
        "graceful_shutdown_timeout_s": service.graceful_shutdown_timeout_s,
        "health_check_period_s": service.health_check_period_s,
        "health_check_timeout_s": service.health_check_timeout_s,
        "user_config": service.user_config,
    }
    if service.autoscaling:
        scaling.update(
            min_replicas=service.autoscaling.min_replicas,
            max_replicas=service.autoscaling.max_replicas,
            target_ongoing_requests=service.autoscaling.target_ongoing_requests,
        )
    else:
        scaling["num_replicas"] = service.num_replicas
    return {
        "service": service.name,
        "pool": service.pool,
        "route_prefix": f"/{service.name}",
        "request_timeout_s": service.request_timeout_s,
        "http_options": http_options,
        "capacity": capacity,
        "max_body_bytes": service.max_body_bytes,
        "retry_budget_percent": service.retry_budget_percent,
        "retry_min_per_second": service.retry_min_per_second,
        "retry_methods": list(service.retry_methods),
        "version": version_spec(service),
        "scaling": scaling,
        "rollout": service.rollout.model_dump(),
        # Only when declared: a key new to older stacks' state would show as a change.
        **({"environment": environment} if environment else {}),
    }


def version_spec(service: ServiceConfig) -> dict:
    """The build a version label names, with the hashes that pin it (runtime/packaging.py):
    computed here, at preview, so a changed build under a known label is refused before
    anything moves."""
    from runtime import packaging

    code = service.code_path()
    artifact = service.artifact_file()
    return {
        "version": service.version,
        "import_path": service.import_path,
        "artifact": service.artifact_ref(),
        "code_dir": str(code) if code else None,
        "code_hash": packaging.digest(code) if code else None,
        "artifact_hash": packaging.artifact_digest(str(artifact) if artifact else service.artifact_ref()),
        "working_dir": service.working_dir,
        "pip": list(service.pip),
        "env_vars": dict(service.runtime_env.env_vars),
        "num_gpus": service.ray_actor_options.num_gpus,
        "num_cpus": service.ray_actor_options.num_cpus,
        "deployment": service.deployment,
        "deployments": {name: options.serve_options() for name, options in service.deployments.items()},
        "args": service.args,
    }


class ModelService(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    serving_version: pulumi.Output[str]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:model_service:ModelService", name, None, opts)
        # The spec is plain data, known at preview, so the policy pack can check it; the
        # proxy URL (known only once the load balancer exists) travels separately.
        rollout = ModelRollout(
            f"{name}-rollout",
            spec=service_spec(args.service, args.runtime.http_options,
                              {"pool_gpus": args.pool_gpus, "others_steady_gpus": args.others_steady_gpus,
                               **({"gpus_per_node": args.gpus_per_node} if args.gpus_per_node else {})},
                              args.environment),
            http_url=args.load_balancer.url,
            splitter_admins=args.load_balancer.splitter_admins,
            dashboard_url=args.runtime.dashboard_url,
            token_path=args.runtime.token_path,
            token=args.runtime.token,
            cluster_id=args.runtime.cluster_id,
            kubeconfig=args.runtime.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.load_balancer]),
        )
        self.rollout = rollout
        self.endpoint = args.load_balancer.endpoint(f"/{args.service.name}")
        self.serving_version = rollout.primary_version
        self.register_outputs({"endpoint": self.endpoint, "serving_version": self.serving_version})
