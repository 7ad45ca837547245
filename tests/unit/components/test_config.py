"""Stack config validation: every bad key is reported at once, with path, value and rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.config import ConfigError, LocalStack, config_from_pulumi, load_stack_config

STACKS = Path(__file__).resolve().parents[3] / "stacks"

VALID = {
    "target": "local",
    "node_pools": [{"name": "gpu", "gpus": 4}],
    "services": [{"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 2}],
}


def with_change(path: str, value):
    """Copy of VALID with `path` (dotted, [i] for list items) set to value."""
    document = copy.deepcopy(VALID)
    node = document
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        key = int(part) if part.isdigit() else part
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return document


def problems(document, stack: str = "test") -> list[tuple[str, object, str]]:
    with pytest.raises(ConfigError) as info:
        load_stack_config(document, stack)
    return info.value.problems


def test_the_minimal_local_config_is_valid_and_fills_defaults():
    config = load_stack_config(copy.deepcopy(VALID), "test")
    assert isinstance(config, LocalStack)
    assert config.services[0].rollout.max_surge_percent == 25
    assert config.local.http_port == 18000


@pytest.mark.parametrize("stack_file", sorted(STACKS.glob("Pulumi.*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_stack_config_is_valid(stack_file):
    values = {k: v if isinstance(v, str) else __import__("json").dumps(v)
              for k, v in yaml.safe_load(stack_file.read_text())["config"].items()}
    load_stack_config(config_from_pulumi(values), stack_file.stem.split(".")[1])


@pytest.mark.parametrize(
    ("path", "value", "reported_path", "allowed"),
    [
        pytest.param("services[0].rollout.max_surge_percent", 150,
                     "gpuserve:services[0].rollout.max_surge_percent", "less than or equal to 100",
                     id="surge above 100 is refused"),
        pytest.param("services[0].rollout.max_surge_percent", 0,
                     "gpuserve:services[0].rollout.max_surge_percent", "greater than or equal to 1",
                     id="surge of 0 is refused"),
        pytest.param("services[0].num_replicas", 0,
                     "gpuserve:services[0].num_replicas", "greater than or equal to 1",
                     id="zero replicas is refused"),
        pytest.param("services[0].num_replicas", "two",
                     "gpuserve:services[0].num_replicas", "valid integer",
                     id="replicas of the wrong type are refused"),
        pytest.param("services[0].pool", "cpu",
                     "gpuserve:services[0].pool", "a defined node pool",
                     id="a service on an undefined pool is refused"),
        pytest.param("services[0].colour", "blue",
                     "gpuserve:services[0].colour", "a known key",
                     id="an unknown service key is refused"),
        pytest.param("services[0].version", "v1--x",
                     "gpuserve:services[0].version", "match pattern",
                     id="a version with a double dash is refused"),
        pytest.param("services[0].ray_actor_options.num_gpus", 0,
                     "gpuserve:services[0].ray_actor_options.num_gpus", "greater than 0",
                     id="a replica without GPUs is refused"),
        pytest.param("services[0].rollout.canary_percent", 101,
                     "gpuserve:services[0].rollout.canary_percent", "less than or equal to 100",
                     id="canary percent above 100 is refused"),
        pytest.param("services[0].rollout.traffic_steps", [50, 10],
                     "gpuserve:services[0].rollout.traffic_steps", "strictly increasing",
                     id="decreasing traffic steps are refused"),
        pytest.param("node_pools[0].gpus", -1,
                     "gpuserve:node_pools[0].gpus", "greater than or equal to 1",
                     id="negative GPUs are refused"),
        pytest.param("target", "gcp", "gpuserve:target", "'local', 'kubernetes' or 'aws'",
                     id="an unknown target is refused"),
        pytest.param("local.http_port", 80, "gpuserve:local.http_port", "greater than or equal to 1024",
                     id="a privileged port is refused"),
        pytest.param("services[0].num_replicas", 5, "gpuserve:services[0].num_replicas",
                     "GPUs of pool 'gpu' (4)", id="more steady-state GPUs than the pool has are refused"),
        pytest.param("services[0].version", "v9", "gpuserve:services[0].version",
                     "a model artifact that exists", id="a version with no shipped weights is refused"),
        pytest.param("services[0].working_dir", "./myapp", "gpuserve:services[0].working_dir",
                     "a local directory goes in code_dir", id="a local working_dir points to code_dir"),
        pytest.param("services[0].code_dir", "no/such/dir", "gpuserve:services[0].code_dir",
                     "an existing directory", id="a missing code_dir is refused"),
        pytest.param("services[0].deployment", "has space", "gpuserve:services[0].deployment",
                     "pattern", id="a deployment name Serve cannot have is refused"),
        pytest.param("local.public_port", 18000, "gpuserve:local.http_port",
                     "a port not used by public_port", id="the splitter and Serve cannot share a port"),
        pytest.param("services[0].rollout", {"bake_seconds": 900}, "gpuserve:services[0].rollout",
                     "bake_seconds < step_timeout_seconds < deadline_minutes x 60",
                     id="a bake longer than a step's timeout is refused"),
        pytest.param("services[0].rollout", {"step_timeout_seconds": 7200, "deadline_minutes": 60},
                     "gpuserve:services[0].rollout", "step_timeout_seconds < deadline_minutes x 60",
                     id="a step timeout past the deadline is refused"),
    ],
)
def test_bad_values_are_reported_with_path_value_and_rule(path, value, reported_path, allowed):
    found = problems(with_change(path, value))
    assert [p for p in found if p[0] == reported_path and allowed in p[2]], found


def test_every_problem_is_listed_in_one_error():
    document = with_change("services[0].num_replicas", 0)
    document["services"][0]["rollout"] = {"max_surge_percent": 500}
    document["local"] = {"http_port": "x"}
    document["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        load_stack_config(document, "dev")
    message = str(info.value)
    for path in ("gpuserve:services[0].num_replicas", "gpuserve:services[0].rollout.max_surge_percent",
                 "gpuserve:local.http_port", "gpuserve:bogus"):
        assert path in message
    assert message.startswith("invalid stack config for stack 'dev' (4 problems); nothing was changed")
    assert "got 500" in message and "got 'x'" in message


def test_a_service_rollout_overrides_only_the_keys_it_names():
    document = copy.deepcopy(VALID)
    document["rollout"] = {"bake_seconds": 5, "gates": {"min_probes": 7, "min_success_rate": 0.9}}
    document["services"][0]["rollout"] = {"gates": {"min_success_rate": 0.95}}
    rollout = load_stack_config(document, "test").services[0].rollout
    assert (rollout.bake_seconds, rollout.gates.min_probes, rollout.gates.min_success_rate) == (5, 7, 0.95)


def test_pulumi_values_are_decoded_from_json_and_other_namespaces_ignored():
    document = config_from_pulumi({"gpuserve:target": "local", "gpuserve:node_pools": '[{"name": "gpu", "gpus": 2}]',
                                   "aws:region": "us-east-1"})
    assert document == {"target": "local", "node_pools": [{"name": "gpu", "gpus": 2}]}


# -- fuzz: any single bad leaf yields the one clear error ---------------------------

BAD_LEAVES = {
    "services[0].num_replicas": st.one_of(st.integers(max_value=0), st.text(max_size=3), st.just(None)),
    "services[0].rollout.max_surge_percent": st.one_of(st.integers(max_value=0), st.integers(min_value=101)),
    "services[0].max_queued_requests": st.integers(max_value=0),
    "services[0].graceful_shutdown_timeout_s": st.floats(max_value=-0.001, allow_nan=False),
    "services[0].rollout.gates.min_success_rate": st.floats(min_value=1.001, allow_nan=False, allow_infinity=False),
    "services[0].name": st.from_regex(r"[A-Z_ ]{1,5}", fullmatch=True),
    "node_pools[0].gpus": st.integers(max_value=0),
    "local.dashboard_port": st.integers(max_value=1023),
    "services[0].extra_key": st.integers(),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_invalid_leaf_yields_one_error_naming_its_path(data):
    path = data.draw(st.sampled_from(sorted(BAD_LEAVES)))
    value = data.draw(BAD_LEAVES[path])
    found = problems(with_change(path, value))
    assert any(p[0] == f"gpuserve:{path}" for p in found), (path, value, found)


# -- the aws target --------------------------------------------------------------------

def aws_document(name: str = "prod") -> dict:
    values = yaml.safe_load((STACKS / f"Pulumi.{name}.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("gpuserve:")}


@pytest.mark.parametrize(
    ("change", "reported_path", "allowed"),
    [
        pytest.param(lambda d: d["node_pools"][0].update(instance_types=["m5.xlarge"]),
                     "gpuserve:node_pools[0].instance_types[0]", "match pattern",
                     id="a non-GPU instance family is refused"),
        pytest.param(lambda d: d["aws"].update(public_load_balancer=True),
                     "gpuserve:aws.public_load_balancer", "a public endpoint needs TLS",
                     id="a public load balancer without TLS is refused in prod"),
        pytest.param(lambda d: d["aws"].update(redis_address=None),
                     "gpuserve:aws.redis_address", "external Redis", id="ha without Redis is refused"),
        pytest.param(lambda d: d["node_pools"][0].update(capacity_type="RESERVED"),
                     "gpuserve:node_pools[0].capacity_type", "'ON_DEMAND' or 'SPOT'",
                     id="an unknown capacity type is refused"),
        pytest.param(lambda d: d["node_pools"][0].update(min_nodes=3),
                     "gpuserve:node_pools[0].desired_nodes", "min_nodes <= desired_nodes",
                     id="desired below min nodes is refused"),
        pytest.param(lambda d: d["aws"].update(subnet_ids=[]),
                     "gpuserve:aws.subnet_ids", "at least 1 item", id="a node group without subnets is refused"),
        pytest.param(lambda d: d["node_pools"][0].update(gpus_per_node=1),  # its services' replicas take 2
                     "gpuserve:services[0].ray_actor_options.num_gpus", "at most the GPUs of one node",
                     id="a replica larger than a node is refused"),
        pytest.param(lambda d: d["node_pools"][0].update(labels={"gpuserve.io/pool": "other"}),
                     "gpuserve:node_pools[0].labels", "gpuserve.io/pool: keys under gpuserve.io/ are gpuserve's own",
                     id="a label cannot override the pool's own"),
        pytest.param(lambda d: d["node_pools"][0].update(labels={"team": "x" * 64}),
                     "gpuserve:node_pools[0].labels", "a Kubernetes label value",
                     id="a label value Kubernetes refuses is refused"),
        pytest.param(lambda d: d["aws"].pop("pod_bind_address"),
                     "gpuserve:aws.pod_bind_address", "a value", id="the pod bind address must be explicit"),
        pytest.param(lambda d: d["aws"].update(pod_bind_address="999.1.1.1"),
                     "gpuserve:aws.pod_bind_address", "Octet 999 (> 255) not permitted",
                     id="an address with an octet over 255 is refused"),
        pytest.param(lambda d: d["aws"].update(api_public_cidrs=["10.0.0.1/8"]),
                     "gpuserve:aws.api_public_cidrs", "has host bits set", id="a CIDR with host bits is refused"),
        pytest.param(lambda d: d["aws"].update(api_public_cidrs=["::/0"]),
                     "gpuserve:aws.api_public_cidrs", "the whole internet",
                     id="an API endpoint open to the internet is refused"),
        pytest.param(lambda d: d["aws"].update(redis_address="redis.internal:99999"),
                     "gpuserve:aws.redis_address", "must be 1..65535", id="a Redis port past 65535 is refused"),
        pytest.param(lambda d: d["aws"].update(tls_certificate_arn="arn:aws:acm:oops"),
                     "gpuserve:aws.tls_certificate_arn", "match pattern", id="a malformed certificate ARN is refused"),
    ],
)
def test_bad_cloud_config_gets_the_one_clear_error(change, reported_path, allowed):
    document = aws_document()
    change(document)
    found = problems(document, "prod")
    assert [p for p in found if p[0] == reported_path and allowed in p[2]], found


def test_a_public_load_balancer_without_tls_is_allowed_outside_prod():
    document = aws_document("dev")
    document["aws"]["public_load_balancer"] = True
    load_stack_config(document, "dev")


def test_a_pool_with_gpus_per_node_is_that_many_worker_nodes():
    config = load_stack_config(with_change("node_pools[0].gpus_per_node", 2), "test")
    assert config.node_pools[0].nodes == 2 and config.node_pools[0].total_gpus == 4


@pytest.mark.parametrize(
    ("pool", "reported_path", "allowed"),
    [
        pytest.param({"gpus": 5, "gpus_per_node": 2}, "gpuserve:node_pools[0]", "must be a multiple of gpus_per_node",
                     id="gpus that do not split into whole nodes are refused"),
        pytest.param({"gpus": 34, "gpus_per_node": 2}, "gpuserve:node_pools[0]", "at most 16 worker nodes",
                     id="more worker nodes than the port plan holds are refused"),
        pytest.param({"gpus": 4, "cpus_per_node": 2}, "gpuserve:node_pools[0]", "cpus_per_node needs gpus_per_node",
                     id="cpus per node without nodes are refused"),
    ],
)
def test_bad_node_pool_shapes_are_refused(pool, reported_path, allowed):
    document = copy.deepcopy(VALID)
    document["node_pools"] = [{"name": "gpu", **pool}]
    document["services"][0]["num_replicas"] = 1
    found = problems(document)
    assert [p for p in found if p[0] == reported_path and allowed in p[2]], found


def test_worker_node_ports_must_fit_below_65536():
    document = with_change("node_pools[0].gpus_per_node", 1)
    document["local"] = {"internal_ports_start": 65300}
    found = problems(document)
    assert [p for p in found if p[0] == "gpuserve:local.internal_ports_start" and "4 worker nodes take 30" in p[2]]


def test_a_replica_bigger_than_one_worker_node_is_refused():
    document = with_change("node_pools[0].gpus_per_node", 1)
    document["services"][0]["ray_actor_options"] = {"num_gpus": 2}
    found = problems(document)
    assert [p for p in found if p[0] == "gpuserve:services[0].ray_actor_options.num_gpus"], found


def test_services_that_each_fit_a_pool_but_not_together_are_refused():
    document = copy.deepcopy(VALID)
    document["services"] = [{"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 3},
                            {"name": "clf", "pool": "gpu", "version": "v1", "num_replicas": 2}]
    found = problems(document)
    assert [p for p in found if p[0] == "gpuserve:node_pools[0]" and "(5: llm 3, clf 2)" in p[2]], found


def test_a_user_config_the_apps_schema_refuses_is_refused_before_anything_moves_with_every_path():
    document = copy.deepcopy(VALID)
    document["services"][0].update(
        user_config={"temperature": -1, "colour": "red"},
        user_config_schema={"type": "object", "additionalProperties": False,
                            "properties": {"temperature": {"type": "number", "exclusiveMinimum": 0}}})
    found = {p[0]: p[2] for p in problems(document)}
    assert "less than or equal to the minimum of 0" in found["gpuserve:services[0].user_config.temperature"]
    assert "'colour' was unexpected" in found["gpuserve:services[0].user_config"]


def test_a_user_config_schema_that_is_no_json_schema_is_refused():
    found = problems(with_change("services[0].user_config_schema", {"type": "no-such-type"}))
    assert [p for p in found if p[0] == "gpuserve:services[0].user_config_schema" and "a valid JSON Schema" in p[2]]


@pytest.mark.parametrize("stack_file", ["Pulumi.local.yaml", "Pulumi.textgen.yaml"])
def test_the_shipped_stacks_schemas_refuse_a_negative_setting(stack_file):
    values = yaml.safe_load((STACKS / stack_file).read_text())["config"]
    document = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("gpuserve:")}
    service = document["services"][0]
    key = next(iter(service["user_config"]))
    service["user_config"] = {key: -1}
    found = problems(document, stack_file.split(".")[1])
    assert [p for p in found if p[0] == f"gpuserve:services[0].user_config.{key}"], found
