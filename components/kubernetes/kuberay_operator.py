"""KubeRayOperator: KubeRay's CRDs and operator, for a kubernetes stack with
`install_kuberay: true`.

The operator is cluster-wide (its CRDs and ClusterRole are), so the default assumes a
cluster admin installed it once (Helm chart `kuberay/kuberay-operator`) and stacks only
use it. Installing it from a stack suits a cluster that is the stack's own.

What is installed comes from the KubeRay release gpuserve validates against
(KUBERAY_VERSION in scripts/versions.env): its CRDs and ClusterRole as released
(fetched into .tools/crds by scripts/fetch-crds), and the operator Deployment written
here after the release's config/manager/manager.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from runtime.constants import PROJECT_DIR

CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml",
             "ray.io_raycronjobs.yaml")
NAME = "kuberay-operator"
LABELS = {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": NAME}


def kuberay_version() -> str:
    for line in (PROJECT_DIR / "scripts" / "versions.env").read_text().splitlines():
        if line.startswith("KUBERAY_VERSION="):
            return line.partition("=")[2].strip()
    raise RuntimeError("scripts/versions.env names no KUBERAY_VERSION")


def release_dir(version: str | None = None) -> Path:
    return PROJECT_DIR / ".tools" / "crds" / f"kuberay-{version or kuberay_version()}"


def release_files(version: str | None = None) -> tuple[list[dict], dict]:
    """(CRDs, ClusterRole) of the release; a clear error when setup has not fetched them."""
    where = release_dir(version)
    missing = [f for f in (*CRD_FILES, "role.yaml") if not (where / f).is_file()]
    if missing:
        raise pulumi.RunError(f"KubeRay's release files {missing} are not in {where}: run `make setup` "
                              "(scripts/fetch-crds) before a stack with install_kuberay: true")
    crds = [yaml.safe_load((where / f).read_text()) for f in CRD_FILES]
    role = next(doc for doc in yaml.safe_load_all((where / "role.yaml").read_text()) if doc)
    return crds, role


def operator_objects(namespace: str, role: dict, version: str) -> dict[str, dict]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding and Deployment. Pure."""
    meta = {"name": NAME, "namespace": namespace, "labels": dict(LABELS)}
    container = {
        "name": NAME,
        "image": f"quay.io/kuberay/operator:{version}",
        "command": ["/manager"],
        # One replica: nothing to elect. Metrics and probes on the pod's own port.
        "args": ["--enable-leader-election=false"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": "http"}, "initialDelaySeconds": 10,
                          "periodSeconds": 5, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "http"}, "initialDelaySeconds": 10,
                           "periodSeconds": 5, "failureThreshold": 5},
        # The release's sizing: about 500 MB manages some 500 Ray pods.
        "resources": {"limits": {"cpu": "100m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    return {
        "service_account": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        "cluster_role": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": {"name": NAME, "labels": dict(LABELS)}, "rules": role["rules"]},
        "cluster_role_binding": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": dict(LABELS)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        "deployment": {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(LABELS)},
                "strategy": {"type": "Recreate"},
                "template": {"metadata": {"labels": dict(LABELS)}, "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                }},
            },
        },
    }


@dataclass(frozen=True)
class KubeRayOperatorArgs:
    namespace: str  # where the operator runs (the stack's namespace)
    k8s_provider: Any  # pulumi_kubernetes.Provider


class KubeRayOperator(pulumi.ComponentResource):
    def __init__(self, name: str, args: KubeRayOperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:kubernetes:KubeRayOperator", name, None, opts)
        import pulumi_kubernetes as k8s

        version = kuberay_version()
        crds, role = release_files(version)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        definitions = []
        for crd in crds:
            definitions.append(k8s.apiextensions.v1.CustomResourceDefinition(
                f"{name}-{crd['metadata']['name']}", metadata=crd["metadata"], spec=crd["spec"], opts=k8s_opts))
        objects = operator_objects(args.namespace, role, version)
        # The operator's namespace is the stack's; it exists before any of this.
        k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata=objects["service_account"]["metadata"],
                                   opts=k8s_opts)
        cluster_role = k8s.rbac.v1.ClusterRole(f"{name}-cluster-role", metadata=objects["cluster_role"]["metadata"],
                                               rules=objects["cluster_role"]["rules"], opts=k8s_opts)
        binding = objects["cluster_role_binding"]
        k8s.rbac.v1.ClusterRoleBinding(f"{name}-cluster-role-binding", metadata=binding["metadata"],
                                       role_ref=binding["roleRef"], subjects=binding["subjects"],
                                       opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                                                   depends_on=[cluster_role]))
        deployment = objects["deployment"]
        # Its RayClusters come after it (the program waits on this component), and on
        # destroy go before it: the operator is still there to let their pods go.
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=deployment["metadata"], spec=deployment["spec"],
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=definitions))
        self.register_outputs({"version": version})
