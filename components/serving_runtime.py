"""ServingRuntime: the Ray Serve control plane that services deploy into.

local: Serve on the local Ray head, HTTP proxy on 127.0.0.1:<http_port>.
kubernetes and aws: a KubeRay RayCluster on the GPU node pool: a head that runs no replica, a GPU
       worker group that tolerates the pool's taint, the in-tree autoscaler with room
       for the rollout surge, token auth from a Secret, and (ha) GCS fault tolerance
       on an external Redis. No serveConfigV2: ModelRollout is the only writer of
       Serve applications, through the dashboard's REST API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import pulumi

from components.config import AwsNodePool, ClusterStack, KubernetesNodePool
from components.gpu_node_pool import GpuNodePool


@dataclass(frozen=True)
class LocalRuntimeArgs:
    node_pool: GpuNodePool
    http_port: int


@dataclass(frozen=True)
class KubeRayRuntimeArgs:
    config: ClusterStack
    pool: AwsNodePool | KubernetesNodePool
    node_pool: GpuNodePool
    k8s_provider: Any  # pulumi_kubernetes.Provider
    # How the rollout provider reaches the API server (a secret); None: the ambient kubeconfig.
    kubeconfig: Any = None
    # The namespace (and, with install_kuberay, the operator) the cluster needs first.
    depends_on: tuple = ()


ServingRuntimeArgs = Union[LocalRuntimeArgs, KubeRayRuntimeArgs]


class ServingRuntime(pulumi.ComponentResource):
    dashboard_url: pulumi.Output[str]
    token_path: pulumi.Output[str] | None  # local
    token: pulumi.Output[str] | None  # k8s, a secret
    cluster_id: pulumi.Output[str] | None
    http_url: pulumi.Output[str]  # local: the proxy; k8s: filled in by the load balancer
    cluster_name: str | None = None
    http_options: dict | None = None

    def __init__(self, name: str, args: ServingRuntimeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:serving_runtime:ServingRuntime", name, None, opts)
        if isinstance(args, LocalRuntimeArgs):
            self._local(name, args)
        else:
            self._kuberay(name, args)
        self.register_outputs({"dashboard_url": self.dashboard_url})

    def _local(self, name: str, args: LocalRuntimeArgs) -> None:
        from components.providers.local_serve import LocalServe

        serve = LocalServe(
            f"{name}-serve",
            {
                "dashboard_url": args.node_pool.dashboard_url,
                "token_path": args.node_pool.token_path,
                "http_port": args.http_port,
                "cluster_id": args.node_pool.cluster_id,
            },
            # After the pool's nodes: a rollout behind it finds the pool's capacity in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.node_pool]),
        )
        self.dashboard_url = pulumi.Output.from_input(args.node_pool.dashboard_url)
        self.token_path = args.node_pool.token_path
        self.token = None
        self.kubeconfig = None
        self.cluster_id = args.node_pool.cluster_id
        self.http_url = serve.http_url

    def _kuberay(self, name: str, args: KubeRayRuntimeArgs) -> None:
        import pulumi_kubernetes as k8s

        from components.kubernetes import render
        from components.providers.secret_token import SecretToken

        aws = args.config.cluster
        cluster = f"gpuserve-{args.pool.name}"
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=list(args.depends_on))
        token = SecretToken(f"{name}-dashboard-token", purpose=f"{cluster} dashboard",
                            opts=pulumi.ResourceOptions(parent=self))
        secret = token.value.apply(lambda value: render.dashboard_secret(cluster, aws.namespace, value))
        k8s.core.v1.Secret(
            f"{name}-dashboard-secret",
            metadata=secret.apply(lambda s: s["metadata"]),
            data=pulumi.Output.secret(secret.apply(lambda s: s["data"])),
            type="Opaque",
            opts=k8s_opts,
        )
        manifest = render.ray_cluster(args.config, args.pool, cluster, f"{cluster}-dashboard-token")
        self.ray_cluster = k8s.apiextensions.CustomResource(
            f"{name}-ray-cluster",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                        depends_on=[args.node_pool, *args.depends_on]),
        )
        self.cluster_name = cluster
        # Reached from the operator's machine through an API port-forward (runtime/k8s_forward.py).
        self.dashboard_url = pulumi.Output.from_input(render.dashboard_forward_address(cluster, aws.namespace))
        self.kubeconfig = args.kubeconfig
        self.token_path = None
        self.token = token.value
        self.cluster_id = self.ray_cluster.id
        self.http_options = {"host": aws.pod_bind_address, "port": render.SERVE_PORT}
