"""The kubernetes target under Pulumi mocks: what goes into any cluster, from the shipped
stacks/Pulumi.k8s.yaml with one change per test. (The same program against a real API
server and KubeRay operator: tests/k8s.)"""

from __future__ import annotations

import pytest
import yaml

from components import program
from components.config import ConfigError, load_stack_config
from components.kubernetes import kuberay_operator, render
from policies import validators as v
from tests.unit.components.test_aws_program import REPO, one, registered

STACK = "k8s"


def kubernetes(**changes) -> dict:
    base = yaml.safe_load((REPO / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]["gpuserve:kubernetes"]
    return {**base, **changes}


def pool(**changes) -> list[dict]:
    base = yaml.safe_load((REPO / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]["gpuserve:node_pools"]
    return [{**base[0], **changes}]


def test_no_cloud_resource_is_declared_only_kubernetes_objects():
    types = {r.typ for r in registered(STACK).resources}
    assert not [t for t in types if t.startswith("aws:")]
    assert {"kubernetes:core/v1:Namespace", "kubernetes:ray.io/v1:RayCluster", "kubernetes:apps/v1:Deployment",
            "kubernetes:apps/v1:DaemonSet", "kubernetes:core/v1:Service"} <= types


def test_the_worker_group_runs_on_the_pools_own_nodes_by_their_labels_and_taints():
    mocks = registered(STACK, node_pools=pool(node_selector={"pool": "a100"},
                                              tolerations=[{"key": "dedicated", "value": "ml", "effect": "NoExecute"}],
                                              worker_cpu="8", worker_memory="64Gi"))
    worker = one(mocks, "kubernetes:ray.io/v1:RayCluster").inputs["spec"]["workerGroupSpecs"][0]
    pod = worker["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}


def test_the_default_toleration_is_the_conventional_gpu_taint():
    worker = one(registered(STACK), "kubernetes:ray.io/v1:RayCluster").inputs["spec"]["workerGroupSpecs"][0]
    assert worker["template"]["spec"]["tolerations"] == [render.GPU_TOLERATION]


def test_the_device_plugin_follows_the_pool_and_can_be_left_to_the_cluster():
    (plugin,) = [d for d in registered(STACK).of_type("kubernetes:apps/v1:DaemonSet") if "device-plugin" in d.name]
    assert plugin.inputs["spec"]["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert not registered(STACK, kubernetes=kubernetes(device_plugin=False)).of_type("kubernetes:apps/v1:DaemonSet")


def test_the_load_balancer_carries_the_stacks_annotations_and_is_internal_by_them():
    service = one(registered(STACK), "kubernetes:core/v1:Service", "gpu-lb-service")
    annotations = service.inputs["metadata"]["annotations"]
    assert annotations["networking.gke.io/load-balancer-type"] == "Internal"
    assert annotations[render.PUBLIC_ANNOTATION] == "false"
    assert v.lb_internal_unless_declared(service.inputs) == []


def test_a_public_load_balancer_admits_only_its_source_ranges_and_passes_the_policy():
    target = kubernetes(public_load_balancer=True, load_balancer_annotations={},
                        load_balancer_source_ranges=["203.0.113.0/24"], load_balancer_class="example.com/lb")
    service = one(registered(STACK, kubernetes=target), "kubernetes:core/v1:Service", "gpu-lb-service")
    assert service.inputs["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert service.inputs["spec"]["loadBalancerClass"] == "example.com/lb"
    assert v.lb_internal_unless_declared(service.inputs) == []


def test_the_policy_refuses_a_public_load_balancer_without_an_allowlist_on_this_target():
    # Config refuses it first (below); the pack refuses what reaches it some other way.
    manifest = render.serve_service("gpuserve-gpu", load_stack_config(
        {"target": "kubernetes", "kubernetes": kubernetes(public_load_balancer=True, load_balancer_annotations={},
                                                          load_balancer_source_ranges=["192.168.0.0/16"]),
         "node_pools": pool(), "services": []}, STACK).kubernetes)
    del manifest["spec"]["loadBalancerSourceRanges"]
    assert v.lb_internal_unless_declared(manifest) == [
        "a public load balancer must admit only listed networks; seen no spec.loadBalancerSourceRanges. "
        "Set gpuserve:kubernetes.load_balancer_source_ranges."]


def test_config_refuses_a_public_load_balancer_without_source_ranges():
    with pytest.raises(ConfigError) as error:
        load_stack_config({"target": "kubernetes", "kubernetes": kubernetes(public_load_balancer=True),
                           "node_pools": pool(), "services": []}, STACK)
    assert "gpuserve:kubernetes.load_balancer_source_ranges: got []" in str(error.value)


def test_cluster_ip_exposes_nothing_and_the_url_is_the_in_cluster_name():
    mocks = registered(STACK, kubernetes=kubernetes(service_type="ClusterIP"))
    service = one(mocks, "kubernetes:core/v1:Service", "gpu-lb-service")
    assert service.inputs["spec"]["type"] == "ClusterIP"
    assert "loadBalancerSourceRanges" not in service.inputs["spec"]


def secret_value(value):
    """The value inside a secret as the engine receives it (its signature key), or fail."""
    assert isinstance(value, dict) and "value" in value, f"not sent as a secret: {value!r}"
    return value["value"]


KUBECONFIG = ("apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters: []\nusers: []\n"
              "contexts:\n- {name: other, context: {cluster: a, user: a}}\n- {name: lab, context: {cluster: b, user: b}}\n")


def test_an_inline_kubeconfig_reaches_the_provider_as_a_secret_and_a_path_is_read(tmp_path):
    provider = one(registered(STACK, kubernetes=kubernetes(kubeconfig=KUBECONFIG, context="lab")),
                   "pulumi:providers:kubernetes")
    assert secret_value(provider.inputs["kubeconfig"]) == KUBECONFIG and provider.inputs["context"] == "lab"
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    provider = one(registered(STACK, kubernetes=kubernetes(kubeconfig=str(path))), "pulumi:providers:kubernetes")
    assert secret_value(provider.inputs["kubeconfig"]) == KUBECONFIG


def test_the_rollout_reaches_the_same_context_as_the_provider():
    mocks = registered(STACK, kubernetes=kubernetes(kubeconfig=KUBECONFIG, context="lab"))
    rollout = one(mocks, "pulumi-python:dynamic/gpuserve:ModelRollout")
    assert yaml.safe_load(secret_value(rollout.inputs["kubeconfig"]))["current-context"] == "lab"


def test_a_context_the_kubeconfig_lacks_is_named_in_the_error():
    with pytest.raises(Exception, match="gpuserve:kubernetes.context: the kubeconfig has no context 'nope'"):
        program.with_context(KUBECONFIG, "nope")
    assert program.with_context(KUBECONFIG, None) == KUBECONFIG


def test_a_missing_kubeconfig_path_is_a_config_error_not_a_traceback():
    with pytest.raises(ConfigError) as error:
        load_stack_config({"target": "kubernetes", "kubernetes": kubernetes(kubeconfig="/nonexistent/kubeconfig"),
                           "node_pools": pool(), "services": []}, STACK)
    assert "gpuserve:kubernetes.kubeconfig: got '/nonexistent/kubeconfig'" in str(error.value)


def test_every_bad_key_of_the_target_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        load_stack_config({"target": "kubernetes",
                           "kubernetes": kubernetes(service_type="NodePort", load_balancer_source_ranges=["10.0.0.300/8"],
                                                    surprise=1),
                           "node_pools": pool(tolerations=[{"key": "a", "operator": "Exists", "value": "b"}],
                                              worker_memory="lots"),
                           "services": []}, STACK)
    text = str(error.value)
    for path in ("gpuserve:kubernetes.service_type", "gpuserve:kubernetes.load_balancer_source_ranges",
                 "gpuserve:kubernetes.surprise", "gpuserve:node_pools[0].tolerations[0].value",
                 "gpuserve:node_pools[0].worker_memory"):
        assert path in text, (path, text)


def test_without_install_kuberay_no_operator_or_crd_is_declared():
    types = {r.typ for r in registered(STACK).resources}
    assert "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition" not in types
    assert not [r for r in registered(STACK).resources if r.name.startswith("kuberay")]


def test_install_kuberay_declares_the_releases_crds_and_the_operator_before_the_raycluster():
    mocks = registered(STACK, kubernetes=kubernetes(install_kuberay=True))
    crds = {r.inputs["metadata"]["name"] for r in
            mocks.of_type("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition")}
    assert crds == {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"}
    operator = one(mocks, "kubernetes:apps/v1:Deployment", "kuberay-deployment")
    container = operator.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"quay.io/kuberay/operator:{kuberay_operator.kuberay_version()}"
    role = one(mocks, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert any("rayclusters" in rule.get("resources", []) for rule in role.inputs["rules"])
    binding = one(mocks, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": "kuberay-operator",
                                           "namespace": "gpuserve"}]


def test_one_namespace_for_every_pool():
    pools = pool() + [{**pool()[0], "name": "big", "max_nodes": 2}]
    mocks = registered(STACK, node_pools=pools)
    assert len(mocks.of_type("kubernetes:core/v1:Namespace")) == 1
    assert len(mocks.of_type("kubernetes:ray.io/v1:RayCluster")) == 2


def test_a_stack_without_services_declares_the_runtime_only():
    mocks = registered(STACK, services=[])
    assert one(mocks, "kubernetes:ray.io/v1:RayCluster")
    assert not mocks.of_type("pulumi-python:dynamic/gpuserve:ModelRollout")


def test_min_nodes_keeps_gpu_workers_up_with_no_replica_to_place():
    worker = one(registered(STACK, services=[], node_pools=pool(min_nodes=2)),
                 "kubernetes:ray.io/v1:RayCluster").inputs["spec"]["workerGroupSpecs"][0]
    # No service yet: no surge to make room for either.
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (2, 2, 2)
