"""The `gpuserve` command, driven by typer's runner over a source that answers like a stack."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from console import app as console_app
from console.source import ConsoleError, Rollout, rollouts_of
from runtime.live import LiveService

RUNNER = CliRunner()


def live(primary, canary=None, traffic=0.0, declared=None):
    declared = declared or {primary: 2}
    return LiveService(primary=primary, canary=canary, canary_traffic=traffic, declared=declared,
                       ready=dict(declared), replica_ids={}, statuses={v: "RUNNING" for v in declared},
                       started_at=None, latency_baseline_ms=None, router_config=None,
                       intent={"direction": "forward", "wave": 1} if canary else None)


class FakeSource:
    def __init__(self, stack, services, fail=None):
        self.stack, self.services, self.fail = stack, services, fail

    def rollouts(self):
        return [Rollout(service=name, spec={"pool": "gpu", "capacity": {"pool_gpus": 4}}, history=[],
                        dashboard_url="http://127.0.0.1:1", token="t", token_path=None, kubeconfig=None)
                for name in self.services]

    def live(self, rollout):
        if self.fail:
            raise ConsoleError(self.fail)
        return self.services[rollout.service], 2.0


@pytest.fixture
def stack(monkeypatch):
    seen = {}

    def use(services, fail=None):
        def source_for(name):
            seen["stack"] = name
            return FakeSource(name, services, fail)
        monkeypatch.setattr(console_app, "source_for", source_for)
        return seen
    return use


def test_status_prints_every_service_with_its_versions_and_phase(stack):
    stack({"clf": live("v1"), "llm": live("v1", "v2", 50.0, {"v1": 1, "v2": 1})})
    result = RUNNER.invoke(console_app.app, ["status"])
    assert result.exit_code == 0, result.output
    assert "clf" in result.output and "steady" in result.output
    assert "rolling out v1 -> v2: wave 1, 50% on the canary" in result.output
    assert "GPUs 2 of 4" in result.output


def test_status_json_is_the_same_figures_for_a_machine(stack):
    seen = stack({"clf": live("v1"), "llm": live("v1")})
    result = RUNNER.invoke(console_app.app, ["status", "clf", "--json", "--stack", "dev"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert seen["stack"] == "dev" and data["stack"] == "dev"
    (service,) = data["services"]
    assert service["service"] == "clf" and service["phase"] == "steady"
    assert service["versions"] == [{"version": "v1", "role": "primary", "weight": 100.0, "declared": 2,
                                    "ready": 2, "status": "RUNNING"}]


def test_an_unknown_service_is_one_line_naming_the_ones_there_are(stack):
    stack({"clf": live("v1")})
    result = RUNNER.invoke(console_app.app, ["status", "nope"])
    assert result.exit_code == 1
    assert "stack local has no service 'nope'; it has: clf" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_cluster_is_one_line_not_a_traceback(stack):
    stack({"clf": live("v1")}, fail="clf: the cluster at http://127.0.0.1:1 does not answer")
    result = RUNNER.invoke(console_app.app, ["status"])
    assert result.exit_code == 1 and "does not answer" in result.output and "Traceback" not in result.output


def test_the_rollouts_come_from_the_exported_state_with_secrets_unwrapped():
    deployment = {"resources": [
        {"type": "pulumi:pulumi:Stack", "urn": "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"},
        {"type": "pulumi-python:dynamic/gpuserve:ModelRollout", "urn": "urn:...::llm-rollout",
         "outputs": {"spec": {"service": "llm"}, "dashboard_url": "k8s-portforward://ns/c:8265",
                     "token": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                               "plaintext": "\"s3cret\""}, "history": [{"step": "gate"}]}},
        {"type": "pulumi-python:dynamic/gpuserve:ModelRollout", "urn": "urn:...::clf-rollout",
         "outputs": {"spec": {"service": "clf"}, "dashboard_url": "http://127.0.0.1:1", "token_path": "/t"}},
    ]}
    clf, llm = rollouts_of(deployment)
    assert (clf.service, clf.token_path, clf.token) == ("clf", "/t", None)
    assert (llm.service, llm.token, llm.dashboard_url, llm.history) == (
        "llm", "s3cret", "k8s-portforward://ns/c:8265", [{"step": "gate"}])
