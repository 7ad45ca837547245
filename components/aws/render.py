"""Render the aws target's objects as plain data. Pure: config in, dicts out.

- EKS managed node group arguments, in the EKS API's own names (validated in tests
  against botocore's service model), and the Pulumi arguments derived from them;
- Kubernetes objects (NVIDIA device plugin DaemonSet, dashboard token Secret, Serve
  LoadBalancer Service), validated against the Kubernetes OpenAPI;
- the KubeRay RayCluster, validated against KubeRay's CRD (tests; version in scripts/versions.env).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import jinja2

from components.config import RESERVED_LABEL_PREFIX, AwsNodePool, AwsStack, AwsTarget
from runtime.constants import DASHBOARD_PORT, HEALTH_PATH

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
from runtime.constants import ENVIRONMENT_LABEL  # noqa: E402

POOL_LABEL = f"{RESERVED_LABEL_PREFIX}pool"
GPU_TYPE_LABEL = f"{RESERVED_LABEL_PREFIX}gpu-type"
AMI_TYPE = "AL2023_x86_64_NVIDIA"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.2"
DCGM_EXPORTER_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04"
RAY_IMAGE = "rayproject/ray:2.60.0-py311-gpu"
RAY_VERSION = "2.60.0"
SERVE_PORT = 8000
SPLITTER_PORT = 8080
SPLITTER_LABELS = {"app.kubernetes.io/name": "gpuserve-splitter"}
TOKEN_KEY = "auth_token"
PUBLIC_ANNOTATION = "gpuserve.io/public"

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


def _meta(name: str, namespace: str, labels: dict | None = None) -> dict:
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return meta


def _pool_daemonset(pool: AwsNodePool, app: str, namespace: str, container: dict, **pod: object) -> dict:
    """A DaemonSet on every node of one GPU pool: it selects the pool and tolerates its taint."""
    labels = {"app.kubernetes.io/name": app, POOL_LABEL: pool.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(f"{app}-{pool.name}", namespace, labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {POOL_LABEL: pool.name}, "tolerations": [dict(GPU_TOLERATION)],
                         "containers": [container], **pod},
            },
        },
    }


def device_plugin_daemonset(pool: AwsNodePool, namespace: str = "kube-system") -> dict:
    return _pool_daemonset(
        pool, "nvidia-device-plugin", namespace,
        {
            "name": "nvidia-device-plugin",
            "image": DEVICE_PLUGIN_IMAGE,
            "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
        },
        priorityClassName="system-node-critical",
        volumes=[{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}],
    )


def dcgm_exporter_daemonset(pool: AwsNodePool, namespace: str = "kube-system") -> dict:
    return _pool_daemonset(
        pool, "dcgm-exporter", namespace,
        {
            "name": "dcgm-exporter",
            "image": DCGM_EXPORTER_IMAGE,
            "ports": [{"name": "metrics", "containerPort": 9400}],
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
        },
    )


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def dashboard_secret(cluster: str, ns: str, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(f"{cluster}-dashboard-token", ns),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def worker_bounds(config: AwsStack, pool: AwsNodePool) -> tuple[int, int]:
    """(min, max) GPU workers: steady state of every service on the pool, and enough
    headroom for the largest rollout surge, never past the node group's max."""
    from runtime.plan import surge_replicas

    services = [s for s in config.services if s.pool == pool.name]
    steady = sum(s.replicas * s.gpus_per_replica for s in services)
    surge = max((surge_replicas(s.replicas, s.rollout.max_surge_percent) * s.gpus_per_replica
                 for s in services), default=0)
    per_worker = pool.gpus_per_node
    low = math.ceil(steady / per_worker)
    high = min(pool.max_nodes, max(low, math.ceil((steady + surge) / per_worker)))
    return low, high


def ray_cluster(config: AwsStack, pool: AwsNodePool, name: str, secret_name: str) -> dict:
    aws: AwsTarget = config.aws
    low, high = worker_bounds(config, pool)
    bind = aws.pod_bind_address
    container = {
        "name": "ray-head",
        "image": RAY_IMAGE,
        "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                  {"name": "serve", "containerPort": SERVE_PORT}],
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
    }
    worker_container = {
        "name": "ray-worker",
        "image": RAY_IMAGE,
        "ports": [{"name": "serve", "containerPort": SERVE_PORT}],
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(pool.gpus_per_node)},
            "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(pool.gpus_per_node)},
        },
    }
    worker_pod: dict = {
        "nodeSelector": {POOL_LABEL: pool.name},
        "tolerations": [dict(GPU_TOLERATION)],
        "containers": [worker_container],
    }
    if aws.ha:
        # Spread replicas across nodes so one node loss costs at most one worker.
        worker_pod["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"ray.io/cluster": name, "ray.io/group": pool.name}},
        }]
    spec: dict = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300},
        "authOptions": {"mode": "token", "secretName": secret_name},
        "headGroupSpec": {
            "serviceType": "ClusterIP",
            # The head schedules no replica (num-cpus 0) and hosts the dashboard.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": bind},
            "template": {"spec": {"containers": [container]}},
        },
        "workerGroupSpecs": [{
            "groupName": pool.name,
            "replicas": low,
            "minReplicas": low,
            "maxReplicas": high,
            "rayStartParams": {"num-gpus": str(pool.gpus_per_node)},
            "template": {"spec": worker_pod},
        }],
    }
    if aws.ha:
        spec["gcsFaultToleranceOptions"] = {"redisAddress": aws.redis_address}
    labels = {"app.kubernetes.io/part-of": "gpuserve"}
    if config.environment:
        labels[ENVIRONMENT_LABEL] = config.environment  # the policy pack's prod checks read it
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": _meta(name, aws.namespace, labels),
            "spec": spec}


def dashboard_internal_url(cluster: str, ns: str) -> str:
    """KubeRay's head Service; reachable inside the VPC only, never via a public LB."""
    return f"http://{cluster}-head-svc.{ns}.svc.cluster.local:{DASHBOARD_PORT}"


def dashboard_forward_address(cluster: str, ns: str) -> str:
    """The head's dashboard as the rollout provider reaches it from outside the cluster:
    through the API server's port-forward (runtime/k8s_forward.py)."""
    from runtime.k8s_forward import SCHEME

    return f"{SCHEME}://{ns}/{cluster}:{DASHBOARD_PORT}"


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
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_meta(f"{cluster}-serve", aws.namespace), "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            # Only the splitter: the Serve proxies (and their hidden version prefixes)
            # and the dashboard (8265) are never exposed here.
            "selector": {**SPLITTER_LABELS, "gpuserve.io/cluster": cluster},
            "ports": ports,
        },
    }


def serve_proxies_service(cluster: str, ns: str) -> dict:
    """Every node's Serve proxy, inside the cluster only: the splitter's upstream."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(f"{cluster}-serve-proxies", ns),
        "spec": {"type": "ClusterIP", "selector": {"ray.io/cluster": cluster},
                 "ports": [{"name": "serve", "port": SERVE_PORT, "targetPort": SERVE_PORT, "protocol": "TCP"}]},
    }


def splitter_deployment(cluster: str, aws: AwsTarget, secret_name: str) -> dict:
    """The splitter (splitter/, built from splitter/Dockerfile into `aws.splitter_image`):
    `aws.splitter_replicas` pods spread over nodes, reading the routing table from the
    head's dashboard with the cluster's token, forwarding to the Serve proxies."""
    labels = {**SPLITTER_LABELS, "gpuserve.io/cluster": cluster}
    ns = aws.namespace
    container = {
        "name": "splitter",
        "image": aws.splitter_image,
        "args": [f"-listen={aws.pod_bind_address}:{SPLITTER_PORT}",
                 f"-upstream=http://{cluster}-serve-proxies.{ns}.svc.cluster.local:{SERVE_PORT}",
                 f"-serve-api={dashboard_internal_url(cluster, ns)}",
                 "-token-file=/var/run/gpuserve/token",
                 "-admin=/tmp/splitter-admin.sock"],
        "ports": [{"name": "http", "containerPort": SPLITTER_PORT}],
        "readinessProbe": {"httpGet": {"path": HEALTH_PATH, "port": SPLITTER_PORT}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": HEALTH_PATH, "port": SPLITTER_PORT}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/gpuserve", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(f"{cluster}-splitter", ns, labels),
        "spec": {
            "replicas": aws.splitter_replicas,
            "selector": {"matchLabels": labels},
            # New pods serve before old ones go: the data plane never drops to zero.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": 15,
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": labels}}],
                    "volumes": [{"name": "token", "secret": {"secretName": secret_name,
                                                             "items": [{"key": TOKEN_KEY, "path": "token"}]}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def splitter_disruption_budget(cluster: str, ns: str) -> dict:
    labels = {**SPLITTER_LABELS, "gpuserve.io/cluster": cluster}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(f"{cluster}-splitter", ns, labels),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}
