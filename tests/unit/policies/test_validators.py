"""Each policy with passing and failing resources built by hand; exact messages."""

from __future__ import annotations

import re

import pytest

from policies import validators as v
from policies.pack import POLICIES

PROD = "urn:pulumi:prod::gpuserve::pulumi-python:dynamic/gpuserve:ModelRollout::llm-rollout"
DEV = "urn:pulumi:dev::gpuserve::pulumi-python:dynamic/gpuserve:ModelRollout::llm-rollout"


def spec(**changes) -> dict:
    base = {
        "service": "llm", "pool": "gpu", "request_timeout_s": 30.0,
        "version": {"version": "v2", "num_gpus": 1.0},
        "scaling": {"num_replicas": 4, "max_queued_requests": 64, "graceful_shutdown_timeout_s": 30.0},
        "rollout": {"max_surge_percent": 25, "bake_seconds": 30.0, "deadline_minutes": 120.0,
                    "gates": {"enabled": True}},
    }
    for path, value in changes.items():
        node = base
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return base


def pool(gpus: float, name: str = "gpu") -> dict:
    return {"pool": name, "total_gpus": gpus}


def test_every_policy_has_a_kebab_case_name_and_one_sentence():
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names)) == 13
    for policy in POLICIES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", policy.name)
        assert policy.description.endswith(".") and policy.description.count(". ") == 0


def test_a_tainted_gpu_node_group_passes():
    assert v.gpu_node_pool_tainted({"taints": [{"key": "nvidia.com/gpu", "value": "true",
                                                "effect": "NO_SCHEDULE"}]}) == []


def test_an_untainted_gpu_node_group_fails():
    assert v.gpu_node_pool_tainted({"taints": []}) == [
        "GPU node groups must carry the taint nvidia.com/gpu=true:NoSchedule so only GPU workloads land "
        "there; taints seen: none. Add it to the node group's taints."]


def test_instance_types_outside_the_allowlist_fail():
    config = {"allowedInstanceTypes": ["g5.xlarge"]}
    assert v.gpu_instance_allowlist({"instanceTypes": ["g5.xlarge"]}, config) == []
    assert v.gpu_instance_allowlist({"instanceTypes": ["p5.48xlarge"]}, config) == [
        "GPU instance types must come from the allowlist ['g5.xlarge']; seen ['p5.48xlarge']. "
        "Choose an allowed type or extend allowedInstanceTypes in the policy config."]


def test_the_gpu_budget_counts_pool_capacity_and_rollout_surge():
    rollouts = [{"spec": spec()}]
    assert v.gpu_budget([pool(8)], rollouts, {"maxGpus": 8}) == []
    assert v.gpu_budget([pool(16)], rollouts, {"maxGpus": 8}) == [
        "total GPUs must stay within the budget of 8; node pools can scale to 16 GPUs and services need "
        "4 steady + 1 for a rollout surge. Lower max_nodes, replicas or max_surge_percent, or raise maxGpus "
        "in the policy config."]


def fitted(pool_gpus: float, others: float = 0.0, **changes) -> dict:
    return {**spec(**changes), "capacity": {"pool_gpus": pool_gpus, "others_steady_gpus": others}}


def test_a_surge_that_fits_the_pool_passes():
    assert v.rollout_surge_fits_capacity(fitted(5)) == []


def test_a_surge_that_does_not_fit_the_pool_fails():
    assert v.rollout_surge_fits_capacity(fitted(4)) == [
        "a rollout of llm must fit its node pool 'gpu': peak (N + ceil(p% * N)) x gpus_per_replica = "
        "(4 + 1) x 1 = 5 GPUs > 4 GPUs in the pool. Lower max_surge_percent or replicas, or grow the pool."]


def test_other_services_on_the_pool_count_against_the_surge():
    messages = v.rollout_surge_fits_capacity(fitted(6, others=2))
    assert messages[0].endswith("= 5 GPUs plus 2 for other services > 6 GPUs in the pool. Lower "
                                "max_surge_percent or replicas, or grow the pool.")


def test_fractional_gpus_count_in_the_surge_peak():
    assert v.rollout_surge_fits_capacity(fitted(2.5, version__num_gpus=0.5)) == []


def test_surge_bounds_are_stricter_in_prod():
    assert v.rollout_surge_bounds(spec(rollout__max_surge_percent=100), False, {}) == []
    assert v.rollout_surge_bounds(spec(rollout__max_surge_percent=100), True, {}) == [
        "max_surge_percent of llm must lie in prod within 1..50; seen 100. "
        "Set rollout.max_surge_percent to at most 50."]


def test_prod_forbids_a_zero_bake_and_disabled_gates():
    assert v.rollout_has_gates(spec(), True, {}) == []
    assert v.rollout_has_gates(spec(rollout__bake_seconds=0, rollout__gates={"enabled": False}), True, {}) == [
        "prod rollouts of llm must keep health gates; seen gates.enabled false. Remove it or set it to true.",
        "prod rollouts of llm must bake at least 1s per wave; seen 0. Raise rollout.bake_seconds."]
    assert v.rollout_has_gates(spec(rollout__bake_seconds=0), False, {}) == []


@pytest.mark.parametrize("gates, message", [
    ({"min_success_rate": 0.0}, "gates.min_success_rate at least 0.95; seen 0"),
    ({"max_latency_ratio": 1e9}, "gates.max_latency_ratio at most 5; seen 1e+09"),
    ({"min_probes": 1}, "gates.min_probes at least 10; seen 1"),
    ({"min_samples": 1}, "gates.min_samples at least 10; seen 1"),
    ({"latency_p_value": 0.5}, "gates.latency_p_value at most 0.05; seen 0.5"),
])
def test_prod_gates_that_cannot_fail_are_refused(gates, message):
    assert v.rollout_has_gates(spec(rollout__gates=gates), False, {}) == []
    (found,) = v.rollout_has_gates(spec(rollout__gates=gates), True, {})
    assert message in found and found.startswith("prod rollouts of llm need ")


def test_prod_needs_two_replicas():
    assert v.prod_min_replicas(spec(scaling__num_replicas=1), False, {}) == []
    assert v.prod_min_replicas(spec(scaling__num_replicas=1), True, {}) == [
        "prod services must run at least 2 replicas; llm runs 1. "
        "Raise num_replicas (or autoscaling.min_replicas) to 2."]


def test_graceful_shutdown_must_cover_the_request_timeout():
    assert v.graceful_shutdown_covers_requests(spec()) == []
    assert v.graceful_shutdown_covers_requests(spec(scaling__graceful_shutdown_timeout_s=5.0)) == [
        "graceful_shutdown_timeout_s of llm must cover its request timeout, so a draining replica finishes "
        "what it accepted; seen 5s < request_timeout_s 30s. Raise graceful_shutdown_timeout_s to at least 30."]


def test_load_shedding_needs_a_bounded_queue():
    assert v.load_shedding_configured(spec(), {}) == []
    assert v.load_shedding_configured(spec(scaling__max_queued_requests=None), {}) == [
        "max_queued_requests of llm must be set (1..10000) so overload gets 503s, not an unbounded queue; "
        "seen None. Set max_queued_requests."]


def lb(scheme: str, public: str = "false", tls: bool = False, ports=None) -> dict:
    annotations = {v.SCHEME: scheme, v.PUBLIC: public}
    if tls:
        annotations[v.SSL_CERT] = "arn:aws:acm:us-east-1:1:certificate/x"
    return {"metadata": {"annotations": annotations},
            "spec": {"type": "LoadBalancer", "ports": ports or [{"port": 80, "targetPort": 8000}]}}


def test_an_internal_load_balancer_passes():
    assert v.lb_internal_unless_declared(lb("internal")) == []


def test_an_undeclared_public_load_balancer_without_tls_fails_twice():
    assert v.lb_internal_unless_declared(lb("internet-facing")) == [
        'load balancers must be internal unless declared public; seen scheme internet-facing without '
        'gpuserve.io/public: "true". Set gpuserve:aws.public_load_balancer: true or keep it internal.',
        "a public load balancer must terminate TLS; seen no service.beta.kubernetes.io/aws-load-balancer-ssl-cert "
        "annotation. Set gpuserve:aws.tls_certificate_arn."]
    assert v.lb_internal_unless_declared(lb("internet-facing", "true", tls=True)) == []


def test_the_dashboard_is_never_exposed_by_a_load_balancer_whatever_its_annotations_say():
    ports = [{"port": 8265, "targetPort": 8265}]
    assert v.dashboard_not_public_service(lb("internal")) == []  # no dashboard port: fine
    message = ("the Ray dashboard (port 8265) must never be exposed by a LoadBalancer Service; seen ports "
               "[{'port': 8265, 'targetPort': 8265}]. Remove them; reach the dashboard through the Kubernetes "
               "API (port-forward).")
    assert v.dashboard_not_public_service(lb("internet-facing", "true", True, ports)) == [message]
    assert v.dashboard_not_public_service(lb("internal", ports=ports)) == [message]


# -- the bypasses found by trying (issue "Bad input and exposure") ---------------------------
def test_bypass_a_load_balancer_without_a_scheme_annotation_exposing_the_dashboard_is_refused():
    service = {"metadata": {"annotations": {}},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 8265, "targetPort": "dashboard"}]}}
    assert v.dashboard_not_public_service(service)
    # ... and without the annotation the load balancer is internet-facing, so undeclared:
    assert v.lb_internal_unless_declared(service)[0].startswith(
        "load balancers must be internal unless declared public; seen scheme internet-facing (no scheme annotation)")


@pytest.mark.parametrize("head", [{"serviceType": "LoadBalancer"}, {"serviceType": "NodePort"},
                                  {"serviceType": "ClusterIP", "headService": {"spec": {"type": "LoadBalancer"}}}])
def test_bypass_a_raycluster_head_service_of_type_load_balancer_is_refused(head):
    assert v.ray_head_not_exposed({"spec": {"headGroupSpec": head}})[0].startswith(
        "a RayCluster's head Service must stay ClusterIP")
    assert v.ray_head_not_exposed({"spec": {"headGroupSpec": {"serviceType": "ClusterIP"}}}) == []


@pytest.mark.parametrize("props, where", [
    ({"spec": {"containers": [{"env": [{"name": "HF_TOKEN", "value": "abc123"}]}]}},
     "spec.containers[0].env[0].value (HF_TOKEN)"),
    ({"spec": {"containers": [{"args": ["--api-key", "abc123"]}]}}, "spec.containers[0].args[1] (after --api-key)"),
    ({"spec": {"containers": [{"args": ["--password=abc123"]}]}},
     "spec.containers[0].args[0] (a secret on a command line)"),
    ({"spec": {"redisAddress": "redis://:hunter2@redis.internal:6379"}}, "spec.redisAddress (credentials in a URL)"),
    ({"spec": {"cache": "AKIAIOSFODNN7EXAMPLE"}}, "spec.cache (an AWS access key id)"),
    ({"data": {"model_auth": "hf_" + "a" * 34}}, "data.model_auth (a Hugging Face token)"),
])
def test_bypass_plaintext_secrets_are_found_by_value_and_by_env_or_flag_name(props, where):
    (message,) = v.secrets_are_secret("kubernetes:apps/v1:Deployment", props)
    assert f"plaintext at {where}." in message


def test_secrets_passed_as_pulumi_secrets_or_references_are_not_leaks():
    props = {"spec": {"containers": [{"env": [{"name": "HF_TOKEN", "value": v.Secret("abc")},
                                              {"name": "TOKEN_PATH", "value": "/var/run/t"},
                                              {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}],
                                      "args": ["--token", v.Secret("abc"), "-serve-api=http://h:8265"]}]}}
    assert v.secrets_are_secret("kubernetes:apps/v1:Deployment", props) == []


def test_bypass_a_pool_of_zero_gpus_does_not_turn_the_surge_check_off():
    assert v.rollout_surge_fits_capacity(fitted(0))[0].endswith(
        "which declares 0 GPUs: a pool with no GPUs holds no replica. Declare the pool's GPUs.")


def test_bypass_a_replica_larger_than_a_node_is_refused():
    spec_ = fitted(8, version__num_gpus=2.0)
    spec_["capacity"]["gpus_per_node"] = 1
    assert v.rollout_surge_fits_capacity(spec_) == [
        "a replica of llm needs 2 GPUs but a node of pool 'gpu' has 1: a replica runs on one node, so it would "
        "never be placed. Lower ray_actor_options.num_gpus or use a pool with larger nodes."]


def test_bypass_prod_comes_from_the_stacks_environment_whatever_its_name():
    assert v.is_prod(DEV.replace(":dev::", ":eu-main::"), {}, {"spec": {"environment": "prod"}})
    assert v.is_prod(DEV, {}, {"metadata": {"labels": {"gpuserve.io/environment": "prod"}}})
    assert not v.is_prod(DEV, {}, {"spec": {"environment": "staging"}})


def test_the_rollout_reaches_the_dashboard_on_loopback_or_through_the_api_servers_port_forward():
    assert v.dashboard_not_public_rollout({"dashboard_url": "http://127.0.0.1:18265"}) == []
    assert v.dashboard_not_public_rollout({"dashboard_url": "k8s-portforward://serving/gpuserve-gpu:8265"}) == []
    # In-cluster DNS from the operator's machine would carry the token in plain HTTP.
    assert v.dashboard_not_public_rollout({"dashboard_url": "http://c-head-svc.ns.svc.cluster.local:8265"})
    assert v.dashboard_not_public_rollout({"dashboard_url": "http://ray.example.com:8265"}) == [
        "the Ray dashboard must be reached on loopback or through the Kubernetes API's port-forward, never in "
        "plain HTTP across a network; seen http://ray.example.com:8265. On a Kubernetes target use "
        "k8s-portforward://<namespace>/<raycluster>:8265."]


def test_prod_rayclusters_need_gcs_fault_tolerance():
    assert v.ha_in_prod({"spec": {"gcsFaultToleranceOptions": {"redisAddress": "r:6379"}}}, True) == []
    assert v.ha_in_prod({"spec": {}}, False) == []
    assert v.ha_in_prod({"spec": {}}, True) == [
        "prod RayClusters must have GCS fault tolerance on an external Redis; seen no "
        "gcsFaultToleranceOptions.redisAddress. Set gpuserve:aws.ha: true and redis_address."]


def test_tokens_must_arrive_as_secrets():
    assert v.secrets_are_secret("kubernetes:core/v1:Secret", {"stringData": {"auth_token": v.Secret("x")}}) == []
    assert v.secrets_are_secret("x", {"token_path": "/tmp/t", "authOptions": {"secretName": "s"}}) == []
    assert v.secrets_are_secret("kubernetes:core/v1:Secret", {"stringData": {"auth_token": "plain"}}) == [
        "tokens and passwords must reach kubernetes:core/v1:Secret only as Pulumi secrets; plaintext at "
        "stringData. Wrap them with pulumi.Output.secret() or `pulumi config set --secret`."]


def test_a_redis_password_by_reference_is_not_a_leak():
    props = {"spec": {"gcsFaultToleranceOptions": {"redisPassword": {"valueFrom": {"secretKeyRef": {"name": "r"}}}}}}
    assert v.secrets_are_secret("kubernetes:ray.io/v1:RayCluster", props) == []


@pytest.mark.parametrize("urn,prod", [(PROD, True), (DEV, False)])
def test_prod_is_recognised_from_the_stack_in_the_urn(urn, prod):
    assert v.is_prod(urn, {}) is prod


@pytest.mark.parametrize("stack,prod", [("production", True), ("prod-eu", True), ("Prod_us", True),
                                        ("producer", False), ("preprod", False), ("staging", False)])
def test_a_stack_whose_name_says_prod_is_prod_even_if_unlisted(stack, prod):
    assert v.is_prod(PROD.replace(":prod::", f":{stack}::"), {}) is prod


def test_the_pack_wires_a_validator_to_its_resource_type():
    from pulumi_policy import PolicyResourceOptions, ResourceValidationArgs

    (policy,) = [p for p in POLICIES if p.name == "rollout-surge-bounds"]
    opts = PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 custom_timeouts=None, additional_secret_outputs=[])
    seen: list[str] = []
    args = ResourceValidationArgs(v.ROLLOUT, {"spec": spec(rollout__max_surge_percent=80)}, PROD, "llm-rollout",
                                  opts, None, {})
    policy.validate(args, lambda message, urn=None: seen.append(message))
    assert seen == ["max_surge_percent of llm must lie in prod within 1..50; seen 80. "
                    "Set rollout.max_surge_percent to at most 50."]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_shipped_cloud_stacks_pass_every_resource_policy(stack):
    """The policies over the aws resource graph the program registers (under mocks).
    secrets-are-secret is left out: mocks hand inputs over with secrets unwrapped."""
    from tests.unit.components.test_aws_program import registered

    urn = f"urn:pulumi:{stack}::gpuserve::x::y"
    prod = v.is_prod(urn, {})
    config = {"allowedInstanceTypes": ["g5.xlarge", "g5.2xlarge", "g6.2xlarge", "p4d.24xlarge"]}
    messages = []
    for resource in registered(stack).resources:
        props = resource.inputs
        if resource.typ == v.NODE_GROUP:
            messages += v.gpu_node_pool_tainted(props) + v.gpu_instance_allowlist(props, config)
        elif resource.typ == v.K8S_SERVICE:
            messages += v.lb_internal_unless_declared(props) + v.dashboard_not_public_service(props)
        elif resource.typ == v.RAY_CLUSTER:
            messages += v.ha_in_prod(props, prod)
        elif resource.typ == v.ROLLOUT:
            spec = props["spec"]
            messages += (v.rollout_surge_fits_capacity(spec) + v.rollout_surge_bounds(spec, prod, {})
                         + v.rollout_has_gates(spec, prod, {}) + v.prod_min_replicas(spec, prod, {})
                         + v.graceful_shutdown_covers_requests(spec) + v.load_shedding_configured(spec, {})
                         + v.dashboard_not_public_rollout(props))
    assert messages == []


def test_every_policy_has_a_config_schema_with_defaults():
    for policy in POLICIES:
        assert policy.config_schema is not None, policy.name
        assert all("default" in prop for prop in policy.config_schema.properties.values()), policy.name


def test_headroom_config_tightens_the_surge_check():
    assert v.rollout_surge_fits_capacity(fitted(5)) == []
    assert v.rollout_surge_fits_capacity(fitted(5), {"headroomGpus": 1}) != []


def test_plain_reads_through_the_policy_sdks_proxies_and_turns_unknowns_into_none():
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

    props = unknown_checking_proxy({"url": UNKNOWN_STRING_VALUE, "spec": {"pools": [{"gpus": 4}, UNKNOWN_STRING_VALUE]},
                                    "token": v.Secret("s3cret")})
    copied = v.plain(props)
    assert copied == {"url": None, "spec": {"pools": [{"gpus": 4}, None]}, "token": "s3cret"}
    assert isinstance(copied["token"], v.Secret)


def test_a_secret_map_marks_every_string_in_it_so_a_secrets_data_passes():
    # Output.secret({"auth_token": ...}) reaches the pack as one secret holding a map.
    data = v.mark_secret({"auth_token": "dG9r", "nested": ["x", 3]})
    assert isinstance(data["auth_token"], v.Secret) and isinstance(data["nested"][0], v.Secret)
    assert v.secrets_are_secret("kubernetes:core/v1:Secret", {"data": data}) == []
    assert v.secrets_are_secret("kubernetes:core/v1:Secret", {"data": {"auth_token": "dG9r"}})


def test_where_a_secret_is_is_not_a_secret_a_token_file_flag_and_a_secret_volume_pass():
    # The splitter's own pod, as the kubernetes and aws targets render it.
    pod = {"containers": [{"args": ["-token-file=/var/run/gpuserve/token", "--password-path", "/run/pw"]}],
           "volumes": [{"name": "token", "secret": {"secretName": "t", "items": [{"key": "auth_token", "path": "t"}]}}]}
    assert v.secrets_are_secret("kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": pod}}}) == []
    pod["containers"][0]["args"].append("--api-token=abcdef")
    assert v.secrets_are_secret("kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": pod}}})
