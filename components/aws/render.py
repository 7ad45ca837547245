"""Render the aws target's own objects as plain data. Pure: config in, dicts out. The
aws target is EKS and its node groups (here) plus what gpuserve puts into any cluster
(components/kubernetes/render.py).

- EKS managed node group and cluster arguments, in the EKS API's own names (validated
  in tests against botocore's service model), and the Pulumi arguments derived from them;
- the splitter's Service as an NLB (AWS Load Balancer Controller annotations).
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from components.config import AwsNodePool, AwsTarget
from components.kubernetes.render import (
    GPU_TYPE_LABEL,
    POOL_LABEL,
    PUBLIC_ANNOTATION,
    SPLITTER_PORT,
    load_balancer_service,
)
from runtime.constants import HEALTH_PATH

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
AMI_TYPE = "AL2023_x86_64_NVIDIA"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
)


def pool_labels(pool: AwsNodePool) -> dict[str, str]:
    return {POOL_LABEL: pool.name, GPU_TYPE_LABEL: pool.gpu_type, **pool.labels}


def user_data(pool: AwsNodePool) -> str:
    """nodeadm user data (AL2023) adding the pool's labels to the kubelet, base64."""
    labels = [f"{k}={v}" for k, v in sorted(pool_labels(pool).items())]
    text = _TEMPLATES.get_template("nodeadm-user-data.j2").render(labels=labels, max_pods=None)
    return base64.b64encode(text.encode()).decode()


def node_group_request(pool: AwsNodePool, cluster_name: str, node_role_arn: str,
                       subnets: list[str], launch_template_id: str | None = None) -> dict:
    """CreateNodegroup request (EKS API names). Disk size moves into the launch
    template when there is one: EKS refuses both at once."""
    request = {
        "clusterName": cluster_name,
        "nodegroupName": f"{cluster_name}-{pool.name}",
        "scalingConfig": {"minSize": pool.min_nodes, "maxSize": pool.max_nodes, "desiredSize": pool.desired_nodes},
        "subnets": subnets,
        "instanceTypes": list(pool.instance_types),
        "amiType": AMI_TYPE,
        "nodeRole": node_role_arn,
        "labels": pool_labels(pool),
        "taints": [dict(GPU_TAINT)],
        "updateConfig": {"maxUnavailable": pool.max_unavailable},
        "capacityType": pool.capacity_type,
        "tags": {"gpuserve.io/pool": pool.name},
    }
    if launch_template_id:
        request["launchTemplate"] = {"id": launch_template_id, "version": "$Latest"}
    else:
        request["diskSize"] = pool.disk_size_gb
    return request


def node_group_args(request: dict) -> dict:
    """The same request as pulumi_aws.eks.NodeGroup keyword arguments."""
    args = {
        "cluster_name": request["clusterName"],
        "node_group_name": request["nodegroupName"],
        "node_role_arn": request["nodeRole"],
        "subnet_ids": request["subnets"],
        "instance_types": request["instanceTypes"],
        "ami_type": request["amiType"],
        "capacity_type": request["capacityType"],
        "labels": request["labels"],
        "taints": [{"key": t["key"], "value": t["value"], "effect": t["effect"]} for t in request["taints"]],
        "scaling_config": {"min_size": request["scalingConfig"]["minSize"],
                           "max_size": request["scalingConfig"]["maxSize"],
                           "desired_size": request["scalingConfig"]["desiredSize"]},
        "update_config": {"max_unavailable": request["updateConfig"]["maxUnavailable"]},
        "tags": request["tags"],
    }
    if "launchTemplate" in request:
        args["launch_template"] = {"id": request["launchTemplate"]["id"], "version": request["launchTemplate"]["version"]}
    else:
        args["disk_size"] = request["diskSize"]
    return args


def launch_template_args(pool: AwsNodePool) -> dict:
    return {
        "name_prefix": f"gpuserve-{pool.name}-",
        "user_data": user_data(pool),
        "block_device_mappings": [{
            "device_name": "/dev/xvda",
            "ebs": {"volume_size": pool.disk_size_gb, "volume_type": "gp3", "delete_on_termination": "true"},
        }],
        "metadata_options": {"http_tokens": "required", "http_put_response_hop_limit": 2},
    }


def cluster_vpc_config(aws: AwsTarget) -> dict:
    """CreateCluster's `resourcesVpcConfig` (botocore's EKS model): the API endpoint is
    private unless `api_public_cidrs` lists networks; then public to those only."""
    config = {"subnetIds": list(aws.subnet_ids), "endpointPrivateAccess": True,
              "endpointPublicAccess": bool(aws.api_public_cidrs)}
    if aws.api_public_cidrs:
        config["publicAccessCidrs"] = list(aws.api_public_cidrs)
    return config


def serve_service(cluster: str, aws: AwsTarget) -> dict:
    """The splitter's pods behind an NLB (AWS Load Balancer Controller)."""
    public = aws.public_load_balancer
    annotations = {
        # Our own record of intent: the policy pack allows internet-facing only with it.
        PUBLIC_ANNOTATION: "true" if public else "false",
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing" if public else "internal",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol": "HTTP",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": HEALTH_PATH,
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port": "traffic-port",
        "service.beta.kubernetes.io/aws-load-balancer-attributes": "load_balancing.cross_zone.enabled=true",
    }
    if aws.tls_certificate_arn:
        # HTTPS only: a listener on port 80 would serve the same API in plain text.
        annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] = aws.tls_certificate_arn
        annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] = "443"
        ports = [{"name": "https", "port": 443, "targetPort": SPLITTER_PORT, "protocol": "TCP"}]
    else:
        ports = [{"name": "http", "port": 80, "targetPort": SPLITTER_PORT, "protocol": "TCP"}]
    return load_balancer_service(cluster, aws.namespace, annotations, "LoadBalancer", ports)
