"""Rollout safety and GPU cost, side by side with Ray Serve's own update, in one run.

    make bench          (or: .venv/bin/python -m bench.run [--smoke] [--out DIR])

One local Ray cluster with virtual GPUs (real Pulumi CLI, real Ray Serve), one service of
N=4 GPU replicas per scenario (a fresh one each time), steady load from a separate
process (bench/loadgen.py), and samples of GPUs in use and replicas per version from Ray
every 250 ms. Scenarios:

1. gpuserve rollout v1 -> v2, max_surge_percent 25             (pulumi up)
2. gpuserve blue/green, max_surge_percent 100                  (pulumi up)
3. peer: Ray Serve's own in-place update of the same app v1->v2 (Serve REST API)
4. gpuserve rollout to a broken version (constructor raises)   (pulumi up, rolls back)
5. peer: Ray Serve's own update to the same broken version     (Serve REST API)
6. gpuserve rollout to a version failing 20% of requests       (pulumi up, rolls back)
7. peer: Ray Serve's own update to that same flaky version      (Serve REST API)
8. gpuserve rollout to a version that starts failing 10 s in    (pulumi up, rolls back)
9. gpuserve rollout to a version 50 ms slower per request       (pulumi up, rolls back)

Per scenario: requests sent and failed (client side), latency before and during, GPUs,
capacity, wall time, and for rollbacks the detect-to-primary time (the failing verdict
to all traffic back on the primary) and the retries the splitter spent on the primary.

Writes bench/results/<timestamp>.json, .md and one PNG timeline per scenario.
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.cli import arguments
from runtime import apps
from runtime.plan import plan_rollout
from runtime.ray_state import gpus_in_use
from runtime.serve_api import ServeClient
from runtime.splitter import route_of
from tests.integration.harness import REPO, LocalStack, Run
from traffic.protocol import RESERVED_PREFIX



@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "gpuserve" | "peer"
    target: str  # "v2" | "broken" | "flaky" | "late" | "slow"
    surge: int = 25


SCENARIOS = [
    Scenario("gpuserve rollout p=25", "gpuserve", "v2", 25),
    Scenario("gpuserve blue/green p=100", "gpuserve", "v2", 100),
    Scenario("Ray Serve native update", "peer", "v2"),
    Scenario("gpuserve -> broken (rollback)", "gpuserve", "broken", 25),
    Scenario("Ray Serve native -> broken", "peer", "broken"),
    Scenario("gpuserve -> 20% errors (rollback)", "gpuserve", "flaky", 25),
    # Beyond the six asked for: the peer facing the same flaky version, for a like-for-like row.
    Scenario("Ray Serve native -> 20% errors", "peer", "flaky"),
    # Regressions only real traffic shows: failing 10 s after start, and 50 ms slower.
    Scenario("gpuserve -> fails late (rollback)", "gpuserve", "late", 25),
    Scenario("gpuserve -> +50 ms (rollback)", "gpuserve", "slow", 25),
]


@dataclass
class Settings:
    n: int = 4
    clients: int = 4
    warmup_s: float = 8.0
    cooldown_s: float = 3.0
    bake_s: float = 3.0
    peer_timeout_s: float = 90.0
    scenarios: list[Scenario] = field(default_factory=lambda: list(SCENARIOS))


SMOKE = Settings(n=2, clients=2, warmup_s=3.0, cooldown_s=1.0, bake_s=0.0, scenarios=[SCENARIOS[0]])


# ------------------------------------------------------------------ sampling
class Sampler:
    """GPUs in use (Ray State API), running replicas per version and router weights."""

    def __init__(self, stack: LocalStack, app_prefix: str, route: str, period_s: float = 0.25):
        self.stack, self.app_prefix, self.route, self.period_s = stack, app_prefix, route, period_s
        self.samples: list[dict] = []
        self.initial_ids: set[str] | None = None  # peer: replicas that predate the change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        token = self.stack.token()
        with httpx.Client(timeout=5) as http, ServeClient(self.stack.dashboard_url, token) as serve:
            while not self._stop.is_set():
                sample: dict = {"t": time.time()}
                try:
                    # Only this scenario's replicas: an earlier scenario's service may
                    # still hold GPUs on the shared cluster.
                    sample["gpus"] = gpus_in_use(self.stack.dashboard_url, token, http, app=self.app_prefix)
                    state = serve.state()
                    replicas: dict[str, int] = {}
                    listed = 0
                    for name, app in state.apps.items():
                        if name == self.app_prefix or name.startswith(self.app_prefix + "--"):
                            for deployment in app.deployments.values():
                                for replica in deployment.replicas:
                                    listed += 1
                                    # UPDATING replicas are reconfiguring and still serve.
                                    if replica.state not in ("RUNNING", "UPDATING") \
                                            or deployment.name != apps.MODEL_DEPLOYMENT:
                                        continue
                                    version = apps.version_of(name) or self._peer_version(replica.replica_id)
                                    replicas[version] = replicas.get(version, 0) + 1
                    # Right after a PUT, Serve lists an app with no replicas at all for
                    # about half a second while it rebuilds it (requests are still served);
                    # such a sample says nothing about capacity, so it is left out.
                    if listed:
                        sample["replicas"] = replicas
                    if self.route:  # the splitter's table for this service
                        route = route_of(http.get(self.route).json(), self.app_prefix) or {}
                        sample["weights"] = route.get("weights", {})
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self.samples.append(sample)
                self._stop.wait(self.period_s)

    def _peer_version(self, replica_id: str) -> str:
        return "old" if self.initial_ids is None or replica_id in self.initial_ids else "new"

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ------------------------------------------------------------------ load
class LoadProcess:
    def __init__(self, url: str, clients: int, out: Path):
        self.out = out
        self.process = subprocess.Popen([sys.executable, "-m", "bench.loadgen", url, str(clients), str(out)],
                                        cwd=REPO, start_new_session=True)

    def stop(self) -> list[dict]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ metrics
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def request_metrics(records: list[dict], t0: float, t1: float) -> dict:
    failed_by_status: dict[str, int] = {}
    for r in records:
        if r["status"] != 200:
            key = str(r["status"])
            failed_by_status[key] = failed_by_status.get(key, 0) + 1
    before = [r["ms"] for r in records if r["t"] < t0 and r["status"] == 200]
    during = [r["ms"] for r in records if t0 <= r["t"] <= t1 and r["status"] == 200]
    failed = sum(failed_by_status.values())
    return {
        "sent": len(records),
        "failed": failed,
        "failure_rate": round(failed / len(records), 5) if records else None,
        "failed_by_status": {k: v for k, v in failed_by_status.items() if not k.startswith("exception")},
        "failed_by_exception": {k: v for k, v in failed_by_status.items() if k.startswith("exception")},
        "p50_ms_before": percentile(before, 0.50), "p99_ms_before": percentile(before, 0.99),
        "p50_ms_during": percentile(during, 0.50), "p99_ms_during": percentile(during, 0.99),
    }


# The controller's progress lines that mark a rollout's milestones, as they arrive in the
# engine's event stream. Times are arrival times (monotonic) relative to the rollout's first
# line, so Pulumi's own start-up is not counted in the replica ready time.
MILESTONES = {
    "rollout_start": lambda m: "rollout " in m and " -> " in m and "waves" in m,
    "canary_ready": lambda m: "canary" in m and "deployed" in m,
    "rollback_verdict": lambda m: ": FAIL:" in m or "rolling back" in m,
    "rollback_done": lambda m: "rollback complete" in m,
    "rollout_done": lambda m: "rollout complete" in m,
    # The moment a rollback has given the primary all the traffic again (the controller
    # says so right after the router write is confirmed by every splitter instance).
    "primary_all_traffic": lambda m: "rollback: all traffic on" in m,
}


def retries_spent(stack: LocalStack, service: str) -> int:
    """Requests the splitter instances retried on the primary for `service` (their own
    counters, summed over the live instances)."""
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


def controller_times(run: Run, service: str) -> dict:
    """Seconds from the rollout's first progress line to each milestone's first line."""
    arrivals: dict[str, float] = {}
    for arrived, _, message in run.diagnostics:
        if not message.startswith(f"[{service}]"):
            continue
        for milestone, matches in MILESTONES.items():
            if matches(message):
                arrivals.setdefault(milestone, arrived)
    start = arrivals.pop("rollout_start", None)
    return {k: round(t - start, 2) for k, t in arrivals.items()} if start is not None else {}


# ------------------------------------------------------------------ scenarios
def versions(target: str, corrupt: Path) -> dict:
    if target == "v2":
        return {"version": "v2"}
    if target == "broken":
        return {"version": "v3", "artifact": str(corrupt)}
    knobs = {"flaky": ("v2-flaky", {"GPUSERVE_FAULT_ERROR_RATE": "0.2"}),
             "late": ("v2-late", {"GPUSERVE_FAULT_AFTER_S": "10"}),
             "slow": ("v2-slow", {"GPUSERVE_EXTRA_LATENCY_MS": "50"})}
    version, env = knobs[target]
    return {"version": version, "artifact": "models/v2.npz", "runtime_env": {"env_vars": env}}


def service(settings: Settings, name: str, **version) -> dict:
    return {"name": name, "pool": "gpu", "num_replicas": settings.n, "ray_actor_options": {"num_gpus": 1},
            "graceful_shutdown_timeout_s": 2, "request_timeout_s": 2, "max_ongoing_requests": 16,
            "max_queued_requests": 64, **({"version": "v1"} | version)}


def run_gpuserve(stack: LocalStack, settings: Settings, scenario: Scenario, index: int, workdir: Path,
                 corrupt: Path) -> dict:
    name = f"s{index}"
    stack.rollout = {"max_surge_percent": scenario.surge, "bake_seconds": settings.bake_s,
                     "step_timeout_seconds": 120, "gates": {"min_probes": 20}}
    stack.services = [service(settings, name)]
    stack.write_config()
    stack.up()  # fresh service at v1 (and the previous scenario's service removed)
    endpoint = stack.endpoint(name)
    sampler = Sampler(stack, name, endpoint.rsplit("/", 1)[0] + RESERVED_PREFIX + "routes").start()
    load = LoadProcess(endpoint, settings.clients, workdir / f"{name}.jsonl")
    time.sleep(settings.warmup_s)
    stack.services = [service(settings, name, **versions(scenario.target, corrupt))]
    stack.write_config()
    t0 = time.time()
    result = stack.up(check=False)
    t1 = time.time()
    time.sleep(settings.cooldown_s)
    records = load.stop()
    sampler.stop()
    times = controller_times(result, name)
    plan = plan_rollout(settings.n, scenario.surge)
    ready = times.get("canary_ready")
    # The ideal describes a completed rollout; for a rolled-back one it has no meaning.
    ideal = plan.waves * (ready + settings.bake_s) if ready is not None and result.ok else None
    metrics = {
        **request_metrics(records, t0, t1),
        **gpu_metrics(sampler.samples, t0, t1, settings.n),
        "wall_s": round(t1 - t0, 1),
        "up_succeeded": result.ok,
        "waves": plan.waves,
        "replica_ready_s": ready,
        "ideal_s": round(ideal, 1) if ideal is not None else None,
        "actual_over_ideal": round((t1 - t0) / ideal, 2) if ideal else None,
        "rollback_s": (round(times["rollback_done"] - times["rollback_verdict"], 1)
                       if "rollback_done" in times and "rollback_verdict" in times else None),
        # From the failing verdict to all traffic on the primary again.
        "detect_to_primary_s": (round(times["primary_all_traffic"] - times["rollback_verdict"], 2)
                                if "primary_all_traffic" in times and "rollback_verdict" in times else None),
        "retries": retries_spent(stack, name),
    }
    log = [line.strip() for _, _, message in result.diagnostics for line in message.splitlines()
           if line.strip().startswith(f"[{name}]")]
    return {"metrics": metrics, "samples": sampler.samples, "records": records, "t0": t0, "t1": t1,
            "log": list(dict.fromkeys(log))}


def run_peer(stack: LocalStack, settings: Settings, scenario: Scenario, index: int, workdir: Path,
             corrupt: Path) -> dict:
    """What a Ray Serve user does without gpuserve: PUT the app with new args and let
    Serve's own rolling update replace the replicas in place."""
    name = f"peer{index}"
    route = f"/{name}"
    http_url = f"http://127.0.0.1:{stack.ports['http_port']}"

    def app(artifact: str, version: str) -> dict:
        config = {"name": name, "route_prefix": route, "import_path": "runtime.app.model:build",
                  "args": {"service": name, "version": version, "artifact": artifact},
                  "deployments": [{"name": apps.MODEL_DEPLOYMENT, "num_replicas": settings.n,
                                   "max_ongoing_requests": 16, "max_queued_requests": 64,
                                   "graceful_shutdown_timeout_s": 2,
                                   "ray_actor_options": {"num_gpus": 1, "num_cpus": 0}}]}
        return config

    models = REPO / "runtime" / "app" / "models"
    with ServeClient(stack.dashboard_url, stack.token()) as serve:
        serve.update_apps(lambda a: {**a, name: app(str(models / "v1.npz"), "v1")})
        wait_app(serve, name, lambda s: s.status == "RUNNING" and s.running_replicas == settings.n, 120)
        sampler = Sampler(stack, name, "")
        sampler.initial_ids = serve.state().apps[name].replica_ids
        sampler.start()
        load = LoadProcess(http_url + route, settings.clients, workdir / f"{name}.jsonl")
        time.sleep(settings.warmup_s)
        target = versions(scenario.target, corrupt)
        artifact = str(corrupt) if scenario.target == "broken" else str(models / "v2.npz")
        new_app = app(artifact, target["version"])
        if "runtime_env" in target:
            new_app["runtime_env"] = target["runtime_env"]
        t0 = time.time()
        serve.update_apps(lambda a: {**a, name: new_app})
        old = set(sampler.initial_ids)
        if scenario.target == "broken":
            done = wait_app(serve, name, lambda s: s.status in ("DEPLOY_FAILED", "UNHEALTHY"),
                            settings.peer_timeout_s)
        else:
            done = wait_app(serve, name, lambda s: s.status == "RUNNING" and s.running_replicas == settings.n
                            and not (s.replica_ids & old), settings.peer_timeout_s)
        t1 = time.time()
        time.sleep(settings.cooldown_s)
        records = load.stop()
        sampler.stop()
        serve.update_apps(lambda a: {k: v for k, v in a.items() if k != name})
    metrics = {
        **request_metrics(records, t0, t1),
        **gpu_metrics(sampler.samples, t0, t1, settings.n),
        "wall_s": round(t1 - t0, 1),
        "completed": done,
        "final_status": peer_outcome(scenario, records, t1),
        "waves": None, "replica_ready_s": None, "ideal_s": None, "actual_over_ideal": None, "rollback_s": None,
        "detect_to_primary_s": None, "retries": None, "up_succeeded": None,
    }
    return {"metrics": metrics, "samples": sampler.samples, "records": records, "t0": t0, "t1": t1}


def peer_outcome(scenario: Scenario, records: list[dict], t1: float) -> str:
    """What served after the change, from the responses themselves."""
    after = {r.get("version") for r in records if r["t"] > t1 and r["status"] == 200}
    if scenario.target == "broken":
        return f"DEPLOY_FAILED; old replicas serve ({', '.join(sorted(v for v in after if v)) or 'nothing'})"
    return f"{', '.join(sorted(v for v in after if v)) or 'nothing'} serves"


def wait_app(serve: ServeClient, name: str, ready, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.state().apps.get(name)
        if app is not None and ready(app):
            return True
        time.sleep(0.25)
    return False


def gpu_metrics(samples: list[dict], t0: float, t1: float, n: int) -> dict:
    during = [s["gpus"] for s in samples if "gpus" in s and t0 <= s["t"] <= t1 + 1]
    peak = max(during, default=None)
    # Serving capacity: replicas of any version that Serve reports as serving, over N.
    ready = [sum(s["replicas"].values()) for s in samples if "replicas" in s and t0 <= s["t"] <= t1]
    return {"peak_gpus": peak, "steady_gpus": float(n),
            "peak_over_steady": round(peak / n, 2) if peak is not None else None,
            "min_capacity": round(min(ready) / n, 2) if ready else None}


# ------------------------------------------------------------------ output
def timeline_png(path: Path, title: str, outcome: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_base = outcome["t0"]
    samples = outcome["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    versions_seen = sorted({v for s in samples for v in s.get("replicas", {})})
    shown = [s for s in samples if "replicas" in s]
    for version in versions_seen:
        top.step([s["t"] - t_base for s in shown], [s["replicas"].get(version, 0) for s in shown],
                 where="post", label=f"replicas {version}")
    top.step([s["t"] - t_base for s in samples if "gpus" in s], [s["gpus"] for s in samples if "gpus" in s],
             where="post", color="black", linestyle=":", label="GPUs held by this service")
    failed = [r["t"] - t_base for r in outcome["records"] if r["status"] != 200]
    if failed:
        top.plot(failed, [0.1] * len(failed), "rx", markersize=4, label=f"failed requests ({len(failed)})")
    top.set_ylabel("replicas / GPUs")
    top.legend(loc="upper left", fontsize=7)
    weight_versions = sorted({v for s in samples for v in s.get("weights", {})})
    for version in weight_versions:
        bottom.step([s["t"] - t_base for s in samples], [s.get("weights", {}).get(version, 0) for s in samples],
                    where="post", label=f"traffic % {version}")
    if not weight_versions:
        # The peer has no router: show the served versions of the load instead.
        served: dict[str, list[float]] = {}
        for r in outcome["records"]:
            if r["status"] == 200 and r.get("version"):
                served.setdefault(r["version"], []).append(r["t"] - t_base)
        for version, times in sorted(served.items()):
            bottom.hist(times, bins=60, alpha=0.5, label=f"responses from {version}")
    bottom.set_ylabel("traffic")
    bottom.set_xlabel("seconds from the change")
    bottom.legend(loc="upper left", fontsize=7)
    for axis in (top, bottom):
        axis.axvline(0, color="grey", linewidth=0.8)
        axis.axvline(outcome["t1"] - t_base, color="grey", linewidth=0.8, linestyle="--")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


COLUMNS = [
    ("scenario", "scenario"), ("sent", "sent"), ("failed", "failed"), ("failure_rate", "fail rate"),
    ("p50_ms_before", "p50 ms before"), ("p50_ms_during", "p50 ms during"),
    ("p99_ms_before", "p99 ms before"), ("p99_ms_during", "p99 ms during"),
    ("peak_over_steady", "peak/steady GPUs"), ("min_capacity", "min capacity"), ("wall_s", "change s"), ("ideal_s", "ideal s"),
    ("actual_over_ideal", "actual/ideal"), ("rollback_s", "rollback s"),
    ("detect_to_primary_s", "detect-to-primary s"), ("retries", "retries"), ("outcome", "outcome"),
]


def markdown(rows: list[dict]) -> str:
    def cell(key: str, value) -> str:
        if value is None:
            return "–"
        if key == "failure_rate":
            return f"{value:.2%}"
        return f"{value:g}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(cell(key, row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def outcome_text(scenario: Scenario, metrics: dict) -> str:
    if scenario.kind == "peer":
        return metrics["final_status"] if metrics["completed"] else "did not finish"
    if scenario.target == "v2":
        return "v2 serves" if metrics["up_succeeded"] else "failed"
    return "NOT rolled back" if metrics["up_succeeded"] else "rolled back, v1 serves"


def machine(stack: LocalStack) -> dict:
    import ray

    pulumi_version = str(stack.workspace.pulumi_command.version)
    return {"cores": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
            "pulumi": pulumi_version, "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "one short scenario, few requests (for tests)", argv)
    settings = SMOKE if args.smoke else Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows, results = [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuserve-bench-") as tmp:
        workdir = Path(tmp)
        corrupt = workdir / "broken.npz"
        corrupt.write_bytes(b"not a numpy archive")
        stack = LocalStack(workdir / "stack", gpus=2 * settings.n, services=[service(settings, "s0")],
                           rollout={"bake_seconds": settings.bake_s})
        try:
            stack.up()
            for index, scenario in enumerate(settings.scenarios, start=1):
                runner = run_gpuserve if scenario.kind == "gpuserve" else run_peer
                print(f"[bench] {index}/{len(settings.scenarios)} {scenario.name} ...", flush=True)
                outcome = runner(stack, settings, scenario, index, workdir, corrupt)
                metrics = outcome["metrics"]
                metrics["outcome"] = outcome_text(scenario, metrics)
                png = args.out / f"{stamp}-{index}-{re.sub(r'[^a-z0-9]+', '-', scenario.name.lower()).strip('-')}.png"
                timeline_png(png, scenario.name, outcome)
                rows.append({"scenario": scenario.name, **metrics})
                results.append({"scenario": scenario.name, "kind": scenario.kind, "target": scenario.target,
                                "max_surge_percent": scenario.surge if scenario.kind == "gpuserve" else None,
                                "metrics": metrics, "timeline_png": png.name,
                                "controller_log": outcome.get("log", []),
                                "samples": len(outcome["samples"]), "requests": len(outcome["records"])})
                print(f"[bench]   sent {metrics['sent']} failed {metrics['failed']} "
                      f"peak/steady {metrics['peak_over_steady']} in {metrics['wall_s']}s: {metrics['outcome']}",
                      flush=True)
        finally:
            stack.destroy()
    table = markdown(rows)
    report = {"timestamp": stamp, "machine": machine(stack), "settings": {
        "n": settings.n, "clients": settings.clients, "warmup_s": settings.warmup_s, "bake_s": settings.bake_s,
        "gpus_per_replica": 1, "sample_period_s": 0.25}, "duration_s": round(time.monotonic() - started, 1),
        "scenarios": results, "table": table}
    (args.out / f"{stamp}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stamp}.md").write_text(table + "\n")
    print(table)
    print(f"\n[bench] wrote {args.out / (stamp + '.json')} in {report['duration_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
