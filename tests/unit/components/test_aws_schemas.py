"""Everything the aws target renders validates against the real schemas: the Kubernetes
OpenAPI (kubernetes-validate), the KubeRay RayCluster CRD (fetched at setup at the version in scripts/versions.env), and
botocore's EKS model."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import botocore.session
import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.aws import render
from components.kubernetes import render as k8s_render
from components.config import AwsStack, check_stack_file
from tests.conftest import kuberay_crd

REPO = Path(__file__).resolve().parents[3]
K8S_VERSION = "1.33.0"
STACKS = ["dev", "staging", "prod"]


def stack(name: str) -> AwsStack:
    return check_stack_file(REPO / "stacks" / f"Pulumi.{name}.yaml")


@functools.cache
def raycluster_schema() -> dict:
    crd = yaml.safe_load(kuberay_crd("ray.io_rayclusters.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@functools.cache
def eks_model():
    return botocore.session.get_session().get_service_model("eks")


def k8s_valid(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def rendered_k8s(name: str) -> list[dict]:
    config = stack(name)
    objects = [k8s_render.namespace(config.aws.namespace),
               k8s_render.dashboard_secret("gpuserve-gpu", config.aws.namespace, "t" * 64),
               render.serve_service("gpuserve-gpu", config.aws),
               k8s_render.serve_proxies_service("gpuserve-gpu", config.aws.namespace),
               k8s_render.splitter_deployment("gpuserve-gpu", config.aws, "gpuserve-gpu-dashboard-token"),
               k8s_render.splitter_disruption_budget("gpuserve-gpu", config.aws.namespace)]
    for pool in config.node_pools:
        objects += [k8s_render.device_plugin_daemonset(pool), k8s_render.dcgm_exporter_daemonset(pool)]
    return objects


@pytest.mark.parametrize("name", STACKS)
def test_kubernetes_objects_validate_against_the_kubernetes_openapi(name):
    for manifest in rendered_k8s(name):
        k8s_valid(manifest)


@pytest.mark.parametrize("name", STACKS)
def test_the_raycluster_validates_against_the_kuberay_crd(name):
    config = stack(name)
    for pool in config.node_pools:
        manifest = k8s_render.ray_cluster(config, pool, f"gpuserve-{pool.name}", "secret")
        jsonschema.validate(manifest, raycluster_schema())


def test_a_raycluster_with_a_wrong_field_fails_the_crd_schema():
    # The check above can fail: a misspelt field is refused.
    config = stack("prod")
    manifest = k8s_render.ray_cluster(config, config.node_pools[0], "c", "s")
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, raycluster_schema())


def test_a_service_with_a_bad_port_fails_the_kubernetes_schema():
    manifest = render.serve_service("c", stack("dev").aws)
    manifest["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_valid(manifest)


def eks_problems(request: dict) -> list[str]:
    """What botocore's EKS model refuses in a CreateNodegroup request: shapes (types,
    required members, lengths, ranges) and the enums it does not check by itself."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = eks_model().operation_model("CreateNodegroup").input_shape
    members = shape.members
    problems = []
    try:
        validate_parameters(request, shape)
    except ParamValidationError as exc:
        problems.append(str(exc))
    for field in ("amiType", "capacityType"):
        if request[field] not in members[field].enum:
            problems.append(f"{field}: {request[field]}")
    problems += [f"taint effect: {t['effect']}" for t in request["taints"]
                 if t["effect"] not in members["taints"].member.members["effect"].enum]
    return problems


def node_group_request(pool, template=None) -> dict:
    return render.node_group_request(pool, "ml", "arn:aws:iam::123456789012:role/n",
                                     ["subnet-0a1b2c3d4e5f60001"], template)


@pytest.mark.parametrize("name", STACKS)
def test_node_group_requests_fit_botocores_eks_model(name):
    for pool in stack(name).node_pools:
        for template in (None, "lt-0123456789abcdef0"):
            assert eks_problems(node_group_request(pool, template)) == []


def test_the_eks_check_refuses_an_unknown_capacity_type_and_a_bad_size():
    request = node_group_request(stack("dev").node_pools[0])
    request["capacityType"] = "RESERVED"
    request["scalingConfig"]["minSize"] = -1
    problems = eks_problems(request)
    assert "capacityType: RESERVED" in problems
    assert any("minSize" in p for p in problems)


def test_the_launch_template_user_data_carries_the_pool_labels():
    import base64

    pool = stack("prod").node_pools[0]
    text = base64.b64decode(render.user_data(pool)).decode()
    assert "kind: NodeConfig" in text
    assert f"--node-labels={render.GPU_TYPE_LABEL}=a100,{render.POOL_LABEL}=gpu" in text
    assert json.dumps(render.launch_template_args(pool)["block_device_mappings"][0]["ebs"]["volume_size"]) == "500"


@pytest.mark.parametrize("cidrs", [[], ["203.0.113.0/24", "2001:db8::/32"]])
def test_the_cluster_vpc_config_fits_botocores_create_cluster_and_is_private_unless_networks_are_listed(cidrs):
    from botocore.validate import validate_parameters

    aws = stack("dev").aws.model_copy(update={"api_public_cidrs": cidrs})
    config = render.cluster_vpc_config(aws)
    shape = eks_model().operation_model("CreateCluster").input_shape.members["resourcesVpcConfig"]
    validate_parameters(config, shape)  # raises ParamValidationError on any unknown or mistyped member
    assert config["endpointPublicAccess"] is bool(cidrs)
    assert config.get("publicAccessCidrs", []) == cidrs
