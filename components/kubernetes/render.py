"""Render what gpuserve puts into any Kubernetes cluster, as plain data. Pure: config in,
dicts out. The kubernetes target deploys these; the aws target is EKS and node groups
(components/aws/render.py) plus these.

- the KubeRay RayCluster (validated against KubeRay's CRD in tests; version in
  scripts/versions.env): a head that runs no replica, one GPU worker group per pool on
  the pool's nodes (its selector and tolerations), token auth, optional GCS FT;
- the dashboard token Secret, the NVIDIA device plugin and DCGM exporter DaemonSets;
- the data plane: the splitter Deployment, its PodDisruptionBudget, the Serve proxies'
  ClusterIP Service and the splitter's LoadBalancer (or ClusterIP) Service;
- KubeRay's operator, when a stack installs it (`install_kuberay: true`).
"""

from __future__ import annotations

import base64
import math

from components.config import (
    RESERVED_LABEL_PREFIX,
    AwsNodePool,
    ClusterSettings,
    ClusterStack,
    KubernetesNodePool,
    KubernetesTarget,
)
from runtime.constants import DASHBOARD_PORT, ENVIRONMENT_LABEL, HEALTH_PATH

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
POOL_LABEL = f"{RESERVED_LABEL_PREFIX}pool"
GPU_TYPE_LABEL = f"{RESERVED_LABEL_PREFIX}gpu-type"
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.2"
DCGM_EXPORTER_IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04"
RAY_IMAGE = "rayproject/ray:2.60.0-py311-gpu"
RAY_VERSION = "2.60.0"
SERVE_PORT = 8000
SPLITTER_PORT = 8080
SPLITTER_LABELS = {"app.kubernetes.io/name": "gpuserve-splitter"}
TOKEN_KEY = "auth_token"
PUBLIC_ANNOTATION = "gpuserve.io/public"
# An aws-target pool's nodes carry these (the node group's labels and taint); a
# kubernetes-target pool names its own nodes' labels and taints.
AWS_WORKER = {"cpu": "4", "memory": "16Gi"}

Pool = AwsNodePool | KubernetesNodePool


def pool_scheduling(pool: Pool) -> tuple[dict[str, str], list[dict]]:
    """(nodeSelector, tolerations) that put a pod on the pool's GPU nodes."""
    if isinstance(pool, AwsNodePool):
        return {POOL_LABEL: pool.name}, [dict(GPU_TOLERATION)]
    return dict(pool.node_selector), [t.model_dump(exclude_none=True) for t in pool.tolerations]


def worker_resources(pool: Pool) -> dict[str, str]:
    if isinstance(pool, AwsNodePool):
        return dict(AWS_WORKER)
    return {"cpu": pool.worker_cpu, "memory": pool.worker_memory}


def _meta(name: str, namespace: str, labels: dict | None = None) -> dict:
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return meta


def _pool_daemonset(pool: Pool, app: str, namespace: str, container: dict, **pod: object) -> dict:
    """A DaemonSet on every node of one GPU pool: it selects the pool and tolerates its taint."""
    labels = {"app.kubernetes.io/name": app, POOL_LABEL: pool.name}
    selector, tolerations = pool_scheduling(pool)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(f"{app}-{pool.name}", namespace, labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": selector, "tolerations": tolerations,
                         "containers": [container], **pod},
            },
        },
    }


def device_plugin_daemonset(pool: Pool, namespace: str = "kube-system") -> dict:
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


def dcgm_exporter_daemonset(pool: Pool, namespace: str = "kube-system") -> dict:
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
        # `data`, not `stringData`: the Kubernetes provider turns stringData into data
        # in its check and the copy is no longer a Pulumi secret (seen against a live
        # API server with the policy pack's secrets-are-secret).
        "data": {TOKEN_KEY: base64.b64encode((token or "").encode()).decode()},  # None: unknown (mocks)
    }


def worker_bounds(config: ClusterStack, pool: Pool) -> tuple[int, int]:
    """(min, max) GPU workers: steady state of every service on the pool (on a kubernetes
    pool at least its min_nodes), and enough headroom for the largest rollout surge,
    never past the pool's max."""
    from runtime.plan import surge_replicas

    services = [s for s in config.services if s.pool == pool.name]
    steady = sum(s.replicas * s.gpus_per_replica for s in services)
    surge = max((surge_replicas(s.replicas, s.rollout.max_surge_percent) * s.gpus_per_replica
                 for s in services), default=0)
    per_worker = pool.gpus_per_node
    low = math.ceil(steady / per_worker)
    if isinstance(pool, KubernetesNodePool):
        # GPU workers kept up even with no replica to place (warm capacity), as declared.
        low = max(low, min(pool.min_nodes, pool.max_nodes))
    high = min(pool.max_nodes, max(low, math.ceil((steady + surge) / per_worker)))
    return low, high


def ray_cluster(config: ClusterStack, pool: Pool, name: str, secret_name: str) -> dict:
    aws: ClusterSettings = config.cluster
    low, high = worker_bounds(config, pool)
    selector, tolerations = pool_scheduling(pool)
    resources = {**worker_resources(pool), "nvidia.com/gpu": str(pool.gpus_per_node)}
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
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    worker_pod: dict = {
        "nodeSelector": selector,
        "tolerations": tolerations,
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


def serve_proxies_service(cluster: str, ns: str) -> dict:
    """Every node's Serve proxy, inside the cluster only: the splitter's upstream."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(f"{cluster}-serve-proxies", ns),
        "spec": {"type": "ClusterIP", "selector": {"ray.io/cluster": cluster},
                 "ports": [{"name": "serve", "port": SERVE_PORT, "targetPort": SERVE_PORT, "protocol": "TCP"}]},
    }


def splitter_deployment(cluster: str, aws: ClusterSettings, secret_name: str) -> dict:
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


def serve_service(cluster: str, target: KubernetesTarget) -> dict:
    """The splitter's pods behind the cluster's own load balancer (or ClusterIP). Public
    only when declared, and then only to `load_balancer_source_ranges`."""
    annotations = {**target.load_balancer_annotations,
                   # Our own record of intent: the policy pack allows a public LB only with it.
                   PUBLIC_ANNOTATION: "true" if target.public_load_balancer else "false"}
    return load_balancer_service(cluster, target.namespace, annotations, target.service_type,
                                 [{"name": "http", "port": 80, "targetPort": SPLITTER_PORT, "protocol": "TCP"}],
                                 source_ranges=target.load_balancer_source_ranges,
                                 load_balancer_class=target.load_balancer_class)


def load_balancer_service(cluster: str, ns: str, annotations: dict, kind: str, ports: list[dict],
                          source_ranges: list[str] = (), load_balancer_class: str | None = None) -> dict:
    spec: dict = {
        "type": kind,
        # Only the splitter: the Serve proxies (and their hidden version prefixes)
        # and the dashboard (8265) are never exposed here.
        "selector": {**SPLITTER_LABELS, "gpuserve.io/cluster": cluster},
        "ports": ports,
    }
    if kind == "LoadBalancer" and source_ranges:
        spec["loadBalancerSourceRanges"] = list(source_ranges)
    if kind == "LoadBalancer" and load_balancer_class:
        spec["loadBalancerClass"] = load_balancer_class
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_meta(f"{cluster}-serve", ns), "annotations": annotations},
        "spec": spec,
    }
