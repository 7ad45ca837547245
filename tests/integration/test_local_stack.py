"""The walking skeleton on real engines: the real Pulumi CLI, a real local Ray cluster
with virtual GPUs, and the shipped tiny model answering HTTP requests."""

from __future__ import annotations

import re

import httpx
import pytest
from pulumi import automation as auto

from runtime import local_cluster
from tests.integration.harness import REPO, LocalStack

pytestmark = pytest.mark.integration

SERVICE = {"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 2,
           "ray_actor_options": {"num_gpus": 0.5}, "graceful_shutdown_timeout_s": 1,
           "max_ongoing_requests": 2, "max_queued_requests": 2, "user_config": {"temperature": 1.0}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("skeleton"), gpus=4, services=[SERVICE],
                       rollout={"bake_seconds": 0})
    with stack.running():
        yield stack


def settled(resources: list[dict]) -> list[tuple]:
    """What a change would alter: identity, outputs and modification time. Secrets are
    re-encrypted with a fresh nonce on every save, so their ciphertext is left out."""
    def plain(outputs: dict) -> dict:
        return {k: v for k, v in (outputs or {}).items() if k != "__provider"}
    return [(r["urn"], r.get("id"), r.get("modified"), plain(r.get("outputs")))
            for r in resources if r["type"] != "pulumi:pulumi:Stack"]


def predict(stack: LocalStack) -> httpx.Response:
    return httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}, timeout=30)


def test_up_exports_the_endpoint_and_the_serving_version(stack):
    outputs = stack.outputs()
    assert outputs["endpoints"] == {"llm": stack.endpoint("llm")}
    assert outputs["serving_versions"] == {"llm": "v1"}
    assert outputs["dashboard_url"] == stack.dashboard_url


def test_the_endpoint_returns_a_prediction_naming_the_version(stack):
    response = predict(stack)
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "v1" and body["label"] in ("setosa", "versicolor", "virginica")
    assert abs(sum(body["probabilities"]) - 1) < 1e-3


@pytest.mark.parametrize("features,message", [([1, 2], "expected 4 features, got 2"),
                                              (["a", 1, 2, 3], "could not convert string to float: 'a'")])
def test_a_malformed_body_gets_a_400_with_one_line_and_no_traceback(stack, features, message):
    response = httpx.post(stack.endpoint("llm"), json={"features": features}, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert response.headers["x-serve-version"] == "v1"
    for leak in ("Traceback", 'File "', "pid=", "actor_id", "\x1b"):
        assert leak not in response.text
    assert not re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", response.text), "an IP address reached the client"


def test_the_health_check_is_green(stack):
    assert httpx.get(stack.outputs()["health_check_url"], timeout=10).status_code == 200


def test_the_dashboard_refuses_requests_without_the_token(stack):
    assert httpx.get(f"{stack.dashboard_url}/api/serve/applications/", timeout=10).status_code == 401


def test_overload_is_shed_with_503_not_a_hang(stack):
    # 2 replicas x (2 ongoing + 2 queued) = 8 slots; 40 concurrent requests must overflow.
    import concurrent.futures

    def slow_call(_):
        try:
            return predict(stack).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(slow_call, range(200)))
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) > 0


def test_a_second_preview_reports_no_changes(stack):
    result = stack.preview()
    assert result.changes == {}, result.report()


def test_invalid_config_prints_one_error_and_touches_nothing(stack):
    before = stack.resources()
    stack.stack.set_config("gpuserve:services[0].num_replicas", auto.ConfigValue("0"), path=True)
    stack.stack.set_config("gpuserve:services[0].rollout.max_surge_percent", auto.ConfigValue("150"), path=True)
    try:
        result = stack.up(check=False)
    finally:
        stack.write_config()  # restore the declared config
    assert not result.ok
    output = result.log
    assert "invalid stack config" in output and "(2 problems)" in output
    assert "gpuserve:services[0].num_replicas: got 0; allowed: greater than or equal to 1" in output
    assert "gpuserve:services[0].rollout.max_surge_percent: got 150" in output
    assert "Traceback" not in output + result.output
    # No resource changed. (Pulumi itself drops the stack's outputs after a failed
    # program; `make up` validates before the CLI starts, so it keeps even those.)
    assert settled(stack.resources()) == settled(before)
    assert predict(stack).json()["version"] == "v1"


def test_the_preflight_check_rejects_a_bad_stack_file_before_pulumi_runs(tmp_path):
    import subprocess
    import sys

    import yaml

    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {
        "gpuserve:node_pools": [{"name": "gpu", "gpus": 4}],
        "gpuserve:services": [{**SERVICE, "num_replicas": 0, "pool": "cpu"}]}}))
    result = subprocess.run([sys.executable, "-m", "components.config", str(bad)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert "invalid stack config for stack 'bad'" in result.stderr
    assert "gpuserve:services[0].num_replicas: got 0" in result.stderr


def test_destroy_leaves_no_process_of_the_cluster_alive(tmp_path):
    own = LocalStack(tmp_path, gpus=1, services=[{**SERVICE, "num_replicas": 1}], rollout={"bake_seconds": 0})
    try:
        own.up()
        head = own.ray_head()
        assert len(local_cluster.session_pids(int(head["sid"]))) > 3
    finally:
        own.destroy()
    assert local_cluster.session_pids(int(head["sid"])) == []


def test_a_dead_ray_head_is_replaced_and_the_service_redeployed_by_the_next_up(stack):
    head = stack.ray_head()
    local_cluster.stop({k: head[k] for k in ("pid", "sid", "started_at", "dashboard_url", "token_path", "log_path")})
    result = stack.up()
    assert "is not running: it will be replaced" in result.log
    assert predict(stack).json()["version"] == "v1"
    assert stack.ray_head()["pid"] != head["pid"]
