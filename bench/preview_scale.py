"""How `pulumi preview` cost grows with the number of services.

    .venv/bin/python -m bench.preview_scale [sizes...]     (default: 1 10 50)

Each size is a fresh local stack of real components (one Ray head pool, services sharing
it), previewed with the real CLI and the policy pack; nothing is created. Reports wall
time per size and the growth relative to one service, measured side by side in one run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.integration.harness import POLICY_PACK, LocalStack


def services(count: int) -> list[dict]:
    # 0.1 GPU each keeps 50 services and their surge within an 8-GPU pool.
    return [{"name": f"svc-{i}", "pool": "gpu", "version": "v1", "num_replicas": 1,
             "ray_actor_options": {"num_gpus": 0.1}, "graceful_shutdown_timeout_s": 5,
             "request_timeout_s": 5} for i in range(count)]


def main(sizes: list[int]) -> int:
    timings: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="gpuserve-preview-") as root:
        for size in sizes:
            stack = LocalStack(Path(root) / str(size), gpus=8, services=services(size))
            stack.preview(policy_packs=[POLICY_PACK])  # warm caches (bytecode, plugins)
            start = time.monotonic()
            stack.preview(policy_packs=[POLICY_PACK])
            timings[size] = time.monotonic() - start
            print(f"{size:3d} services: preview {timings[size]:.1f}s", flush=True)
    base = timings[sizes[0]]
    print("| services | preview s | x first size |\n|---|---|---|")
    for size in sizes:
        print(f"| {size} | {timings[size]:.1f} | {timings[size] / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [1, 10, 50]))
