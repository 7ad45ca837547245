"""The Pulumi program: typed config in, components out. `__main__.py` only calls `run`.

Validation happens first and completely; a ConfigError means nothing was registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from runtime.constants import PROJECT_DIR
from components.config import (
    AwsStack,
    ClusterStack,
    ConfigError,
    KubernetesStack,
    LocalStack,
    config_from_pulumi,
    load_stack_config,
)


def pulumi_config_values() -> dict[str, Any]:
    """Every config value of this stack, as Pulumi hands them to the program."""
    from pulumi.runtime import config as runtime_config

    values = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return values


def run(values: dict[str, Any] | None = None, stack: str | None = None) -> None:
    stack = stack or pulumi.get_stack()
    document = config_from_pulumi(pulumi_config_values() if values is None else values)
    try:
        config = load_stack_config(document, stack)
    except ConfigError as exc:
        # RunError ends the program with our message only: no traceback, no resources.
        raise pulumi.RunError(str(exc)) from None
    if isinstance(config, LocalStack):
        build_local(config, stack)
    elif isinstance(config, KubernetesStack):
        build_kubernetes(config, stack)
    else:
        build_aws(config, stack)


def build_local(config: LocalStack, stack: str) -> None:
    from components.gpu_node_pool import GpuNodePool, LocalPoolArgs
    from components.load_balancer import InferenceLoadBalancer, InferenceLoadBalancerArgs
    from components.serving_runtime import LocalRuntimeArgs, ServingRuntime
    from runtime.local_cluster import metrics_port

    state_dir = PROJECT_DIR / ".state" / stack
    pool_config = config.node_pools[0]
    pool = GpuNodePool(pool_config.name, LocalPoolArgs(pool_config, config.local, state_dir))
    runtime = ServingRuntime(f"{pool_config.name}-serve", LocalRuntimeArgs(pool, config.local.http_port))
    lb = InferenceLoadBalancer(f"{pool_config.name}-lb", InferenceLoadBalancerArgs(
        runtime, local=config.local, state_dir=str(state_dir / "splitter")))
    pulumi.export("dashboard_url", pool.dashboard_url)
    pulumi.export("http_url", lb.url)
    pulumi.export("health_check_url", lb.health_check_url)
    # The node's Prometheus page (Ray's and Serve's metrics), for a scraper to target.
    pulumi.export("metrics_url", f"http://127.0.0.1:{metrics_port(config.local.internal_ports_start)}/metrics")
    _services(config, {pool_config.name: (runtime, lb)})


def build_kubernetes(config: KubernetesStack, stack: str) -> None:
    """Any cluster a kubeconfig reaches: the namespace, KubeRay (when asked), per pool the
    GPU DaemonSets, a RayCluster and the data plane in front of it."""
    import pulumi_kubernetes as k8s

    from components.config import kubeconfig_is_inline
    from components.gpu_node_pool import GpuNodePool, KubernetesPoolArgs

    target = config.kubernetes
    kubeconfig = rollout_kubeconfig = None
    if target.kubeconfig:
        text = target.kubeconfig if kubeconfig_is_inline(target.kubeconfig) else \
            Path(target.kubeconfig).expanduser().read_text()
        kubeconfig = pulumi.Output.secret(text)
        # The rollout provider's port-forward reads the kubeconfig's current context: make
        # it the stack's, so both reach the same cluster.
        rollout_kubeconfig = pulumi.Output.secret(with_context(text, target.context))
    k8s_provider = k8s.Provider("k8s", kubeconfig=kubeconfig, context=target.context, namespace=target.namespace)
    pools = {p.name: GpuNodePool(p.name, KubernetesPoolArgs(p, target, k8s_provider)) for p in config.node_pools}
    _cluster_runtimes(config, pools, k8s_provider, rollout_kubeconfig, target.install_kuberay)


def with_context(kubeconfig: str, context: str | None) -> str:
    """The kubeconfig with `context` as its current context (unchanged without one). Pure."""
    if not context:
        return kubeconfig
    import yaml

    document = yaml.safe_load(kubeconfig) or {}
    if not isinstance(document, dict) or context not in [c.get("name") for c in document.get("contexts") or []
                                                        if isinstance(c, dict)]:
        raise pulumi.RunError(f"gpuserve:kubernetes.context: the kubeconfig has no context {context!r}; "
                              "name one of its contexts or leave context unset")
    document["current-context"] = context
    return yaml.safe_dump(document, sort_keys=False)


def build_aws(config: AwsStack, stack: str) -> None:
    """EKS GPU node groups, then what the kubernetes target deploys, with an NLB in front
    of each pool's splitter. The cloud SDKs are imported here only, never for the local target."""
    import pulumi_aws as aws
    import pulumi_kubernetes as k8s

    from components.aws.cluster import EksCluster, EksClusterArgs
    from components.gpu_node_pool import EksPoolArgs, GpuNodePool

    aws_provider = aws.Provider("aws", region=config.aws.region)
    cluster = EksCluster("eks", EksClusterArgs(config.aws, aws_provider))
    k8s_provider = k8s.Provider("k8s", kubeconfig=cluster.kubeconfig, namespace=config.aws.namespace)
    pools = {p.name: GpuNodePool(p.name, EksPoolArgs(p, config.aws, cluster.name, aws_provider, k8s_provider))
             for p in config.node_pools}
    _cluster_runtimes(config, pools, k8s_provider, cluster.kubeconfig, install_kuberay=False)
    pulumi.export("cluster_name", cluster.name)


def _cluster_runtimes(config: ClusterStack, pools: dict, k8s_provider, kubeconfig, install_kuberay: bool) -> None:
    """The namespace once, KubeRay's operator if asked, then per pool a KubeRay RayCluster
    and its load balancer."""
    import pulumi_kubernetes as k8s

    from components.kubernetes import render
    from components.load_balancer import InferenceLoadBalancer, InferenceLoadBalancerArgs
    from components.serving_runtime import KubeRayRuntimeArgs, ServingRuntime

    settings = config.cluster
    manifest = render.namespace(settings.namespace)
    # Stacks made before the kubernetes target had the namespace under their first pool's
    # runtime; the alias keeps it (and everything in it) rather than replacing it.
    first = config.node_pools[0].name
    old_parent = pulumi.resource.create_urn(f"{first}-serve", "gpuserve:serving_runtime:ServingRuntime")
    namespace = k8s.core.v1.Namespace("namespace", metadata=manifest["metadata"], opts=pulumi.ResourceOptions(
        provider=k8s_provider, aliases=[pulumi.Alias(name=f"{first}-serve-namespace", parent=old_parent)]))
    before = [namespace]
    if install_kuberay:
        from components.kubernetes.kuberay_operator import KubeRayOperator, KubeRayOperatorArgs

        before.append(KubeRayOperator("kuberay", KubeRayOperatorArgs(settings.namespace, k8s_provider),
                                      opts=pulumi.ResourceOptions(depends_on=[namespace])))
    runtimes = {}
    for pool_config in config.node_pools:
        runtime = ServingRuntime(f"{pool_config.name}-serve", KubeRayRuntimeArgs(
            config, pool_config, pools[pool_config.name], k8s_provider, kubeconfig, depends_on=tuple(before)))
        lb = InferenceLoadBalancer(f"{pool_config.name}-lb",
                                   InferenceLoadBalancerArgs(runtime, cluster=settings, k8s_provider=k8s_provider))
        runtimes[pool_config.name] = (runtime, lb)
        pulumi.export(f"{pool_config.name}_dashboard", runtime.dashboard_url)
        pulumi.export(f"{pool_config.name}_http_url", lb.url)
    _services(config, runtimes)


def _services(config: LocalStack | ClusterStack, runtimes: dict) -> None:
    from components.model_service import ModelService, ModelServiceArgs

    pools = {pool.name: pool for pool in config.node_pools}
    endpoints, versions = {}, {}
    for service in config.services:
        runtime, lb = runtimes[service.pool]
        others = sum(s.replicas * s.gpus_per_replica for s in config.services
                     if s.pool == service.pool and s.name != service.name)
        pool = pools[service.pool]
        per_node = pool.gpus_per_node if getattr(pool, "nodes", 1) else None  # a local head pool: no nodes
        model = ModelService(service.name, ModelServiceArgs(service, runtime, lb, pool.total_gpus, others,
                                                            per_node, config.environment))
        endpoints[service.name] = model.endpoint
        versions[service.name] = model.serving_version
    pulumi.export("endpoints", endpoints)
    pulumi.export("serving_versions", versions)
