"""ServingRuntime: the Ray Serve control plane that services deploy into.

local: Serve on the local Ray head, HTTP proxy on 127.0.0.1:<http_port>.
k8s:   a KubeRay RayCluster on the GPU node pool (see components/aws/).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.gpu_node_pool import GpuNodePool
from components.providers.local_serve import LocalServe


@dataclass(frozen=True)
class ServingRuntimeArgs:
    node_pool: GpuNodePool
    http_port: int


class ServingRuntime(pulumi.ComponentResource):
    dashboard_url: pulumi.Output[str]
    token_path: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    http_url: pulumi.Output[str]

    def __init__(self, name: str, args: ServingRuntimeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:serving_runtime:ServingRuntime", name, None, opts)
        serve = LocalServe(
            f"{name}-serve",
            {
                "dashboard_url": args.node_pool.dashboard_url,
                "token_path": args.node_pool.token_path,
                "http_port": args.http_port,
                "cluster_id": args.node_pool.cluster_id,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = args.node_pool.dashboard_url
        self.token_path = args.node_pool.token_path
        self.cluster_id = args.node_pool.cluster_id
        self.http_url = serve.http_url
        self.register_outputs({"dashboard_url": self.dashboard_url, "http_url": self.http_url})
