"""Repeat the v1 <-> v2 rollout (N=4, p=25) on one real local stack and report, per run,
requests sent and failed and the peak GPUs Ray reports. Usage:

    .venv/bin/python -m bench.rollout_repeat [runs]     (default 10)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.integration.harness import GpuSampler, Load, LocalStack
from tests.integration.test_rollouts import BASE, N, ROLLOUT


def main(runs: int = 10) -> int:
    with tempfile.TemporaryDirectory(prefix="gpuserve-repeat-") as root:
        stack = LocalStack(Path(root), gpus=6, services=[{**BASE, "version": "v1"}], rollout=ROLLOUT)
        stack.up()
        rows, version = [], "v1"
        try:
            for run in range(1, runs + 1):
                version = "v2" if version == "v1" else "v1"
                stack.services = [{**BASE, "version": version}]
                stack.write_config()
                start = time.monotonic()
                with Load(stack.endpoint("llm")) as load, GpuSampler(stack.dashboard_url, stack.token()) as gpus:
                    stack.up()
                rows.append((run, version, load.sent, load.failed, gpus.peak, time.monotonic() - start))
                print(f"run {run:2d} -> {version}: sent {load.sent:5d} failed {load.failed} "
                      f"peak GPUs {gpus.peak:g} (cap {N + 1}) in {rows[-1][5]:.1f}s", flush=True)
        finally:
            stack.destroy()
    failed = sum(r[3] for r in rows)
    print(f"{len(rows)} rollouts: {sum(r[2] for r in rows)} requests, {failed} failed, "
          f"max peak GPUs {max(r[4] for r in rows):g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
