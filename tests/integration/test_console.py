"""The `gpuserve` console against a real local stack, run as an operator would: a second
process beside a running `pulumi up`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.integration.harness import CLASSIFIER_SERVICE, REPO, Load, LocalStack

pytestmark = pytest.mark.integration

SERVICE = {**CLASSIFIER_SERVICE, "num_replicas": 2}
BAKE_S = 60  # long enough that only the operator ends it


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("console"), gpus=3, services=[{**SERVICE, "version": "v1"}],
                       rollout={"max_surge_percent": 50, "bake_seconds": BAKE_S, "step_timeout_seconds": 120,
                                "gates": {"min_probes": 5}})
    with stack.running():
        yield stack


def gpuserve(stack: LocalStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The console as its own process, on the test stack's project and backend."""
    env = {**stack.env, "GPUSERVE_PROJECT": str(stack.project), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "console", *args, "--stack", stack.name], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def declare(stack: LocalStack, version: str, **rollout) -> None:
    stack.services = [{**SERVICE, "version": version, "artifact": f"models/{'v2' if version != 'v1' else 'v1'}.npz"}]
    stack.rollout = {**stack.rollout, **rollout}
    stack.write_config()


def wait_for_canary(stack: LocalStack, version: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        routes = stack.routing("clf")
        if routes["canary"] == version and routes["weights"].get(version, 0) > 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"canary {version} never took traffic: {stack.routing('clf')}")


def up_in_background(stack: LocalStack) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", stack.up(check=False)), daemon=True)
    thread.start()
    return thread, result


class CanaryWatch:
    """Polls the splitter's routes on a thread of its own: when the canary stopped taking
    traffic, whatever else this process is waiting for."""

    def __init__(self, stack: LocalStack, service: str, canary: str):
        self.url = stack.endpoint(service).rsplit("/", 1)[0] + "/-/gpuserve/routes"
        self.service, self.canary, self.off_at = service, canary, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.off_at is None:
            try:
                routes = httpx.get(self.url, timeout=5).json()["routes"]
                route = next(r for r in routes if r["service"] == self.service)
                if route["weights"].get(self.canary, 0) == 0:
                    self.off_at = time.time()
            except (httpx.HTTPError, ValueError, StopIteration):
                pass
            time.sleep(0.05)

    def __enter__(self) -> "CanaryWatch":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)


def test_abort_from_a_second_process_moves_all_traffic_to_the_primary_within_2s_and_fails_the_up(stack):
    declare(stack, "v2")
    with Load(stack.endpoint("clf"), clients=2) as load:
        thread, result = up_in_background(stack)
        try:
            wait_for_canary(stack, "v2")
            with CanaryWatch(stack, "clf", "v2") as watch:
                aborted = gpuserve(stack, "abort", "clf", "--json")
                deadline = time.time() + 30
                while watch.off_at is None and time.time() < deadline:
                    time.sleep(0.1)
        finally:
            thread.join(300)
    assert aborted.returncode == 0, aborted.stderr
    data = json.loads(aborted.stdout)
    run = result["run"]
    assert data["acted"].startswith("the running pulumi up"), data
    # From the moment the command is durable (its write returned; a running `up` may
    # have read it even before), to no request going to the canary at the splitter.
    assert watch.off_at is not None, run.report()
    after = watch.off_at - data["recorded_at"]
    assert after <= 2.0, f"all traffic on v1 {after:.2f}s after the abort was recorded ({data})\n{run.report()[-3000:]}"
    assert not run.ok and "aborted by operator" in run.output, run.report()
    assert load.failed == 0, (load.counts, load.errors[:5])
    # The same config is not rolled out again: the next up refuses, saying what to change.
    again = stack.up(check=False)
    assert not again.ok and "gpuserve retry clf" in again.output, again.report()


def test_history_lists_the_aborted_rollout_and_timeline_draws_it(stack, tmp_path):
    history = gpuserve(stack, "history", "clf", "--json")
    assert history.returncode == 0, history.stderr
    (entry,) = json.loads(history.stdout)["rollouts"]
    assert (entry["from"], entry["to"], entry["outcome"]) == ("v1", "v2", "aborted")
    picture = tmp_path / "aborted.png"
    drawn = gpuserve(stack, "timeline", "clf", "--out", str(picture))
    assert drawn.returncode == 0, drawn.stderr
    assert picture.stat().st_size > 20_000


def test_promote_ends_a_hold_and_preview_then_names_the_config_to_change(stack):
    assert gpuserve(stack, "retry", "clf").returncode == 0
    declare(stack, "v3", canary_percent=50, bake_seconds=1)
    stack.up()
    assert stack.routing("clf")["canary"] == "v3"  # held at 50%
    promoted = gpuserve(stack, "promote", "clf", "--json")
    assert promoted.returncode == 0, promoted.stderr
    data = json.loads(promoted.stdout)
    assert data["acted"].startswith("this console") and data["primary"] == "v3" and data["canary"] is None
    assert stack.routing("clf") == {"service": "clf", "primary": "v3", "canary": None, "weights": {"v3": 100.0}}
    preview = stack.preview()
    assert "v3 was promoted by operator" in preview.log and "canary_percent" in preview.log, preview.report()


def test_watch_shows_the_wave_table_while_a_rollout_runs(stack):
    declare(stack, "v4", canary_percent=None, bake_seconds=8)
    thread, result = up_in_background(stack)
    try:
        wait_for_canary(stack, "v4")
        watched = gpuserve(stack, "watch", "clf", "--count", "2", "--interval", "1")
    finally:
        thread.join(300)
    assert watched.returncode == 0, watched.stderr
    assert "waves" in watched.stdout and "▶" in watched.stdout and "rolling out v3 -> v4" in watched.stdout
    assert result["run"].ok, result["run"].report()
    status = json.loads(gpuserve(stack, "status", "clf", "--json").stdout)
    assert status["services"][0]["phase"] == "steady"
    metrics = json.loads(gpuserve(stack, "metrics", "--json").stdout)["metrics"]
    weights = {(m["labels"]["version"], m["labels"]["role"]): m["value"] for m in metrics
               if m["name"] == "gpuserve_traffic_percent"}
    assert weights == {("v4", "primary"): 100.0}, metrics
