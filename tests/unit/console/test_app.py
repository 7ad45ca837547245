"""The `gpuserve` command, driven by typer's runner over a source that answers like a stack."""

from __future__ import annotations

import contextlib
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


# ------------------------------------------------------------ history and commands
def past(n: int = 2) -> list[dict]:
    gate = {"wave": 1, "gate": "splitter", "passed": True, "canary": {"sent": 40, "success_rate": 1.0, "p95_ms": 21.0}}
    return [{"id": i, "from": f"v{i}", "to": f"v{i + 1}", "started": 1_800_000_000.0 + 100 * i,
             "ended": 1_800_000_060.0 + 100 * i, "outcome": "rolled back" if i % 2 else "promoted",
             "reason": "canary success rate 71.0% < 99.0%", "waves": 4, "reached_wave": 1, "gates": [gate]}
            for i in range(1, n + 1)]


def test_history_lists_each_rollout_with_its_outcome_why_waves_and_gate_figures(stack):
    state_copy, live_copy = past(1), past(2)
    service = live("v3")
    service = LiveService(**{**service.__dict__, "rollouts": live_copy})
    stack({"llm": service})
    result = RUNNER.invoke(console_app.app, ["history", "llm"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "v1 -> v2" in result.output and "v2 -> v3" in result.output
    assert "rolled back: canary success rate 71.0% < 99.0%" in result.output
    assert "w1 splitter pass 100.0%, 21ms" in result.output and "1/4" in result.output
    data = json.loads(RUNNER.invoke(console_app.app, ["history", "llm", "--json"]).output)
    assert [r["to"] for r in data["rollouts"]] == ["v2", "v3"] and state_copy[0]["id"] == data["rollouts"][0]["id"]


class Cluster:
    """A FakeServe-backed service behind the console's session: v1 primary, v2 held at 25%."""

    def __init__(self):
        from tests.unit.runtime import test_controller as tc

        self.tc = tc
        self.serve = tc.serving("v1")
        tc.converge(self.serve, tc.spec("v2", canary_percent=25))
        self.refreshed = 0

    def controller(self):
        from runtime.controller import RolloutController

        return RolloutController(self.tc.spec("v2", canary_percent=25), self.serve, prober=self.tc.FakeProber(),
                                 log=lambda line: None, poll_s=0.01)


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    from runtime import serve_api

    monkeypatch.setattr(serve_api.tempfile, "gettempdir", lambda: str(tmp_path))
    held = Cluster()

    class Commandable(FakeSource):
        @contextlib.contextmanager
        def session(self, rollout):
            with held.tc.offline(held.serve):
                yield held.controller(), held.serve

        def refresh(self, rollout):
            held.refreshed += 1

    monkeypatch.setattr(console_app, "source_for", lambda name: Commandable(name, {"llm": None}))
    return held


def test_abort_with_no_up_running_rolls_the_held_canary_back_and_refreshes_the_state(cluster):
    result = RUNNER.invoke(console_app.app, ["abort", "llm"])
    assert result.exit_code == 0, result.output
    assert "v2 aborted: v1 serves 100% (carried out by this console" in result.output
    cluster.tc.assert_serves_only(cluster.serve, "v1")
    assert cluster.refreshed == 1
    again = RUNNER.invoke(console_app.app, ["abort", "llm", "--json"])
    assert again.exit_code == 1 and "nothing to abort: v1 serves 100%" in again.output


def test_promote_with_no_up_running_ends_the_hold_and_the_json_says_who_carried_it_out(cluster):
    result = RUNNER.invoke(console_app.app, ["promote", "llm", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the controller's progress lines went to stderr
    assert "rollout complete: v2 is primary" in result.stderr
    assert (data["command"], data["version"], data["primary"], data["canary"]) == ("promote", "v2", "v2", None)
    assert data["acted"].startswith("this console")
    cluster.tc.assert_serves_only(cluster.serve, "v2")


def test_a_command_while_an_up_converges_the_service_is_left_to_that_up(cluster):
    from runtime.serve_api import service_lock

    with service_lock(cluster.serve.cluster_key, "llm", holder="pulumi up"):
        result = RUNNER.invoke(console_app.app, ["abort", "llm", "--wait", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["acted"].startswith("the running pulumi up (pid")
    assert "abort recorded" in data["message"]  # nobody acted in this test: the canary still takes 25%
    assert (data["canary"], data["canary_traffic"]) == ("v2", 25.0)
    # The command is durable, in the routing record, for the running up to read.
    assert cluster.serve.state().apps["llm"].config["deployments"][0]["user_config"]["operator"]["command"] == "abort"


def test_retry_clears_a_standing_abort_and_says_when_there_is_none(cluster):
    assert RUNNER.invoke(console_app.app, ["abort", "llm"]).exit_code == 0
    result = RUNNER.invoke(console_app.app, ["retry", "llm", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["message"].startswith("cleared: v2 aborted by operator")
    again = RUNNER.invoke(console_app.app, ["retry", "llm"])
    assert again.exit_code == 1 and "no operator command stands" in again.output


# ------------------------------------------------------------------------ watch
SAMPLES = [{"v": "v1", "c": 200, "ms": 20.0}] * 30 + [{"v": "v2", "c": 200, "ms": 25.0}] * 9 + \
          [{"v": "v2", "c": 503, "ms": 1.0}]


def test_watch_shows_the_wave_table_with_the_current_wave_traffic_bars_and_real_traffic(rolling, tmp_path):
    picture = tmp_path / "watch.svg"
    result = RUNNER.invoke(console_app.app, ["watch", "llm", "--count", "1", "--svg", str(picture)],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "waves" in out and "▶" in out and "real traffic, last 10s" in out
    assert "█████" in out  # the canary's 25% bar
    assert "rolling out v1 -> v2: wave 1, 25% on the canary" in out
    assert picture.read_text().startswith("<svg") and "waves" in picture.read_text()


def test_watch_json_is_one_document_per_refresh_with_waves_and_the_gates_figures(rolling):
    result = RUNNER.invoke(console_app.app, ["watch", "--json", "--count", "2", "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    (frame,) = json.loads(lines[-1])["services"]
    assert {w["wave"] for w in frame["waves"] if w["state"] == "now"} == {1}  # the intent's wave
    traffic = {t["version"]: t for t in frame["traffic"]}
    assert (traffic["v2"]["requests"], traffic["v2"]["errors"], traffic["v2"]["error_rate"]) == (10, 1, 0.1)
    assert traffic["v1"]["p95_ms"] == 20.0
