"""ModelRollout on real engines: the real CLI, a real local Ray cluster, and background
load of 4 concurrent clients that counts every response."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import httpx
import psutil
import pytest

from tests.integration.harness import REPO, GpuSampler, Load, LocalStack

pytestmark = pytest.mark.integration

N = 4
BASE = {"name": "llm", "pool": "gpu", "num_replicas": N, "ray_actor_options": {"num_gpus": 1},
        "graceful_shutdown_timeout_s": 1, "max_ongoing_requests": 16, "max_queued_requests": 64,
        "request_timeout_s": 10, "user_config": {"temperature": 1.0}}
ROLLOUT = {"max_surge_percent": 25, "bake_seconds": 0, "step_timeout_seconds": 120,
           "gates": {"min_probes": 20, "min_success_rate": 0.99}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # 6 virtual GPUs: one more than the N + surge = 5 a rollout may use, so the test
    # observes the planner's cap rather than Ray's scheduling limit.
    stack = LocalStack(tmp_path_factory.mktemp("rollouts"), gpus=6,
                       services=[{**BASE, "version": "v1"}], rollout=ROLLOUT)
    with stack.running():
        yield stack


def declare(stack: LocalStack, **service) -> None:
    stack.services = [{**BASE, **service}]
    stack.write_config()


def routing(stack: LocalStack) -> dict:
    return stack.routing("llm")


def rollout_outputs(stack: LocalStack) -> dict:
    for resource in stack.resources():
        if resource["type"].endswith("ModelRollout"):
            return resource["outputs"]
    raise AssertionError("no ModelRollout in state")


def live_snapshot(stack: LocalStack) -> tuple:
    from runtime.serve_api import ServeClient

    with ServeClient(stack.dashboard_url, stack.token()) as serve:
        state = serve.state()
    return (routing(stack)["weights"],
            sorted((name, sum(d.target_replicas for d in app.deployments.values()))
                   for name, app in state.apps.items()))


def kill_up_when(stack: LocalStack, marker: str) -> tuple[list[str], list[psutil.Process]]:
    """Run `pulumi up` through the Automation API and SIGKILL the CLI process alone as soon as
    a diagnostic containing `marker` arrives. Returns the messages seen and the CLI's
    descendants (language hosts, providers, analyzer) as they were at the kill."""
    seen: list[str] = []
    orphans: list[psutil.Process] = []
    killed = threading.Event()

    def on_event(event) -> None:
        if event.diagnostic_event is None or killed.is_set():
            return
        seen.append(event.diagnostic_event.message)
        if marker in event.diagnostic_event.message:
            (cli,) = [c for c in psutil.Process().children(recursive=True)
                      if c.name() == "pulumi" and "up" in c.cmdline()]
            orphans.extend(cli.children(recursive=True))
            cli.kill()
            killed.set()

    stack.up(check=False, on_event=on_event)
    assert killed.is_set(), "never saw " + repr(marker) + " in:\n" + "\n".join(seen[-20:])
    return seen, orphans


def end(processes: list[psutil.Process], spare_session: int) -> None:
    """What the OS does to the rest of a crashed run. The Ray head's session is spared: it
    is the cluster the run was changing, not part of the run."""
    for process in processes:
        try:
            if os.getsid(process.pid) != spare_session:
                process.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass


def failed_rollout(stack: LocalStack, primary: str, **service) -> str:
    """Roll out `service`, expect `pulumi up` to fail with the one rollback message,
    restore the declared config, and return what the CLI printed."""
    declare(stack, **service)
    result = stack.up(check=False)
    declare(stack, version=primary)
    output = result.log
    assert not result.ok, result.report()
    assert f"primary {primary} serves 100%" in output
    return output


def other(version: str) -> str:
    return "v2" if version == "v1" else "v1"


def test_a_rollout_fails_no_request_and_stays_within_the_surge_budget(stack):
    start = routing(stack)["primary"]
    target = other(start)
    declare(stack, version=target)
    with Load(stack.endpoint("llm")) as load, GpuSampler(stack.dashboard_url, stack.token()) as gpus:
        result = stack.up()
    assert load.failed == 0, load.errors[:5]
    assert load.sent > 100
    assert gpus.peak <= N + 1, f"peak {gpus.peak} GPUs > N + ceil(25% N) = {N + 1}"
    assert routing(stack) == {"service": "llm", "primary": target, "canary": None, "weights": {target: 100.0}}
    assert stack.outputs()["serving_versions"] == {"llm": target}
    assert "rollout complete" in result.log
    history = rollout_outputs(stack)["history"]
    assert [h["step"] for h in history if h.get("step") == "gate"], "gate figures recorded"


def test_a_lightweight_change_restarts_no_replica(stack):
    version = routing(stack)["primary"]
    before = rollout_outputs(stack)["replica_ids"][version]
    probs_before = httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}).json()["probabilities"]
    declare(stack, version=version, user_config={"temperature": 3.0}, max_queued_requests=48)
    result = stack.up()
    assert "lightweight change" in result.log
    assert rollout_outputs(stack)["replica_ids"][version] == before
    probs_after = httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}).json()["probabilities"]
    assert probs_after != probs_before, "temperature reached the replicas"
    declare(stack, version=version)
    stack.up()


def test_a_version_whose_constructor_raises_is_rolled_back_with_no_failed_request(stack, tmp_path):
    primary = routing(stack)["primary"]
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a numpy archive")
    with Load(stack.endpoint("llm")) as load:
        output = failed_rollout(stack, primary, version="v3", artifact=str(corrupt))
    assert "rollout of llm v3 rolled back before wave 1 (serve-status gate)" in output
    # The replica's own exception and where in the model's code it was raised, not Serve's summary.
    assert "ValueError: This file contains pickled" in output and "tiny_model.py:35 in load" in output
    assert load.failed == 0, load.errors[:5]
    assert routing(stack)["primary"] == primary and routing(stack)["canary"] is None
    refreshed = stack.refresh()
    assert refreshed.changes == {}, refreshed.report()
    assert rollout_outputs(stack)["primary_version"] == primary


def test_a_canary_failing_a_fifth_of_requests_is_rolled_back_by_the_probe_gate(stack):
    primary = routing(stack)["primary"]
    output = failed_rollout(stack, primary, version="v1-flaky", artifact="models/v1.npz",
                            runtime_env={"env_vars": {"GPUSERVE_FAULT_ERROR_RATE": "0.2"}})
    # Usually at wave 1; 20 probes miss a 20% fault rate about 1% of the time (0.8^20),
    # and then a later wave's gate catches it.
    assert re.search(r"rolled back at wave [1-4]/4 \(success-rate gate\): canary success rate", output), output[-3000:]
    assert routing(stack) == {"service": "llm", "primary": primary, "canary": None, "weights": {primary: 100.0}}


def test_a_canary_failing_every_request_costs_the_clients_nothing(stack):
    # Weighted requests that fail on the canary are retried on the primary by the
    # splitter (splitter/fallback.go); the pinned probes still see every failure.
    primary = routing(stack)["primary"]
    with Load(stack.endpoint("llm"), clients=4) as load:
        time.sleep(1)
        output = failed_rollout(stack, primary, version="v1-broken", artifact="models/v1.npz",
                                runtime_env={"env_vars": {"GPUSERVE_FAULT_ERROR_RATE": "1.0"}})
    assert "(success-rate gate): canary success rate 0.0%" in output
    assert load.failed == 0, (load.counts, load.errors[:5])
    assert load.sent > 50


def test_canary_percent_holds_the_split_until_the_next_up_completes_it(stack):
    start = routing(stack)["primary"]
    target = other(start)
    declare(stack, version=target, rollout={"canary_percent": 25})
    result = stack.up()
    assert "holding at 25% canary traffic" in result.log
    assert routing(stack)["weights"] == {start: 75.0, target: 25.0}
    pinned = httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]},
                        headers={"x-serve-version": "canary"}).json()
    assert pinned["version"] == target
    assert stack.preview().changes == {}
    declare(stack, version=target, rollout={"canary_percent": 100})
    with Load(stack.endpoint("llm")) as load:
        stack.up()
    assert load.failed == 0, load.errors[:5]
    assert routing(stack)["primary"] == target and routing(stack)["canary"] is None


# The Automation API warns that the event stream broke off: the CLI writing it was killed.
@pytest.mark.filterwarnings("ignore:Error in event stream")
def test_a_rollout_killed_in_wave_two_converges_on_the_next_up_with_no_failed_request(stack):
    start = routing(stack)["primary"]
    target = other(start)
    declare(stack, version=target)
    with Load(stack.endpoint("llm")) as load:
        # Wave 1 done: the rollout is now inside wave 2. Only the CLI dies; its plugins run
        # in process groups of their own, and the rollout provider must notice and stop
        # (components/providers/watchdog.py).
        seen, orphans = kill_up_when(stack, "wave 1/4:")
        # Nothing may keep rolling without the engine: the live service stands still.
        time.sleep(2)
        frozen = live_snapshot(stack)
        time.sleep(6)
        assert live_snapshot(stack) == frozen, "the rollout went on after its engine was killed"
        end(orphans, spare_session=int(stack.ray_head()["sid"]))
        killed_at = routing(stack)
        assert killed_at["canary"] == target, "\n".join(seen[-20:])
        recovered = subprocess.run(
            [str(REPO / "scripts/recover"), stack.name], cwd=stack.project, capture_output=True, text=True,
            env={**stack.env, "PULUMI": str(stack.toolchain.bin / "pulumi"), "PYTHON": str(stack.toolchain.python)})
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        result = stack.up()
    assert "resuming rollout" in result.log
    assert load.failed == 0, load.errors[:5]
    assert routing(stack) == {"service": "llm", "primary": target, "canary": None, "weights": {target: 100.0}}
