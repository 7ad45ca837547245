"""The aws target under Pulumi mocks: one property per test, and one snapshot per stack
of the registered resource graph (set UPDATE_SNAPSHOTS=1 to rewrite them on purpose)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pulumi
import pytest
import yaml

from components import program
from components.aws import render
from components.kubernetes import render as k8s_render
from tests.unit.components.pulumi_mocks import RecordingMocks
from tests.unit.components.test_program import settle

REPO = Path(__file__).resolve().parents[3]
SNAPSHOTS = Path(__file__).parent / "snapshots"


def stack_values(name: str, **changes) -> dict:
    config = yaml.safe_load((REPO / "stacks" / f"Pulumi.{name}.yaml").read_text())["config"]
    config = copy.deepcopy(config)
    for key, value in changes.items():
        config[f"gpuserve:{key}"] = value
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def registered(name: str, **changes) -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpuserve", stack=name, preview=False)
    settle(lambda: program.run(stack_values(name, **changes), name))
    return mocks


def one(mocks: RecordingMocks, suffix: str, name: str | None = None):
    (found,) = [r for r in mocks.of_type(suffix) if name is None or r.name == name]
    return found


def load_balancer(mocks: RecordingMocks):
    return one(mocks, "kubernetes:core/v1:Service", "gpu-lb-service")


def test_the_node_group_carries_the_gpu_taint():
    group = one(registered("dev"), "aws:eks/nodeGroup:NodeGroup")
    assert group.inputs["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]


def test_the_node_group_uses_the_nvidia_ami_and_the_configured_capacity():
    group = one(registered("dev"), "aws:eks/nodeGroup:NodeGroup")
    assert (group.inputs["amiType"], group.inputs["capacityType"], group.inputs["instanceTypes"]) == \
        ("AL2023_x86_64_NVIDIA", "SPOT", ["g5.xlarge"])


def test_the_node_role_has_the_worker_cni_and_registry_policies():
    arns = {a.inputs["policyArn"] for a in registered("dev").of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    assert arns == set(render.NODE_POLICIES)


def test_the_device_plugin_tolerates_the_taint_and_selects_the_pool():
    (plugin,) = [d for d in registered("dev").of_type("kubernetes:apps/v1:DaemonSet") if "device-plugin" in d.name]
    pod = plugin.inputs["spec"]["template"]["spec"]
    assert pod["tolerations"] == [k8s_render.GPU_TOLERATION] and pod["nodeSelector"] == {k8s_render.POOL_LABEL: "gpu"}


def test_the_worker_group_tolerates_the_taint_and_asks_for_the_configured_gpus():
    cluster = one(registered("prod"), "kubernetes:ray.io/v1:RayCluster")
    worker = cluster.inputs["spec"]["workerGroupSpecs"][0]
    pod = worker["template"]["spec"]
    assert k8s_render.GPU_TOLERATION in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_the_worker_bounds_cover_the_rollout_surge():
    # prod: 4 replicas x 2 GPUs = 8 GPUs steady (1 node of 8); surge 1 replica = 2 GPUs -> 2 nodes.
    worker = one(registered("prod"), "kubernetes:ray.io/v1:RayCluster").inputs["spec"]["workerGroupSpecs"][0]
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 2)


def test_the_head_runs_no_replicas():
    head = one(registered("dev"), "kubernetes:ray.io/v1:RayCluster").inputs["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_prod_has_gcs_fault_tolerance_on_external_redis():
    spec = one(registered("prod"), "kubernetes:ray.io/v1:RayCluster").inputs["spec"]
    assert spec["gcsFaultToleranceOptions"] == {"redisAddress": "redis.gpuserve.svc.cluster.local:6379"}


def test_no_serve_config_is_declared_on_the_raycluster():
    spec = one(registered("dev"), "kubernetes:ray.io/v1:RayCluster").inputs["spec"]
    assert "serveConfigV2" not in json.dumps(spec)


def test_the_dashboard_token_reaches_the_cluster_only_as_a_secret():
    cluster = one(registered("dev"), "kubernetes:ray.io/v1:RayCluster")
    secret = one(registered("dev"), "kubernetes:core/v1:Secret")
    assert cluster.inputs["spec"]["authOptions"] == {"mode": "token", "secretName": secret.inputs["metadata"]["name"]}


def test_the_load_balancer_is_internal_unless_declared_public():
    service = load_balancer(registered("dev"))
    assert service.inputs["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"


def test_a_public_load_balancer_is_internet_facing_with_tls():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws.update(public_load_balancer=True, tls_certificate_arn="arn:aws:acm:us-west-2:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    annotations = load_balancer(registered("dev", aws=aws)).inputs["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] == "443"


def test_with_tls_the_load_balancer_serves_https_only_never_plain_port_80():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws.update(public_load_balancer=True, tls_certificate_arn="arn:aws:acm:us-west-2:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    ports = load_balancer(registered("dev", aws=aws)).inputs["spec"]["ports"]
    assert [p["port"] for p in ports] == [443]


def test_only_the_splitter_is_on_the_load_balancer_never_the_dashboard_or_serves_hidden_prefixes():
    service = load_balancer(registered("dev")).inputs["spec"]
    assert all(p["targetPort"] == k8s_render.SPLITTER_PORT for p in service["ports"])
    assert service["selector"]["app.kubernetes.io/name"] == "gpuserve-splitter"


def test_the_splitter_runs_two_pods_that_never_all_go_at_once():
    mocks = registered("dev")
    deployment = one(mocks, "kubernetes:apps/v1:Deployment").inputs["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(mocks, "kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 1
    args = deployment["template"]["spec"]["containers"][0]["args"]
    assert "-upstream=http://gpuserve-gpu-serve-proxies.gpuserve.svc.cluster.local:8000" in args


def test_the_rollout_reaches_the_dashboard_through_the_api_servers_port_forward():
    rollout = one(registered("dev"), "ModelRollout")
    assert rollout.inputs["dashboard_url"] == "k8s-portforward://gpuserve/gpuserve-gpu:8265"
    assert "kubeconfig" not in rollout.inputs  # an existing cluster without a file: the ambient one


def test_a_created_cluster_gives_the_rollout_its_kubeconfig():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws["create_cluster"] = True
    rollout = one(registered("dev", aws=aws), "ModelRollout")
    assert "eks" in rollout.inputs["kubeconfig"] and "get-token" in rollout.inputs["kubeconfig"]


def test_no_local_resource_is_registered_for_a_cloud_target():
    types = {r.typ for r in registered("dev").resources}
    assert not [t for t in types if "LocalRayHead" in t or "LocalServe" in t]


def test_a_new_cluster_is_created_when_asked():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws["create_cluster"] = True
    cluster = one(registered("dev", aws=aws), "aws:eks/cluster:Cluster")
    assert cluster.inputs["vpcConfig"]["subnetIds"] == aws["subnet_ids"]


@pytest.mark.parametrize("name", ["dev", "staging", "prod"])
def test_the_resource_graph_matches_its_snapshot(name):
    mocks = registered(name)
    # The mock monitor keys registrations by URN, whose type chain names the parents.
    chains = {urn.rsplit("::", 1)[1]: urn.split("::")[2] for urn in pulumi.runtime.settings.get_monitor().resources}
    graph = sorted(
        [{"type": r.typ, "name": r.name, "parents": chains.get(r.name, "").split("$")[:-1],
          "key": _key_properties(r.typ, r.inputs)} for r in mocks.resources],
        key=lambda row: (row["type"], row["name"]),
    )
    path = SNAPSHOTS / f"{name}.json"
    text = json.dumps(graph, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(text)
    # A missing snapshot fails too: writing it here would pass a test that checked nothing.
    assert path.exists(), f"no snapshot {path.name}; write it on purpose with UPDATE_SNAPSHOTS=1 and review it"
    assert json.loads(path.read_text()) == json.loads(text), f"{name} graph changed; review and UPDATE_SNAPSHOTS=1"


def _key_properties(typ: str, inputs: dict) -> dict:
    keep = {
        "aws:eks/nodeGroup:NodeGroup": ("amiType", "capacityType", "instanceTypes", "scalingConfig", "taints", "labels"),
        "kubernetes:ray.io/v1:RayCluster": ("spec",),
        "kubernetes:core/v1:Service": ("metadata", "spec"),
        "kubernetes:apps/v1:DaemonSet": ("metadata",),
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    }.get(typ, ())
    return {k: inputs.get(k) for k in keep}


def test_the_eks_api_endpoint_gpuserve_creates_is_private_by_default():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws["create_cluster"] = True
    vpc = one(registered("dev", aws=aws), "aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["endpointPublicAccess"]) == (True, False)
    assert "publicAccessCidrs" not in vpc


def test_the_eks_api_endpoint_is_public_only_to_the_declared_networks():
    aws = yaml.safe_load((REPO / "stacks/Pulumi.dev.yaml").read_text())["config"]["gpuserve:aws"]
    aws.update(create_cluster=True, api_public_cidrs=["203.0.113.0/24"])
    vpc = one(registered("dev", aws=aws), "aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_the_stacks_environment_reaches_the_raycluster_and_every_rollout_for_the_policy_pack():
    mocks = registered("prod")
    cluster = one(mocks, "kubernetes:ray.io/v1:RayCluster")
    assert cluster.inputs["metadata"]["labels"]["gpuserve.io/environment"] == "prod"
    rollouts = [r for r in mocks.resources if r.typ.endswith("ModelRollout")]
    assert rollouts and all(r.inputs["spec"]["environment"] == "prod" for r in rollouts)
