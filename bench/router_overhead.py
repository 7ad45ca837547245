"""What the splitter adds to a request, side by side with calling the version directly.

    .venv/bin/python -m bench.router_overhead [--smoke] [--out DIR]

One local stack (real CLI, real Ray Serve) serving the shipped classifier. Each round
sends the same requests at the same concurrency twice, interleaved: once through the
splitter (the public endpoint) and once straight to the version's hidden prefix on the
Serve proxy (what the splitter forwards to). Rounds alternate which path goes first, so
machine noise falls on both. Reports, per concurrency: p50/p99 latency of each path, the
difference, the splitter's own CPU time per request (its processes' user+system time),
and the machine's CPU time per request on each path.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.cli import arguments
from bench.run import machine
from tests.integration.harness import LocalStack
BODY = {"features": [5.9, 3.0, 4.2, 1.5]}
SERVICE = {"name": "clf", "pool": "gpu", "version": "v1", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1},
           "max_ongoing_requests": 32, "max_queued_requests": 256, "graceful_shutdown_timeout_s": 1}


@dataclass
class Settings:
    concurrencies: tuple[int, ...] = (1, 4)
    rounds: int = 6
    requests: int = 300  # per path per round
    warmup: int = 100


SMOKE = Settings(concurrencies=(1,), rounds=1, requests=30, warmup=10)


def send(url: str, count: int, concurrency: int) -> list[float]:
    """Latencies (ms) of `count` requests from `concurrency` closed-loop clients; a failed
    request aborts the bench (overhead figures over errors would mean nothing)."""
    per_client = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]

    def client(n: int) -> list[float]:
        out = []
        with httpx.Client(timeout=30) as http:
            for _ in range(n):
                start = time.perf_counter()
                response = http.post(url, json=BODY)
                out.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")
        return out

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return [ms for part in pool.map(client, per_client) for ms in part]


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "softirq", 0.0) + getattr(t, "irq", 0.0)


def measure(stack: LocalStack, settings: Settings) -> list[dict]:
    public = stack.endpoint("clf")
    direct = f"http://127.0.0.1:{stack.ports['http_port']}/_v/clf/v1"
    splitter_pids = [i.pid for i in stack.splitter_instances()]
    rows = []
    for concurrency in settings.concurrencies:
        send(public, settings.warmup, concurrency)
        send(direct, settings.warmup, concurrency)
        latencies = {"direct": [], "splitter": []}
        machine = {"direct": 0.0, "splitter": 0.0}
        splitter_cpu = 0.0
        for round_ in range(settings.rounds):
            order = ("splitter", "direct") if round_ % 2 == 0 else ("direct", "splitter")
            for path in order:
                before_machine, before_splitter = machine_cpu_s(), cpu_s(splitter_pids)
                latencies[path] += send(public if path == "splitter" else direct, settings.requests, concurrency)
                machine[path] += machine_cpu_s() - before_machine
                if path == "splitter":
                    splitter_cpu += cpu_s(splitter_pids) - before_splitter
        n = settings.rounds * settings.requests
        p = {path: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for path, v in latencies.items()}
        rows.append({
            "concurrency": concurrency, "requests_per_path": n,
            "p50_ms_direct": round(p["direct"][0], 2), "p50_ms_splitter": round(p["splitter"][0], 2),
            "p50_ms_added": round(p["splitter"][0] - p["direct"][0], 2),
            "p99_ms_direct": round(p["direct"][1], 2), "p99_ms_splitter": round(p["splitter"][1], 2),
            "p99_ms_added": round(p["splitter"][1] - p["direct"][1], 2),
            "splitter_cpu_ms_per_request": round(splitter_cpu / n * 1000, 3),
            "machine_cpu_ms_per_request_direct": round(machine["direct"] / n * 1000, 2),
            "machine_cpu_ms_per_request_splitter": round(machine["splitter"] / n * 1000, 2),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| clients | p50 direct ms | p50 via splitter ms | p50 added ms | p99 direct ms | p99 via splitter ms "
             "| p99 added ms | splitter CPU ms/req | machine CPU ms/req direct | machine CPU ms/req via splitter |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['p50_ms_direct']} | {r['p50_ms_splitter']} | {r['p50_ms_added']} | "
                     f"{r['p99_ms_direct']} | {r['p99_ms_splitter']} | {r['p99_ms_added']} | "
                     f"{r['splitter_cpu_ms_per_request']} | {r['machine_cpu_ms_per_request_direct']} | "
                     f"{r['machine_cpu_ms_per_request_splitter']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "one short round (for tests)", argv)
    settings = SMOKE if args.smoke else Settings()
    with tempfile.TemporaryDirectory(prefix="gpuserve-router-") as root:
        stack = LocalStack(Path(root), gpus=2, services=[SERVICE], rollout={"bake_seconds": 0})
        try:
            stack.up()
            rows = measure(stack, settings)
            host = machine(stack)
        finally:
            stack.destroy()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": host, "settings": settings.__dict__, "rows": rows}
    (args.out / f"{stamp}-router.json").write_text(json.dumps(report, indent=2))
    text = f"# Router overhead ({stamp})\n\n{table(rows)}\n"
    (args.out / f"{stamp}-router.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
