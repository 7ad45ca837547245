"""The README's console pictures, from real rollouts on a throwaway local stack.

    .venv/bin/python -m bench.console_pictures [--out docs/console]

Brings up a stack (a head, 3 virtual GPUs, the classifier at N=2, 2 clients of load),
rolls v2 out while `gpuserve watch --svg` looks on from its own process, then rolls a
version that fails 20% of its requests out, which the gates roll back. Writes
`watch.svg` (the watch screen mid-rollout) and `timeline-rollout.png`,
`timeline-rollback.png` (`gpuserve timeline` of each). Takes about 4 minutes here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.integration.harness import CLASSIFIER_SERVICE, REPO, Load, LocalStack

SERVICE = {**CLASSIFIER_SERVICE, "num_replicas": 2}


def gpuserve(stack: LocalStack, *args: str) -> subprocess.CompletedProcess:
    env = {**stack.env, "GPUSERVE_PROJECT": str(stack.project), "COLUMNS": "110"}
    return subprocess.run([sys.executable, "-m", "console", *args, "--stack", stack.name], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=True)


def roll(stack: LocalStack, version: str, **extra) -> None:
    stack.services = [{**SERVICE, "version": version, "artifact": "models/v2.npz", **extra}]
    stack.write_config()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "console")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpuserve-pictures-") as root:
        stack = LocalStack(Path(root), gpus=3, services=[{**SERVICE, "version": "v1"}],
                           rollout={"max_surge_percent": 50, "bake_seconds": 10, "step_timeout_seconds": 120,
                                    "gates": {"min_probes": 5}})
        with stack.running(), Load(stack.endpoint("clf"), clients=2):
            roll(stack, "v2")
            result: dict = {}
            up = threading.Thread(target=lambda: result.setdefault("run", stack.up(check=False)))
            up.start()
            while (stack.routing("clf")["weights"].get("v2") or 0) == 0 and up.is_alive():
                time.sleep(0.5)
            time.sleep(4)  # into the bake: real traffic on both versions
            gpuserve(stack, "watch", "clf", "--count", "1", "--svg", str(args.out / "watch.svg"))
            up.join()
            if not result["run"].ok:
                print(result["run"].report(), file=sys.stderr)
                return 1
            gpuserve(stack, "timeline", "clf", "--out", str(args.out / "timeline-rollout.png"))
            roll(stack, "v3-flaky", runtime_env={"env_vars": {"GPUSERVE_FAULT_ERROR_RATE": "0.2"}})
            stack.up(check=False)  # the gates roll it back
            gpuserve(stack, "timeline", "clf", "--out", str(args.out / "timeline-rollback.png"))
            print(gpuserve(stack, "history", "clf").stdout)
    print(f"wrote {', '.join(p.name for p in sorted(args.out.iterdir()))} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
