"""GpuNodePool: where GPU replicas run.

local: one Ray head on 127.0.0.1 with `gpus` virtual GPUs (`ray start --num-gpus`).
aws:   an EKS managed node group with the NVIDIA AMI, taint and labels, plus the device
       plugin DaemonSet (see components/aws/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.config import LocalCluster, LocalNodePool
from components.providers.local_ray_head import LocalRayHead


@dataclass(frozen=True)
class GpuNodePoolArgs:
    pool: LocalNodePool
    cluster: LocalCluster
    state_dir: Path  # per stack; holds the token and logs of the local head


class GpuNodePool(pulumi.ComponentResource):
    dashboard_url: pulumi.Output[str]
    token_path: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    gpus: int

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:gpu_node_pool:GpuNodePool", name, None, opts)
        self.gpus = args.pool.gpus
        head = LocalRayHead(
            f"{name}-ray-head",
            {
                "name": f"{name}",
                "gpus": args.pool.gpus,
                "num_cpus": args.cluster.num_cpus,
                "gcs_port": args.cluster.gcs_port,
                "dashboard_port": args.cluster.dashboard_port,
                "internal_ports_start": args.cluster.internal_ports_start,
                "state_dir": str(args.state_dir / name),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = head.dashboard_url
        self.token_path = head.token_path
        # Changes whenever the head is replaced, so what lives on it is recreated too.
        self.cluster_id = head.id
        self.register_outputs({"dashboard_url": self.dashboard_url, "gpus": self.gpus})
