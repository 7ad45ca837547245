"""Rollouts side by side: gpuserve and the strongest Serve-native peers, under the same
faults and the same load, in one run.

    make bench          (.venv/bin/python -m bench.run [--quick | --smoke] [--out DIR])
    make bench-quick    (--quick: every peer, healthy rollout, moderate load, N=2)

One local Ray cluster of worker nodes with virtual GPUs (real Pulumi CLI, real Ray Serve),
a fresh service of N GPU replicas per case, load from a separate process
(bench/loadgen.py), and samples of GPUs in use, replicas per version and router weights
from Ray every 250 ms.

Peers, each doing v1 -> the scenario's version:
  gpuserve        `pulumi up`, max_surge_percent 25, gates on (bake 3 s)
  serve-surge     Serve's own rolling update with max_surge_percent 25 (the Serve REST API)
  serve-default   Serve's own rolling update at its default (max_surge_percent 0)
  blue-green      `pulumi up`, max_surge_percent 100, gates on

Scenarios: healthy, broken constructor, 20% errors, fails 10 s after start, +50 ms per
request, and a worker node lost when the first new replica is ready (the node holding
most of the service's replicas; its raylet is SIGKILLed).

Loads: moderate (4 closed-loop clients) and saturating (open loop at 90% of the steady
capacity measured on the case's own path just before: 32 closed-loop clients for 8 s).

Writes bench/results/<stamp>-rollouts.json (every figure, the machine, the settings, the
controller's log), .md, and one PNG timeline per case; `python -m bench.report --readme`
puts the newest full run's table into README.md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import psutil

from bench.cli import arguments
from runtime import apps
from runtime.analysis import PERCENTILE_METHOD, percentile
from runtime.plan import plan_rollout
from runtime.ray_state import ALIVE_ACTORS, _replica_app, gpus_in_use
from runtime.serve_api import ServeClient
from runtime.splitter import route_of
from tests.integration.harness import REPO, LocalStack, Run
from traffic.protocol import RESERVED_PREFIX


@dataclass(frozen=True)
class Peer:
    key: str
    title: str
    kind: str  # "gpuserve" | "serve"
    surge: int


PEERS = (
    Peer("gpuserve", "gpuserve p=25", "gpuserve", 25),
    Peer("serve-surge", "Serve native surge 25%", "serve", 25),
    Peer("serve-default", "Serve native default (surge 0)", "serve", 0),
    Peer("blue-green", "gpuserve blue/green p=100", "gpuserve", 100),
)
SCENARIOS = {
    "healthy": "healthy v1 -> v2",
    "broken": "constructor raises",
    "flaky": "20% errors",
    "late": "fails 10 s after start",
    "slow": "+50 ms per request",
    "node-loss": "worker node lost mid-rollout",
}
LOADS = ("moderate", "saturating")


@dataclass(frozen=True)
class Case:
    peer: Peer
    scenario: str
    load: str

    @property
    def name(self) -> str:
        return f"{self.load} / {self.scenario} / {self.peer.key}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class Settings:
    mode: str = "full"
    n: int = 4
    clients: int = 4  # moderate: closed-loop clients
    warmup_s: float = 6.0
    cooldown_s: float = 2.0
    bake_s: float = 3.0
    step_timeout_s: float = 60.0
    peer_timeout_s: float = 90.0
    gpus_per_node: int = 2
    saturation: float = 0.9  # offered load over the measured steady capacity
    capacity_s: float = 8.0
    open_loop_workers: int = 32
    peers: tuple[str, ...] = tuple(p.key for p in PEERS)
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    loads: tuple[str, ...] = LOADS

    def cases(self) -> list[Case]:
        peers = [p for p in PEERS if p.key in self.peers]
        return [Case(p, s, lo) for lo in self.loads for s in self.scenarios for p in peers]


QUICK = Settings(mode="quick", n=2, warmup_s=3.0, cooldown_s=1.0, bake_s=1.0, scenarios=("healthy",),
                 loads=("moderate",))
SMOKE = Settings(mode="smoke", n=2, clients=2, warmup_s=2.0, cooldown_s=1.0, bake_s=0.0,
                 peers=("gpuserve", "serve-surge"), scenarios=("healthy",), loads=("moderate",))


# ------------------------------------------------------------------ sampling
class Background:
    """A loop on a daemon thread (`_run`, which watches `_stop`), started and stopped once."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Sampler(Background):
    """GPUs in use (Ray State API), running replicas per version and router weights."""

    def __init__(self, stack: LocalStack, app_prefix: str, route: str, period_s: float = 0.25):
        self.stack, self.app_prefix, self.route, self.period_s = stack, app_prefix, route, period_s
        self.samples: list[dict] = []
        self.initial_ids: set[str] | None = None  # Serve peers: replicas that predate the change
        super().__init__()

    def _run(self) -> None:
        token = self.stack.token()
        with httpx.Client(timeout=5) as http, ServeClient(self.stack.dashboard_url, token) as serve:
            while not self._stop.is_set():
                sample: dict = {"t": time.time()}
                try:
                    # Only this case's replicas: the cluster is shared.
                    sample["gpus"] = gpus_in_use(self.stack.dashboard_url, token, http, app=self.app_prefix)
                    replicas, listed = self._replicas(serve.state())
                    # Right after a PUT, Serve lists an app with no replicas at all for
                    # about half a second while it rebuilds it (requests are still served);
                    # such a sample says nothing about capacity, so it is left out.
                    if listed:
                        sample["replicas"] = replicas
                    if self.route:
                        sample["weights"] = (route_of(http.get(self.route).json(), self.app_prefix) or {}).get(
                            "weights", {})
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self.samples.append(sample)
                self._stop.wait(self.period_s)

    def _replicas(self, state) -> tuple[dict[str, int], int]:
        replicas: dict[str, int] = {}
        listed = 0
        for name, app in state.apps.items():
            if name != self.app_prefix and not name.startswith(self.app_prefix + "--"):
                continue
            for deployment in app.deployments.values():
                for replica in deployment.replicas:
                    listed += 1
                    # UPDATING replicas are reconfiguring and still serve.
                    if replica.state not in ("RUNNING", "UPDATING") or deployment.name != apps.MODEL_DEPLOYMENT:
                        continue
                    version = apps.version_of(name) or self._peer_version(replica.replica_id)
                    replicas[version] = replicas.get(version, 0) + 1
        return replicas, listed

    def _peer_version(self, replica_id: str) -> str:
        return "old" if self.initial_ids is None or replica_id in self.initial_ids else "new"

    def new_replicas(self, old: str) -> int:
        """Replicas of the new version in the latest sample."""
        latest = next((s["replicas"] for s in reversed(self.samples) if "replicas" in s), {})
        return sum(n for v, n in latest.items() if v != old)


# ------------------------------------------------------------------ load
class LoadProcess:
    def __init__(self, url: str, clients: int, out: Path, rate: float | None = None):
        self.out = out
        command = [sys.executable, "-m", "bench.loadgen", url, str(clients), str(out)]
        self.process = subprocess.Popen(command + (["--rate", f"{rate:.1f}"] if rate else []),
                                        cwd=REPO, start_new_session=True)

    def stop(self) -> list[dict]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


def steady_capacity(url: str, settings: Settings, out: Path) -> float:
    """Answers per second at saturation: as many closed-loop clients as the open loop has
    workers (so the load generator costs the 2 cores the same), after a settling second."""
    load = LoadProcess(url, settings.open_loop_workers, out)
    time.sleep(settings.capacity_s)
    records = load.stop()
    settled = min((r["t"] for r in records), default=0.0) + 2.0
    ok = [r for r in records if r["status"] == 200 and r["t"] >= settled]
    if len(ok) < 2:
        return 0.0
    return round(len(ok) / (max(r["t"] for r in ok) - min(r["t"] for r in ok)), 1)


def start_load(url: str, settings: Settings, case: Case, out: Path) -> tuple[LoadProcess, dict]:
    if case.load == "moderate":
        return LoadProcess(url, settings.clients, out), {"clients": settings.clients}
    capacity = steady_capacity(url, settings, out.with_suffix(".capacity.jsonl"))
    rate = settings.saturation * capacity
    return (LoadProcess(url, settings.open_loop_workers, out, rate=rate),
            {"capacity_rps": capacity, "offered_rps": round(rate, 1), "open_loop_workers": settings.open_loop_workers})


# ------------------------------------------------------------------ node loss
def raylet_of(pid: int) -> psutil.Process:
    return next(p for p in psutil.Process(pid).children(recursive=True) if p.name() == "raylet")


def kill_busiest_node(stack: LocalStack, app_prefix: str) -> dict:
    """SIGKILL the raylet of the worker node holding most of the service's replicas."""
    nodes = (stack.resource_outputs("LocalRayWorkers") or {}).get("nodes") or []
    actors = httpx.get(f"{stack.dashboard_url}{ALIVE_ACTORS}", headers={"Authorization": f"Bearer {stack.token()}"},
                       timeout=10).json()["data"]["result"]["result"]
    held: dict[str, int] = {}
    for actor in actors:
        app = _replica_app(actor.get("name") or "")
        if app == app_prefix or app.startswith(app_prefix + "--"):
            held[actor["node_id"]] = held.get(actor["node_id"], 0) + 1
    victim = max(nodes, key=lambda n: (held.get(n.get("node_id", ""), 0), n["node_name"]))
    os.kill(raylet_of(int(victim["pid"])).pid, signal.SIGKILL)
    return {"node": victim["node_name"], "replicas_on_it": held.get(victim.get("node_id", ""), 0), "t": time.time()}


class NodeKiller(Background):
    """Kills the busiest node once the first replica of the new version is ready."""

    def __init__(self, stack: LocalStack, sampler: Sampler, app_prefix: str, old: str):
        self.stack, self.sampler, self.app_prefix, self.old = stack, sampler, app_prefix, old
        self.killed: dict | None = None
        super().__init__()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self.sampler.new_replicas(self.old) >= 1:
                self.killed = kill_busiest_node(self.stack, self.app_prefix)
                return


# ------------------------------------------------------------------ metrics
def request_metrics(records: list[dict], t0: float, t1: float) -> dict:
    failed_by: dict[str, int] = {}
    for r in records:
        if r["status"] != 200:
            failed_by[str(r["status"])] = failed_by.get(str(r["status"]), 0) + 1
    before = [r["ms"] for r in records if r["t"] < t0 and r["status"] == 200]
    during = [r["ms"] for r in records if t0 <= r["t"] <= t1 and r["status"] == 200]
    failed = sum(failed_by.values())

    def pct(values: list[float], q: float) -> float | None:
        return round(percentile(values, q), 1) if values else None
    row = {
        "sent": len(records), "failed": failed,
        "failure_rate": round(failed / len(records), 5) if records else None,
        "failed_by_status": {k: v for k, v in failed_by.items() if not k.startswith("exception")},
        "failed_by_exception": {k: v for k, v in failed_by.items() if k.startswith("exception")},
        "p50_ms_before": pct(before, 50), "p99_ms_before": pct(before, 99),
        "p50_ms_during": pct(during, 50), "p99_ms_during": pct(during, 99),
    }
    row["p99_during_over_before"] = (round(row["p99_ms_during"] / row["p99_ms_before"], 2)
                                     if row["p99_ms_before"] and row["p99_ms_during"] else None)
    return row


def gpu_metrics(samples: list[dict], t0: float, t1: float, n: int) -> dict:
    during = [s["gpus"] for s in samples if "gpus" in s and t0 <= s["t"] <= t1 + 1]
    peak = max(during, default=None)
    # Serving capacity: replicas of any version that Serve reports as serving, over N.
    ready = [sum(s["replicas"].values()) for s in samples if "replicas" in s and t0 <= s["t"] <= t1]
    return {"peak_gpus": peak, "steady_gpus": float(n),
            "peak_over_steady": round(peak / n, 2) if peak is not None else None,
            "min_capacity": round(min(ready) / n, 2) if ready else None}


STAMP = re.compile(r"\((\d+(?:\.\d+)?)s\)$")
STEPS = re.compile(r"time by step: (?P<steps>.*); other (?P<other>[\d.]+)s of (?P<total>[\d.]+)s")


def controller_lines(run: Run, service: str) -> list[tuple[float | None, str]]:
    """The controller's lines for `service`, each with its own elapsed-time stamp."""
    lines = []
    for _, _, message in run.diagnostics:
        first = message.splitlines()[0].strip() if message.strip() else ""
        if first.startswith(f"[{service}]"):
            stamp = STAMP.search(first)
            lines.append((float(stamp.group(1)) if stamp else None, first))
    return list(dict.fromkeys(lines))


def milestone(lines, *needles: str) -> float | None:
    return next((t for t, line in lines if t is not None and all(n in line for n in needles)), None)


class PulumiClock:
    """When the engine reached the rollout resource, finished it, and summed up: wall-clock
    times from the event stream, to split a `pulumi up` into Pulumi's part and the controller's."""

    PHASES = ("pulumi: program and the other resources", "pulumi: provider around the controller",
              "pulumi: finishing")

    def __init__(self) -> None:
        self.rollout_pre = self.rollout_out = self.summary = None
        self.first_pre = self.first_event = None
        self.spans: dict[str, list[float]] = {}  # urn's type::name -> [pre, outputs]

    def see(self, event) -> None:
        now = time.time()
        self.first_event = self.first_event or now
        for step in (event.resource_pre_event, event.res_outputs_event):
            if step is not None:
                meta = step.metadata
                name = f"{meta.type.rsplit(':', 1)[-1]} {meta.urn.rsplit('::', 1)[-1]}"
                self.spans.setdefault(name, [now, now])[1] = now
                self.first_pre = self.first_pre or now
        if event.resource_pre_event and event.resource_pre_event.metadata.type.endswith(":ModelRollout"):
            self.rollout_pre = self.rollout_pre or now
        if event.res_outputs_event and event.res_outputs_event.metadata.type.endswith(":ModelRollout"):
            self.rollout_out = now
        if event.summary_event:
            self.summary = now

    def phases(self, t0: float, t1: float, controller_s: float) -> dict[str, float]:
        if self.rollout_pre is None or self.rollout_out is None:
            return {"pulumi and the other resources": round((t1 - t0) - controller_s, 1)}
        spans = (self.rollout_pre - t0, (self.rollout_out - self.rollout_pre) - controller_s, t1 - self.rollout_out)
        return {name: round(span, 1) for name, span in zip(self.PHASES, spans)}

    def before_rollout(self, t0: float) -> dict[str, float]:
        """Where Pulumi's part before the rollout went: to the first resource's step (the
        CLI, the program's start), then each resource's own step, longest first."""
        out = {"to the engine's first event": round((self.first_event or t0) - t0, 1),
               "to the first resource": round((self.first_pre or t0) - t0, 1)}
        steps = sorted(((end - pre, name) for name, (pre, end) in self.spans.items()
                        if not name.startswith("ModelRollout ")), reverse=True)
        out.update({name: round(span, 2) for span, name in steps[:6]})
        return out


def time_by_step(lines) -> dict | None:
    for _, line in lines:
        match = STEPS.search(line)
        if match:
            steps = {k: float(v[:-1]) for k, v in (part.rsplit(" ", 1) for part in match["steps"].split(", "))}
            return {**steps, "other": float(match["other"]), "controller_total": float(match["total"])}
    return None


def retries_spent(stack: LocalStack, service: str) -> int:
    """Requests the splitter instances retried on the primary for `service`."""
    from runtime.splitter import Instance, _admin

    total = 0
    for instance in stack.splitter_instances():
        try:
            text = _admin(Instance(0, 0.0, instance.admin, ""), "/metrics").text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            if line.startswith("gpuserve_retries_total{") and f'service="{service}"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


# ------------------------------------------------------------------ versions
def target_version(scenario: str, corrupt: Path) -> dict:
    if scenario in ("healthy", "node-loss"):
        return {"version": "v2", "artifact": "models/v2.npz"}
    if scenario == "broken":
        return {"version": "v3", "artifact": str(corrupt)}
    knobs = {"flaky": ("v2-flaky", {"GPUSERVE_FAULT_ERROR_RATE": "0.2"}),
             "late": ("v2-late", {"GPUSERVE_FAULT_AFTER_S": "10"}),
             "slow": ("v2-slow", {"GPUSERVE_EXTRA_LATENCY_MS": "50"})}
    version, env = knobs[scenario]
    return {"version": version, "artifact": "models/v2.npz", "runtime_env": {"env_vars": env}}


def service(settings: Settings, name: str, **version) -> dict:
    # request_timeout_s as long as the clients' own (30 s): the Serve peers have no per-app
    # timeout, and a shorter one here turned saturation's queueing into 504s for gpuserve
    # alone (run 20261130T035742Z, where it was 2 s).
    return {"name": name, "pool": "gpu", "num_replicas": settings.n, "ray_actor_options": {"num_gpus": 1},
            "graceful_shutdown_timeout_s": 2, "request_timeout_s": 30, "max_ongoing_requests": 16,
            "max_queued_requests": 64, **({"version": "v1"} | version)}


# A service the stack keeps while a Serve-native case runs (a stack declares at least one):
# a sliver of one GPU, on a pool with a node to spare for it.
PLACEHOLDER = {"name": "idle", "pool": "gpu", "version": "v1", "num_replicas": 1,
               "ray_actor_options": {"num_gpus": 0.01}, "graceful_shutdown_timeout_s": 2, "request_timeout_s": 2}


# ------------------------------------------------------------------ the peers
def run_gpuserve(stack: LocalStack, settings: Settings, case: Case, name: str, workdir: Path,
                 corrupt: Path) -> dict:
    stack.rollout = {"max_surge_percent": case.peer.surge, "bake_seconds": settings.bake_s,
                     "step_timeout_seconds": settings.step_timeout_s, "gates": {"min_probes": 20}}
    stack.services = [service(settings, name)]
    stack.write_config()
    stack.up()  # a fresh service at v1; the previous case's gone, a lost node restarted
    endpoint = stack.endpoint(name)
    sampler = Sampler(stack, name, endpoint.rsplit("/", 1)[0] + RESERVED_PREFIX + "routes").start()
    load, offered = start_load(endpoint, settings, case, workdir / f"{name}.jsonl")
    time.sleep(settings.warmup_s)
    killer = NodeKiller(stack, sampler, name, "v1").start() if case.scenario == "node-loss" else None
    stack.services = [service(settings, name, **target_version(case.scenario, corrupt))]
    stack.write_config()
    clock = PulumiClock()
    t0 = time.time()
    result = stack.up(check=False, on_event=clock.see)
    returned = time.time()
    # The change is `pulumi up` itself: up to its summary event. The Automation API's own
    # `stack output` and `stack history` reads after it are the harness's, not a user's.
    t1 = clock.summary or returned
    time.sleep(settings.cooldown_s)
    if killer:
        killer.stop()
    records = load.stop()
    sampler.stop()
    lines = controller_lines(result, name)
    plan = plan_rollout(settings.n, case.peer.surge)
    ready = milestone(lines, "canary", "deployed")  # from the rollout's first line: PUT to ready
    bake = settings.bake_s
    ideal = plan.waves * (ready + bake) if ready is not None and result.ok else None
    verdict = milestone(lines, ": FAIL:") or milestone(lines, "rolling back")
    back = milestone(lines, "rollback: all traffic on")
    steps = time_by_step(lines) if result.ok else None
    if steps:
        steps.update(clock.phases(t0, t1, steps["controller_total"]))
    metrics = {
        **request_metrics(records, t0, t1), **gpu_metrics(sampler.samples, t0, t1, settings.n), **offered,
        "wall_s": round(t1 - t0, 1), "up_succeeded": result.ok, "waves": plan.waves,
        "replica_ready_s": ready, "ideal_s": round(ideal, 1) if ideal is not None else None,
        "actual_over_ideal": round((t1 - t0) / ideal, 2) if ideal else None,
        # Stricter: the rollout's own waits, every replica's ready wait as it was (later
        # replicas start faster than the first, which also pays the new version's runtime
        # env) plus the bakes; what is left over is overhead: Pulumi, Serve's writes, drains.
        "actual_over_own_waits": round((t1 - t0) / (steps["ready wait"] + plan.waves * bake), 2)
        if steps and steps.get("ready wait") else None,
        "detect_to_primary_s": round(back - verdict, 2) if back is not None and verdict is not None else None,
        "retries": retries_spent(stack, name), "time_by_step": steps,
        "automation_api_reads_s": round(returned - t1, 1),
        "pulumi_before_rollout": clock.before_rollout(t0) if result.ok else None,
        "node_lost": killer.killed if killer else None,
        "outcome": outcome_of(case, result, lines),
        # Why `pulumi up` failed, in its own words: the error diagnostics' last lines.
        "up_error": None if result.ok else "\n".join(
            [message for _, severity, message in result.diagnostics if severity == "error"][-3:])[-1500:] or None,
    }
    return {"metrics": metrics, "samples": sampler.samples, "records": records, "t0": t0, "t1": t1,
            "log": [line for _, line in lines]}


def outcome_of(case: Case, result: Run, lines) -> str:
    rolled_back = milestone(lines, "rollback complete") is not None
    if case.scenario in ("healthy", "node-loss"):
        return "v2 serves" if result.ok else "rolled back, v1 serves" if rolled_back else "failed (see up_error)"
    return "NOT rolled back" if result.ok else "rolled back, v1 serves" if rolled_back else "failed (see up_error)"


def run_serve(stack: LocalStack, settings: Settings, case: Case, name: str, workdir: Path, corrupt: Path) -> dict:
    """What a Ray Serve user does without gpuserve: PUT the app with new args and let
    Serve's own rolling update replace the replicas, at the peer's max_surge_percent."""
    stack.services = [PLACEHOLDER]
    stack.write_config()
    stack.up()  # the previous case's service gone, a lost node restarted
    route = f"/{name}"
    http_url = f"http://127.0.0.1:{stack.ports['http_port']}"

    def app(artifact: str, version: str, runtime_env: dict | None = None) -> dict:
        deployment = {"name": apps.MODEL_DEPLOYMENT, "num_replicas": settings.n, "max_ongoing_requests": 16,
                      "max_queued_requests": 64, "graceful_shutdown_timeout_s": 2,
                      "ray_actor_options": {"num_gpus": 1, "num_cpus": 0}}
        if case.peer.surge:
            deployment["max_surge_percent"] = case.peer.surge
        return {"name": name, "route_prefix": route, "import_path": "runtime.app.model:build",
                "args": {"service": name, "version": version, "artifact": artifact},
                "deployments": [deployment], **({"runtime_env": runtime_env} if runtime_env else {})}

    models = REPO / "runtime" / "app" / "models"
    target = target_version(case.scenario, corrupt)
    artifact = str(corrupt) if case.scenario == "broken" else str(models / "v2.npz")
    with ServeClient(stack.dashboard_url, stack.token()) as serve:
        serve.update_apps(lambda a: {**a, name: app(str(models / "v1.npz"), "v1")})
        wait_app(serve, name, lambda s: s.status == "RUNNING" and s.running_replicas == settings.n, 120)
        sampler = Sampler(stack, name, "")
        sampler.initial_ids = serve.state().apps[name].replica_ids
        sampler.start()
        load, offered = start_load(http_url + route, settings, case, workdir / f"{name}.jsonl")
        time.sleep(settings.warmup_s)
        killer = NodeKiller(stack, sampler, name, "old").start() if case.scenario == "node-loss" else None
        t0 = time.time()
        serve.update_apps(lambda a: {**a, name: app(artifact, target["version"], target.get("runtime_env"))})
        old = set(sampler.initial_ids)
        if case.scenario == "broken":
            done = wait_app(serve, name, lambda s: s.status in ("DEPLOY_FAILED", "UNHEALTHY"), settings.peer_timeout_s)
        else:
            done = wait_app(serve, name, lambda s: s.status == "RUNNING" and s.running_replicas == settings.n
                            and not (s.replica_ids & old), settings.peer_timeout_s)
        t1 = time.time()
        time.sleep(settings.cooldown_s)
        if killer:
            killer.stop()
        records = load.stop()
        sampler.stop()
        serve.update_apps(lambda a: {k: v for k, v in a.items() if k != name})
    # Answered after the change ended (an open loop's backlog starts requests late: their
    # scheduled start can predate t1 though they were answered after it).
    after = sorted({r.get("version") for r in records
                    if r["t"] + r["ms"] / 1000 > t1 and r["status"] == 200} - {None})
    serving = ", ".join(after) or "nothing"
    outcome = (f"DEPLOY_FAILED; {serving} serves" if case.scenario == "broken" else f"{serving} serves") \
        if done else f"did not finish in {settings.peer_timeout_s:g}s; {serving} serves"
    metrics = {
        **request_metrics(records, t0, t1), **gpu_metrics(sampler.samples, t0, t1, settings.n), **offered,
        "wall_s": round(t1 - t0, 1), "up_succeeded": None, "waves": None, "replica_ready_s": None,
        "ideal_s": None, "actual_over_ideal": None, "actual_over_own_waits": None, "detect_to_primary_s": None,
        "retries": None,
        "time_by_step": None, "node_lost": killer.killed if killer else None, "outcome": outcome,
        "up_error": None,
    }
    return {"metrics": metrics, "samples": sampler.samples, "records": records, "t0": t0, "t1": t1, "log": []}


def wait_app(serve: ServeClient, name: str, ready, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.state().apps.get(name)
        if app is not None and ready(app):
            return True
        time.sleep(0.25)
    return False


# ------------------------------------------------------------------ the run
def machine(stack: LocalStack) -> dict:
    import ray

    return {"cores": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
            "pulumi": str(stack.workspace.pulumi_command.version), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    from bench import report

    args = arguments(__doc__, "one short case per peer of two, few requests (for tests)", argv,
                     quick="every peer, healthy rollout, moderate load, N=2 (< 5 min)")
    settings = SMOKE if args.smoke else QUICK if args.quick else Settings()
    chosen = {name: getattr(args, name) for name in ("peers", "scenarios", "loads") if getattr(args, name)}
    if chosen:
        known = {"peers": [p.key for p in PEERS], "scenarios": list(SCENARIOS), "loads": list(LOADS)}
        unknown = [f"--{k} {v}" for k, values in chosen.items() for v in values if v not in known[k]]
        if unknown:
            print(f"bench: unknown {', '.join(unknown)}; choose from {known}", file=sys.stderr)
            return 2
        settings = replace(settings, mode=f"{settings.mode} subset", **chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    cases = settings.cases()
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuserve-bench-") as tmp:
        workdir = Path(tmp)
        corrupt = workdir / "broken.npz"
        corrupt.write_bytes(b"not a numpy archive")
        # Room for blue/green (2N) and the placeholder's sliver: one node more.
        nodes = -(-2 * settings.n // settings.gpus_per_node) + 1
        stack = LocalStack(workdir / "stack", gpus=nodes * settings.gpus_per_node,
                           pool={"gpus_per_node": settings.gpus_per_node}, services=[PLACEHOLDER],
                           rollout={"bake_seconds": settings.bake_s})
        try:
            stack.up()
            host = machine(stack)
            for index, case in enumerate(cases, start=1):
                print(f"[bench] {index}/{len(cases)} {case.name} ...", flush=True)
                runner = run_gpuserve if case.peer.kind == "gpuserve" else run_serve
                outcome = runner(stack, settings, case, f"c{index}", workdir, corrupt)
                metrics = outcome["metrics"]
                png = args.out / f"{stamp}-{index:02d}-{case.slug}.png"
                report.timeline_png(png, case.name, outcome)
                results.append({"case": case.name, "peer": case.peer.key, "peer_title": case.peer.title,
                                "scenario": case.scenario, "load": case.load, "max_surge_percent": case.peer.surge,
                                "metrics": metrics, "timeline_png": png.name, "controller_log": outcome["log"],
                                "samples": len(outcome["samples"]), "requests": len(outcome["records"])})
                print(f"[bench]   sent {metrics['sent']} failed {metrics['failed']} peak/steady "
                      f"{metrics['peak_over_steady']} in {metrics['wall_s']}s: {metrics['outcome']}", flush=True)
        finally:
            stack.destroy()
    settings_record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}
    data = {"timestamp": stamp, "mode": settings.mode, "machine": host,
            "settings": {**settings_record, "gpus_per_replica": 1, "sample_period_s": 0.25,
                         "percentile_method": PERCENTILE_METHOD},
            "duration_s": round(time.monotonic() - started, 1), "cases": results}
    path = args.out / f"{stamp}-rollouts.json"
    path.write_text(json.dumps(data, indent=1))
    table = report.markdown(data)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\n[bench] wrote {path} in {data['duration_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
