"""GpuNodePool: where GPU replicas run.

local: a Ray head on 127.0.0.1 and, with `gpus_per_node`, the pool's worker nodes joined
       to it, each with its virtual GPUs (`ray start --num-gpus`) and the pool's label
       resource; the head then runs no GPU work, and a resize touches only the nodes.
       Without `gpus_per_node` the head holds the GPUs (stacks made before node pools).
kubernetes: GPU nodes the cluster has already, found by the pool's node selector and
       tolerations; gpuserve adds the NVIDIA device plugin DaemonSet on them (unless the
       cluster runs its own) and, optionally, the DCGM exporter.
aws:   an EKS managed node group on the AL2023 NVIDIA AMI with the `nvidia.com/gpu`
       NoSchedule taint and pool labels, its IAM role, an optional launch template, and
       the kubernetes target's DaemonSets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pulumi

from components.config import (
    AwsNodePool,
    AwsTarget,
    KubernetesNodePool,
    KubernetesTarget,
    LocalCluster,
    LocalNodePool,
)


@dataclass(frozen=True)
class LocalPoolArgs:
    pool: LocalNodePool
    cluster: LocalCluster
    state_dir: Path  # per stack; holds the token and logs of the local head


@dataclass(frozen=True)
class EksPoolArgs:
    pool: AwsNodePool
    aws: AwsTarget
    cluster_name: pulumi.Input[str]
    aws_provider: Any  # pulumi_aws.Provider
    k8s_provider: Any  # pulumi_kubernetes.Provider
    launch_template: bool = True  # carry labels and disk in a launch template (user data)


@dataclass(frozen=True)
class KubernetesPoolArgs:
    pool: KubernetesNodePool
    kubernetes: KubernetesTarget
    k8s_provider: Any  # pulumi_kubernetes.Provider


GpuNodePoolArgs = Union[LocalPoolArgs, KubernetesPoolArgs, EksPoolArgs]


def pool_facts(pool: LocalNodePool | KubernetesNodePool | AwsNodePool) -> dict:
    if isinstance(pool, LocalNodePool):
        return {"pool": pool.name, "target": "local", "gpus_per_node": pool.gpus_per_node or pool.gpus,
                "max_nodes": pool.nodes or 1, "total_gpus": pool.total_gpus, "instance_types": []}
    if isinstance(pool, KubernetesNodePool):
        return {"pool": pool.name, "target": "kubernetes", "gpus_per_node": pool.gpus_per_node,
                "max_nodes": pool.max_nodes, "total_gpus": pool.total_gpus, "instance_types": [],
                "node_selector": dict(pool.node_selector)}
    return {"pool": pool.name, "target": "aws", "gpus_per_node": pool.gpus_per_node, "max_nodes": pool.max_nodes,
            "total_gpus": pool.total_gpus, "instance_types": list(pool.instance_types)}


class GpuNodePool(pulumi.ComponentResource):
    gpus: float
    dashboard_url: pulumi.Output[str]  # local only
    token_path: pulumi.Output[str]  # local only
    cluster_id: pulumi.Output[str]  # local only: changes when the head is replaced
    node_group_name: pulumi.Output[str]  # aws only
    daemonsets: list  # kubernetes and aws: the pool's DaemonSets

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        # The capacity facts ride along as the component's inputs, so the policy pack can
        # check a rollout's surge against the pool before anything moves.
        super().__init__("gpuserve:gpu_node_pool:GpuNodePool", name, pool_facts(args.pool), opts)
        self.gpus = args.pool.total_gpus
        self.daemonsets = []
        if isinstance(args, LocalPoolArgs):
            self._local(name, args)
            outputs = {"dashboard_url": self.dashboard_url}
        elif isinstance(args, KubernetesPoolArgs):
            self._daemonsets(name, args.pool, args.kubernetes.device_plugin, args.kubernetes.dcgm_exporter,
                             pulumi.ResourceOptions(parent=self, provider=args.k8s_provider))
            outputs = {}
        else:
            self._eks(name, args)
            outputs = {"node_group_name": self.node_group_name}
        # Policies read the capacity facts from the registered outputs.
        self.register_outputs({**outputs, **pool_facts(args.pool)})

    def _local(self, name: str, args: LocalPoolArgs) -> None:
        from components.providers.local_ray_head import LocalRayHead

        head = LocalRayHead(
            f"{name}-ray-head",
            {
                "name": name,
                "gpus": 0 if args.pool.nodes else args.pool.gpus,
                "num_cpus": args.cluster.num_cpus,
                "gcs_port": args.cluster.gcs_port,
                "dashboard_port": args.cluster.dashboard_port,
                "internal_ports_start": args.cluster.internal_ports_start,
                "state_dir": str(args.state_dir / name),
                # Only when set: a key new to old heads would otherwise replace them.
                **({"metrics_report_interval_ms": args.cluster.metrics_report_interval_ms}
                   if args.cluster.metrics_report_interval_ms else {}),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = head.dashboard_url
        self.token_path = head.token_path
        self.cluster_id = head.id
        if args.pool.nodes:
            from components.providers.local_ray_workers import LocalRayWorkers

            LocalRayWorkers(
                f"{name}-ray-workers",
                {
                    "pool": name,
                    "nodes_wanted": args.pool.nodes,
                    "gpus_per_node": args.pool.gpus_per_node,
                    "cpus_per_node": args.pool.cpus_per_node or args.pool.gpus_per_node,
                    "gcs_port": args.cluster.gcs_port,
                    "internal_ports_start": args.cluster.internal_ports_start,
                    "state_dir": str(args.state_dir / name / "nodes"),
                    "metrics_report_interval_ms": args.cluster.metrics_report_interval_ms,
                    "cluster_id": head.id,
                    "dashboard_url": head.dashboard_url,
                    "token_path": head.token_path,
                },
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _eks(self, name: str, args: EksPoolArgs) -> None:
        import json

        import pulumi_aws as aws

        from components.aws import render

        aws_opts = pulumi.ResourceOptions(parent=self, provider=args.aws_provider)
        role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            }),
            opts=aws_opts,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{arn.rsplit('/', 1)[1]}", role=role.name,
                                         policy_arn=arn, opts=aws_opts)
            for arn in render.NODE_POLICIES
        ]
        template_id = None
        if args.launch_template:
            template = aws.ec2.LaunchTemplate(f"{name}-launch-template", **render.launch_template_args(args.pool),
                                              opts=aws_opts)
            template_id = template.id
        request = render.node_group_request(args.pool, "CLUSTER", "ROLE", list(args.aws.subnet_ids),
                                            "TEMPLATE" if template_id is not None else None)
        node_args = render.node_group_args(request)
        node_args.update(cluster_name=args.cluster_name, node_role_arn=role.arn)
        if template_id is not None:
            node_args["launch_template"] = {"id": template_id, "version": "$Latest"}
        group = aws.eks.NodeGroup(
            f"{name}-node-group", **node_args,
            opts=pulumi.ResourceOptions(parent=self, provider=args.aws_provider, depends_on=attachments),
        )
        self._daemonsets(name, args.pool, True, args.aws.dcgm_exporter,
                         pulumi.ResourceOptions(parent=self, provider=args.k8s_provider))
        self.node_group_name = group.node_group_name

    def _daemonsets(self, name: str, pool: AwsNodePool | KubernetesNodePool, device_plugin: bool, dcgm: bool,
                    k8s_opts: pulumi.ResourceOptions) -> None:
        import pulumi_kubernetes as k8s

        from components.kubernetes import render

        wanted = ([("device-plugin", render.device_plugin_daemonset(pool))] if device_plugin else []) + \
                 ([("dcgm-exporter", render.dcgm_exporter_daemonset(pool))] if dcgm else [])
        for suffix, manifest in wanted:
            self.daemonsets.append(k8s.apps.v1.DaemonSet(
                f"{name}-{suffix}", metadata=manifest["metadata"], spec=manifest["spec"], opts=k8s_opts))
