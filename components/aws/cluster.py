"""EksCluster: the EKS cluster the GPU pools join, created or referenced by name.

create_cluster: true   an `aws.eks.Cluster` with its IAM role on the configured subnets;
create_cluster: false  the existing cluster `cluster_name`; its kubeconfig comes from
                       `kubeconfig` (a file) or the ambient one of whoever runs Pulumi.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from components.aws import render
from components.config import AwsTarget


@dataclass(frozen=True)
class EksClusterArgs:
    aws: AwsTarget
    aws_provider: Any  # pulumi_aws.Provider


def kubeconfig_for(name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that gets tokens from `aws eks get-token` (the AWS CLI)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", name, "--region", region]}}}],
    })


class EksCluster(pulumi.ComponentResource):
    name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str] | None

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:eks_cluster:EksCluster", name, None, opts)
        target = args.aws
        if target.create_cluster:
            import pulumi_aws as aws

            aws_opts = pulumi.ResourceOptions(parent=self, provider=args.aws_provider)
            role = aws.iam.Role(f"{name}-cluster-role", assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            }), opts=aws_opts)
            policy = aws.iam.RolePolicyAttachment(
                f"{name}-cluster-policy", role=role.name,
                policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=aws_opts)
            vpc = render.cluster_vpc_config(target)
            cluster = aws.eks.Cluster(
                f"{name}-cluster", name=target.cluster_name, role_arn=role.arn, version=target.kubernetes_version,
                vpc_config={"subnet_ids": vpc["subnetIds"], "endpoint_private_access": vpc["endpointPrivateAccess"],
                            "endpoint_public_access": vpc["endpointPublicAccess"],
                            **({"public_access_cidrs": vpc["publicAccessCidrs"]} if "publicAccessCidrs" in vpc else {})},
                opts=pulumi.ResourceOptions(parent=self, provider=args.aws_provider, depends_on=[policy]),
            )
            self.name = cluster.name
            self.kubeconfig = pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority).apply(
                lambda a: kubeconfig_for(a[0], a[1], (a[2] or {}).get("data", "") if isinstance(a[2], dict)
                                         else getattr(a[2], "data", ""), target.region))
        else:
            self.name = pulumi.Output.from_input(target.cluster_name)
            self.kubeconfig = (pulumi.Output.secret(Path(target.kubeconfig).expanduser().read_text())
                               if target.kubeconfig else None)
        self.register_outputs({"name": self.name})
