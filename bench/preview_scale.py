"""How `pulumi preview` cost grows with the number of services.

    .venv/bin/python -m bench.preview_scale [sizes...]     (default: 1 50 200)

Each size is a fresh local stack of real components (one Ray head pool, services sharing
it), previewed with the real CLI and the policy pack; nothing is created. Reports wall
time per size, the growth relative to the first size and the cost of each added service
(goal: <= 10 ms), measured side by side in one run; writes bench/results/<stamp>-preview.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import RESULTS

from tests.integration.harness import POLICY_PACK, LocalStack


def services(count: int) -> list[dict]:
    # 0.02 GPU each keeps 200 services and their surge within an 8-GPU pool.
    return [{"name": f"svc-{i}", "pool": "gpu", "version": "v1", "num_replicas": 1,
             "ray_actor_options": {"num_gpus": 0.02}, "graceful_shutdown_timeout_s": 5,
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
    base, first = timings[sizes[0]], sizes[0]
    rows = [{"services": size, "preview_s": round(timings[size], 2), "over_first": round(timings[size] / base, 2),
             "ms_per_added_service": round(1000 * (timings[size] - base) / (size - first), 1) if size > first else None}
            for size in sizes]
    print("| services | preview s | x first size | ms per added service |\n|---|---|---|---|")
    for row in rows:
        per = row["ms_per_added_service"]
        print(f"| {row['services']} | {row['preview_s']:.1f} | {row['over_first']:.2f} | "
              f"{'–' if per is None else f'{per:g}'} |")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-preview.json").write_text(json.dumps({"timestamp": stamp, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [1, 50, 200]))
