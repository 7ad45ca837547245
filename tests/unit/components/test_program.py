"""Component wiring under Pulumi mocks: one property per test."""

from __future__ import annotations

import json

import pulumi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components import program
from tests.unit.components.pulumi_mocks import RecordingMocks

LOCAL = {
    "gpuserve:target": "local",
    "gpuserve:local": json.dumps({"http_port": 18100, "dashboard_port": 18365, "gcs_port": 18479,
                                  "internal_ports_start": 18600}),
    "gpuserve:node_pools": json.dumps([{"name": "gpu", "gpus": 4}]),
    "gpuserve:services": json.dumps([
        {"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 2,
         "ray_actor_options": {"num_gpus": 0.5}, "max_queued_requests": 16},
    ]),
}


def registered(values: dict) -> RecordingMocks:
    """Run the program under mocks and wait until every registration has finished."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpuserve", stack="unit", preview=False)
    settle(lambda: program.run(values, "unit"))
    return mocks


def settle(func) -> None:
    """Run `func` as a Pulumi program and wait for its outstanding registrations."""
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    _sync_await(run_pulumi_func(func))


def test_the_local_pool_starts_a_ray_head_with_the_configured_virtual_gpus():
    heads = registered(LOCAL).of_type("LocalRayHead")
    assert [(h.name, h.inputs["gpus"]) for h in heads] == [("gpu-ray-head", 4)]


def test_the_ray_head_uses_the_stack_ports():
    (head,) = registered(LOCAL).of_type("LocalRayHead")
    assert (head.inputs["dashboard_port"], head.inputs["gcs_port"]) == (18365, 18479)


def test_serve_listens_on_the_configured_http_port():
    (serve,) = registered(LOCAL).of_type("LocalServe")
    assert serve.inputs["http_port"] == 18100


def test_each_service_gets_one_rollout_with_its_version_spec():
    (rollout,) = registered(LOCAL).of_type("ModelRollout")
    spec = rollout.inputs["spec"]
    assert (spec["service"], spec["version"]["version"], spec["version"]["num_gpus"]) == ("llm", "v1", 0.5)
    assert spec["version"]["artifact"] == "models/v1.npz"  # inside the shipped classifier's code


def test_the_version_spec_pins_the_code_and_artifact_by_their_hashes():
    (rollout,) = registered(LOCAL).of_type("ModelRollout")
    version = rollout.inputs["spec"]["version"]
    assert version["code_dir"].endswith("examples/classifier")
    assert len(version["code_hash"]) == 64 and len(version["artifact_hash"]) == 64


def test_the_splitter_serves_the_public_port_in_front_of_serve():
    (splitter,) = registered(LOCAL).of_type("LocalSplitter")
    assert splitter.inputs["listen"].startswith("127.0.0.1:")
    assert splitter.inputs["instances"] == 2


def test_the_rollout_is_parented_to_its_model_service_component():
    registered(LOCAL)
    # The mock monitor keys registrations by URN, whose type chain names the parents.
    (urn,) = [u for u in pulumi.runtime.settings.get_monitor().resources if u.endswith("::llm-rollout")]
    assert urn.split("::")[2] == ("gpuserve:model_service:ModelService$"
                                  "pulumi-python:dynamic/gpuserve:ModelRollout")


def test_the_rollout_talks_to_the_pools_dashboard():
    (rollout,) = registered(LOCAL).of_type("ModelRollout")
    assert rollout.inputs["dashboard_url"] == "http://127.0.0.1:18365"


def test_components_use_their_type_tokens():
    types = {r.typ for r in registered(LOCAL).resources}
    assert {"gpuserve:gpu_node_pool:GpuNodePool", "gpuserve:serving_runtime:ServingRuntime",
            "gpuserve:load_balancer:InferenceLoadBalancer", "gpuserve:model_service:ModelService"} <= types


def test_invalid_config_registers_nothing_and_raises_one_run_error():
    bad = {**LOCAL, "gpuserve:services": json.dumps([{"name": "llm", "pool": "nope", "version": "v1",
                                                       "num_replicas": 0}])}
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpuserve", stack="unit", preview=False)
    with pytest.raises(pulumi.RunError) as info:
        settle(lambda: program.run(bad, "unit"))
    assert mocks.resources == []
    assert "gpuserve:services[0].num_replicas: got 0" in str(info.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["num_replicas", "max_queued_requests", "graceful_shutdown_timeout_s",
                            "request_timeout_s", "max_ongoing_requests"]),
       value=st.one_of(st.integers(max_value=-1), st.text(min_size=1, max_size=4).filter(lambda s: not s.strip().lstrip("-").isdigit())))
def test_fuzzed_invalid_service_values_register_nothing(key, value):
    service = {"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 2, key: value}
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpuserve", stack="unit", preview=False)
    with pytest.raises(pulumi.RunError) as info:
        settle(lambda: program.run({**LOCAL, "gpuserve:services": json.dumps([service])}, "unit"))
    assert mocks.resources == []
    assert f"gpuserve:services[0].{key}: got " in str(info.value)
