"""Any bytes given as a stack file get either a valid config or one ConfigError naming
every problem: never a traceback (the fuzz tests), and the classes of input found to
crash or slip through before each get their own clear error."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.config import check_stack_file
from components.config_errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
LOCAL = (REPO / "stacks" / "Pulumi.local.yaml").read_text()


def check(text: str | bytes, name: str = "Pulumi.t.yaml"):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return check_stack_file(path)


def refused(text: str | bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        check(text)
    return str(caught.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_any_bytes_validate_or_raise_the_one_config_error(data):
    try:
        check(data)
    except ConfigError:
        pass


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["local", "aws", "v1", "gpu", "llm", "2024-01-01", "1e400", "٣"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["name", "pool", "version", "gpus", "num_replicas", "bake_seconds", "gates", "rollout", "local",
         "http_port", "min_success_rate", "ray_actor_options", "num_gpus", "target", "x"]), inner, max_size=5)),
    max_leaves=25)
TOP = ["gpuserve:target", "gpuserve:local", "gpuserve:node_pools", "gpuserve:services", "gpuserve:rollout",
       "gpuserve:aws", "gpuserve:nope"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(TOP), documents, max_size=5))
def test_any_yaml_document_validates_or_raises_the_one_config_error(config):
    try:
        check(yaml.safe_dump({"config": config}, allow_unicode=True))
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["gpuserve:local", "gpuserve:rollout", "gpuserve:services"]), value=documents)
def test_the_shipped_stack_with_any_one_section_replaced_validates_or_raises_the_config_error(key, value):
    document = yaml.safe_load(LOCAL)
    document["config"][key] = value
    try:
        check(yaml.safe_dump(document, allow_unicode=True))
    except ConfigError:
        pass


@pytest.mark.parametrize("text, expected", [
    ("- just\n- a list\n", "got 'a YAML list'; allowed: a mapping with a `config:` key"),
    ("config: [1, 2]\n", "config: got [1, 2]; allowed: a mapping"),
    ("config:\n  gpuserve:target: local\n   bad: indent\n", "<file> at line 3, column"),
    ("config:\n  gpuserve:target: local\n  gpuserve:target: aws\n", "key 'gpuserve:target' (line 3): got 'a second value'"),
    ("config:\n  ? [1, 2]\n  : x\n", "key [1, 2] (line 2): got [1, 2]; allowed: a string key"),
    ("config:\n  gpuserve:local: {a: 1, a: 2}\n", "key 'a' (line 2): got 'a second value'"),
    ("config:\n  gpuserve:local: {public_port: .inf}\n", "gpuserve:local.public_port: got Infinity; allowed: a finite number"),
    ("config:\n  gpuserve:rollout: {bake_seconds: 1.0e+400}\n", "allowed: a finite number"),
    ("config:\n  gpuserve:local:\n    public_port: 99999999999999999999999999\n", "got 'an integer of 26 digits'; allowed: a number that fits 64 bits"),
    ("config:\n  gpuserve:local:\n    num_cpus: true\n", "gpuserve:local.num_cpus: got true; allowed: a valid integer"),
    ("config:\n  gpuserve:local:\n    num_cpus: '4'\n", "gpuserve:local.num_cpus: got '4'; allowed: a valid integer"),
    ("config:\n  gpuserve:local:\n    num_cpus: !!binary aGVsbG8=\n", "gpuserve:local.num_cpus: got 'a YAML bytes'; allowed: plain data"),
    ("config: " + "[" * 200 + "]" * 200 + "\n", "nesting deeper than 32 levels"),
])
def test_each_class_of_bad_input_gets_its_own_clear_error(text, expected):
    message = refused(text)
    assert message.startswith("invalid stack config for stack 't'")
    if expected:
        assert expected in message, message


def test_a_date_stays_the_text_it_was_written_as():
    message = refused("config:\n  gpuserve:node_pools: [{name: gpu, gpus: 1}]\n"
                      "  gpuserve:services: [{name: llm, pool: gpu, version: 2024-01-01, num_replicas: 9}]\n")
    assert "got 9" in message and "datetime" not in message  # judged on replicas, the date read as text


def test_bytes_that_are_not_utf8_missing_files_and_directories_are_named(tmp_path):
    assert "allowed: UTF-8 text" in refused(b"config:\n  gpuserve:target: \xff\xfe\n")
    for path, expected in ((tmp_path / "Pulumi.none.yaml", "got 'no such file'"), (tmp_path, "got 'a directory'")):
        with pytest.raises(ConfigError, match=expected):
            check_stack_file(path)


def test_the_shipped_stacks_are_still_valid():
    for path in sorted((REPO / "stacks").glob("Pulumi.*.yaml")):
        if "target: aws" in path.read_text():
            continue  # they name a kubeconfig of the operator's machine
        check_stack_file(path)
    assert json.dumps  # the module imports what the fuzz tests need
