"""How `pulumi preview` cost grows with the number of services, and where it goes.

    .venv/bin/python -m bench.preview_scale [sizes...]     (default: 1 50 200)

Each size is a fresh local stack of real components (one Ray head pool, services sharing
it), previewed with the real CLI; nothing is created. Side by side in one run, per size:
- `preview + pack`: `pulumi preview --policy-pack policies` (what CI and prod run);
- `preview`: the same preview without the pack, so the pack's share is the difference;
- `program`: our Pulumi program alone, in this process under Pulumi's mocks (config
  parsing, components, the SDK registering each resource), the language host's share.
What remains of `preview` (the engine, the dynamic provider's check of each resource, the
CLI's start) is Pulumi's. Reports each column's cost per added service (goal for the
whole preview: <= 10 ms) and writes bench/results/<stamp>-preview.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import RESULTS

from tests.integration.harness import POLICY_PACK, LocalStack

COLUMNS = ("preview_pack_s", "preview_s", "program_s")
TITLES = {"preview_pack_s": "preview + pack", "preview_s": "preview", "program_s": "program (mocks)"}


def services(count: int) -> list[dict]:
    # 0.02 GPU each keeps 200 services and their surge within an 8-GPU pool.
    return [{"name": f"svc-{i}", "pool": "gpu", "version": "v1", "num_replicas": 1,
             "ray_actor_options": {"num_gpus": 0.02}, "graceful_shutdown_timeout_s": 5,
             "request_timeout_s": 5} for i in range(count)]


def program_under_mocks(stack: LocalStack) -> float:
    """Seconds for our program to register every resource under Pulumi's mocks, from the
    stack's own config (the values the CLI would hand the language host)."""
    import pulumi

    from components import program
    from tests.unit.components.pulumi_mocks import RecordingMocks
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    values = {key: value.value for key, value in stack.stack.get_all_config().items()}
    pulumi.runtime.set_mocks(RecordingMocks(), project="gpuserve", stack=stack.name, preview=True)
    start = time.monotonic()
    _sync_await(run_pulumi_func(lambda: program.run(values, stack.name)))
    return time.monotonic() - start


def measure(stack: LocalStack) -> dict[str, float]:
    def timed(**options) -> float:
        start = time.monotonic()
        stack.preview(**options)
        return time.monotonic() - start

    stack.preview(policy_packs=[POLICY_PACK])  # warm caches (bytecode, plugins)
    program_under_mocks(stack)  # and this process's imports
    return {"preview_pack_s": timed(policy_packs=[POLICY_PACK]), "preview_s": timed(),
            "program_s": program_under_mocks(stack)}


def main(sizes: list[int]) -> int:
    timings: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpuserve-preview-") as root:
        for size in sizes:
            stack = LocalStack(Path(root) / str(size), gpus=8, services=services(size))
            timings[size] = measure(stack)
            print(f"{size:3d} services: " + ", ".join(f"{TITLES[c]} {timings[size][c]:.2f}s" for c in COLUMNS),
                  flush=True)
    first = sizes[0]
    rows = []
    for size in sizes:
        row: dict = {"services": size}
        for column in COLUMNS:
            row[column] = round(timings[size][column], 3)
            row[column.removesuffix("_s") + "_ms_per_added_service"] = (
                round(1000 * (timings[size][column] - timings[first][column]) / (size - first), 1)
                if size > first else None)
        rows.append(row)
    per = {column: rows[-1][column.removesuffix("_s") + "_ms_per_added_service"] for column in COLUMNS}
    parts = None
    if per["preview_pack_s"] is not None:
        parts = {"policy pack": round(per["preview_pack_s"] - per["preview_s"], 1),
                 "program": per["program_s"],
                 "engine, provider checks, CLI": round(per["preview_s"] - per["program_s"], 1)}
    print(table(rows, parts))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-preview.json").write_text(json.dumps(
        {"timestamp": stamp, "goal_ms_per_added_service": 10, "rows": rows,
         "ms_per_added_service_by_part": parts}, indent=1))
    return 0


def table(rows: list[dict], parts: dict | None) -> str:
    def ms(value):
        return "–" if value is None else f"{value:g}"

    lines = ["| services | " + " | ".join(f"{TITLES[c]} s | ms/added" for c in COLUMNS) + " |",
             "|---|" + "---|---|" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['services']} | " + " | ".join(
            f"{row[c]:.2f} | {ms(row[c.removesuffix('_s') + '_ms_per_added_service'])}" for c in COLUMNS) + " |")
    if parts:
        lines.append("\nPer added service (largest size): " + ", ".join(f"{k} {v:g} ms" for k, v in parts.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [1, 50, 200]))
