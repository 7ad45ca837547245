"""A kubernetes-target stack against the project's own control plane (scripts/k8s-up:
etcd, kube-apiserver, controller-manager, scheduler, kwok's fake GPU nodes and the real
KubeRay operator, all on 127.0.0.1), driven through the real Pulumi CLI and the real
pulumi-kubernetes provider (scripts/build-k8s-provider).

kwok's pods run no container, so no Ray runs here: stacks hold no services, and what the
rollout provider does through the head's dashboard is out of reach (README, "The
kubernetes target", known gap).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import yaml
from pulumi import automation as auto

from tests.integration.harness import CURRENT, REPO, LocalStack, Run, prepare_project, stack_env_vars

STATE = REPO / ".state" / "k8s"
PROVIDER_DIR = REPO / ".tools" / "k8s" / "provider"
KUBECONFIG = STATE / "kubeconfig"
# kwok's fake nodes, as scripts/k8s-up makes them: one CPU node, GPU nodes with this label
# and the conventional nvidia.com/gpu taint.
GPU_NODE_LABELS = {"nvidia.com/gpu.present": "true"}
# The config users copy (stacks/Pulumi.k8s.yaml), for values the tests take as shipped.
SHIPPED = yaml.safe_load((REPO / "stacks" / "Pulumi.k8s.yaml").read_text())["config"]


def control_plane_up() -> bool:
    """Start the control plane unless it runs; True when this call started it."""
    before = subprocess.run([str(REPO / "scripts" / "k8s-up"), "--status"], capture_output=True, text=True)
    if before.returncode == 0:
        return False
    started = subprocess.run([str(REPO / "scripts" / "k8s-up")], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/k8s-up failed ({started.returncode}):\n{started.stdout}\n{started.stderr}")
    return True


def control_plane_down() -> None:
    subprocess.run([str(REPO / "scripts" / "k8s-down")], capture_output=True, text=True, timeout=300, check=True)


def api():
    """Kubernetes API clients on the control plane's kubeconfig."""
    from kubernetes import client, config

    config_client = config.new_client_from_config(str(KUBECONFIG))
    return client.CoreV1Api(config_client), client.AppsV1Api(config_client), \
        client.CustomObjectsApi(config_client), client.PolicyV1Api(config_client)


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 120.0, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s (last seen: {last!r})")


@dataclass
class KubernetesStack(LocalStack):
    """A kubernetes-target stack in its own namespace, file backend and PULUMI_HOME."""

    kubernetes: dict = field(default_factory=dict)  # more `gpuserve:kubernetes` settings
    node_pool: dict = field(default_factory=dict)  # more settings of the one node pool
    namespace: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.project = prepare_project(self.root, CURRENT)
        self.env_vars = stack_env_vars(self.root, CURRENT)
        # The Kubernetes provider (scripts/build-k8s-provider), found on PATH.
        self.env_vars["PATH"] = f"{PROVIDER_DIR}:{self.env_vars['PATH']}"
        self.env = {**os.environ, **self.env_vars, "PULUMI_HOME": str(self.root / "pulumi-home")}
        self.workspace = auto.LocalWorkspace(
            work_dir=str(self.project), pulumi_home=str(self.root / "pulumi-home"), env_vars=self.env_vars,
            pulumi_command=auto.PulumiCommand(root=str(CURRENT.command_root)))
        self.stack = auto.Stack.create_or_select(self.name, self.workspace)
        self.write_config()

    def config_document(self) -> dict:
        return {
            "gpuserve:target": "kubernetes",
            "gpuserve:kubernetes": {
                "kubeconfig": str(KUBECONFIG),
                "namespace": self.namespace,
                # The shipped k8s stack's value (its YAML says why); kwok's pods run nothing.
                "pod_bind_address": SHIPPED["gpuserve:kubernetes"]["pod_bind_address"],
                "splitter_image": "gpuserve-splitter:test",
                "splitter_replicas": 2,
                # The fake load balancer controller of k8s-up answers with 127.0.0.1.
                "public_load_balancer": True,
                "load_balancer_source_ranges": ["127.0.0.1/32"],
                **self.kubernetes,
            },
            "gpuserve:node_pools": [{"name": "gpu", "gpu_type": "fake", "gpus_per_node": 1, "min_nodes": 1,
                                     "max_nodes": 3, "node_selector": dict(GPU_NODE_LABELS),
                                     "worker_cpu": "2", "worker_memory": "4Gi", **self.node_pool}],
            "gpuserve:services": [],
        }

    def destroy(self) -> Run:
        return self._run("destroy", check=True)
