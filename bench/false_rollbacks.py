"""Are the gates calm? Roll out identical code again and again under load, at the default
gate thresholds, and count the rollbacks: every one is a false rollback.

    .venv/bin/python -m bench.false_rollbacks [--runs 20] [--smoke] [--out DIR]

One real local stack (Pulumi CLI, Ray Serve, the splitter), one service of 2 GPU replicas
at max_surge_percent 50 (two waves), each wave baking 10 s with the real-traffic judge
evaluating every second over its 10 s window: about 20 evaluations per rollout. Each
rollout moves to a new version label with the very same code and weights, while 4 clients
send requests. Also reported: the canary-minus-primary median latency the judge saw, and
the smallest Mann-Whitney p-value (how close identical code came to failing the test; a
rollback also needs the median slack exceeded).

Writes bench/results/<timestamp>-false-rollbacks.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import arguments
from bench.run import machine
from runtime.spec import GateConfig
from tests.integration.harness import Load, LocalStack

SERVICE = {"name": "same", "pool": "gpu", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1},
           "graceful_shutdown_timeout_s": 1, "max_ongoing_requests": 32, "max_queued_requests": 128,
           "request_timeout_s": 10, "artifact": "models/v1.npz"}
PROBE = {"method": "POST", "json_body": {"features": [5.9, 3.0, 4.2, 1.5]}}


def rollout(bake_s: float) -> dict:
    # The gate thresholds are the defaults (runtime/spec.py GateConfig): that is what is measured.
    return {"max_surge_percent": 50, "bake_seconds": bake_s, "step_timeout_seconds": 120,
            "gates": {"probe": PROBE}}


def evaluations(stack: LocalStack) -> list[dict]:
    history = (stack.resource_outputs("ModelRollout") or {}).get("history") or []
    return [e for e in history if e.get("step") == "evaluation" and e.get("source") == "splitter"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--runs", type=int, default=20)
    known, rest = extra.parse_known_args(argv)
    args = arguments(__doc__, "two short rollouts (for tests)", rest)
    runs, bake_s = (2, 2.0) if args.smoke else (known.runs, 10.0)
    defaults = GateConfig()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpuserve-calm-") as root:
        stack = LocalStack(Path(root), gpus=4, services=[{**SERVICE, "version": "same-0"}], rollout=rollout(bake_s))
        with stack.running():
            host = machine(stack)
            for run in range(1, runs + 1):
                stack.services = [{**SERVICE, "version": f"same-{run}"}]
                stack.write_config()
                start = time.monotonic()
                with Load(stack.endpoint("same"), clients=4) as load:
                    time.sleep(1)
                    result = stack.up(check=False)
                judged = evaluations(stack) if result.ok else []
                # Only where the latency test ran (both sides had min_samples answers): at the
                # 100% step the primary's few in-flight answers are no distribution.
                tested = [e for e in judged if "p_value" in e]

                def slower_by(e: dict) -> float:
                    # What the test compared with its slack: the canary's median minus the
                    # reference's (at 100% the primary's before the rollout, not its 0 now).
                    return e.get("slower_by_ms", e["canary"]["p50_ms"] - e["primary"]["p50_ms"])
                diffs = [slower_by(e) for e in tested]
                p_values = [e["p_value"] for e in tested]
                rows.append({"run": run, "rolled_back": not result.ok, "sent": load.sent, "failed": load.failed,
                             "min_p_value": min(p_values) if p_values else None,
                             "evaluations": len(judged), "judged": sum(e["passed"] is not None for e in judged),
                             "latency_tested": len(tested),
                             "worst": max(tested, key=slower_by, default=None),
                             "max_median_diff_ms": round(max(diffs), 1) if diffs else None,
                             "seconds": round(time.monotonic() - start, 1),
                             "why": None if result.ok else next(
                                 (line for line in result.log.splitlines() if "rolled back" in line), "?")})
                r = rows[-1]
                print(f"run {run:2d}: {'ROLLED BACK' if r['rolled_back'] else 'promoted'}, {r['judged']} "
                      f"judged evaluations, {r['latency_tested']} latency-tested, max canary-primary median "
                      f"{r['max_median_diff_ms']} ms, "
                      f"min p {r['min_p_value']}, "
                      f"sent {r['sent']} failed {r['failed']} in {r['seconds']}s", flush=True)
                if not result.ok:
                    print(f"        {r['why']}", flush=True)
                    # Back to a clean primary (the rollback left the previous label serving).
                    stack.services = [{**SERVICE, "version": f"same-{run - 1}"}]
                    stack.write_config()
    false = sum(r["rolled_back"] for r in rows)
    summary = (f"{len(rows)} rollouts of identical code under load (4 clients), default gates "
               f"(window {defaults.window_seconds:g}s, p<{defaults.latency_p_value:g} and median "
               f"+max({defaults.latency_slack_ms:g}ms, {defaults.latency_slack_ratio:.0%}), success >= "
               f"{defaults.min_success_rate:.0%}): {false} rolled back; "
               f"{sum(r['judged'] for r in rows)} judged evaluations; {sum(r['failed'] for r in rows)} of "
               f"{sum(r['sent'] for r in rows)} requests failed")
    print(summary)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}-false-rollbacks.json").write_text(json.dumps(
        {"machine": host, "runs": runs, "bake_s": bake_s, "summary": summary, "rows": rows}, indent=1))
    table = ["| run | outcome | judged evaluations | latency-tested | max canary-primary median ms | min p-value "
             "| sent | failed |", "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['run']} | {'rolled back' if r['rolled_back'] else 'promoted'} | {r['judged']} | "
              f"{r['latency_tested']} | {r['max_median_diff_ms']} | {r['min_p_value']} | {r['sent']} | "
              f"{r['failed']} |" for r in rows]
    (args.out / f"{stamp}-false-rollbacks.md").write_text(
        f"# False rollbacks ({stamp})\n\n{summary}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
