"""How `pulumi preview` cost grows with the number of services, and where it goes.

    .venv/bin/python -m bench.preview_scale [--smoke] [--out DIR]     (sizes 1, 50, 200)

Each size is a fresh local stack of real components (one Ray head pool, services sharing
it), previewed with the real CLI; nothing is created. Side by side in one run, per size:
- `preview + pack`: `pulumi preview --policy-pack policies` (what CI and prod run);
- `preview`: the same preview without the pack, so the pack's share is the difference;
- `program`: our Pulumi program alone, in this process under Pulumi's mocks (config
  parsing, components, the SDK registering each resource), the language host's share;
- `floor` and `floor + pack`: Pulumi's own cost for the same shape, with nothing of ours
  in it: a bare program registering, per service, one component and one dynamic
  resource (inputs as large as our rollout resource's) whose provider checks nothing,
  previewed by the same CLI, without and with a pack of one policy that checks nothing.
What remains of `preview` (the engine, the dynamic provider's check of each resource, the
CLI's start) is Pulumi's; the floor says how much of it any program of this shape pays.
Each figure is the best of 3, the columns interleaved. Reports each column's cost per
added service (goal for the whole preview: <= 10 ms) and writes
bench/results/<stamp>-preview.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from pulumi import automation as auto

from bench.cli import arguments
from tests.integration.harness import CURRENT, POLICY_PACK, LocalStack, stack_env_vars
from tests.unit.components.pulumi_mocks import RecordingMocks

COLUMNS = ("preview_pack_s", "preview_s", "program_s", "floor_pack_s", "floor_s")
TITLES = {"preview_pack_s": "preview + pack", "preview_s": "preview", "program_s": "program (mocks)",
          "floor_pack_s": "floor + pack", "floor_s": "floor"}

# The floor: Pulumi's cost for our resource shape with none of our code. The provider and
# the pack live in modules (not __main__) so dill pickles them by reference, as ours are.
FLOOR_PROGRAM = """\
import json

import pulumi

from floor_provider import Noop
from pulumi.dynamic import Resource


class Item(Resource):
    def __init__(self, name, props, opts=None):
        super().__init__(Noop(), name, props, opts)


class Service(pulumi.ComponentResource):
    def __init__(self, name, spec):
        super().__init__("floor:index:Service", name)
        Item(name, {"spec": spec}, pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


config = pulumi.Config()
spec = json.loads(config.require("spec"))
for i in range(config.require_int("count")):
    Service(f"svc-{i}", spec)
"""
FLOOR_PROVIDER = """\
from pulumi.dynamic import CheckResult, CreateResult, ResourceProvider


class Noop(ResourceProvider):
    def check(self, olds, news):
        return CheckResult(news, [])

    def create(self, props):
        return CreateResult("noop", props)
"""
FLOOR_PACK = """\
from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy


def nothing(args, report_violation):
    return None


PolicyPack(name="floor", enforcement_level=EnforcementLevel.MANDATORY, policies=[
    ResourceValidationPolicy(name="nothing", description="checks nothing", validate=nothing)])
"""


def services(count: int) -> list[dict]:
    # 0.02 GPU each keeps 200 services and their surge within an 8-GPU pool.
    return [{"name": f"svc-{i}", "pool": "gpu", "version": "v1", "num_replicas": 1,
             "ray_actor_options": {"num_gpus": 0.02}, "graceful_shutdown_timeout_s": 5,
             "request_timeout_s": 5} for i in range(count)]


def program_under_mocks(stack: LocalStack) -> tuple[float, RecordingMocks]:
    """Seconds for our program to register every resource under Pulumi's mocks, from the
    stack's own config (the values the CLI would hand the language host), and the mocks
    holding what it registered."""
    import pulumi

    from components import program
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    values = {key: value.value for key, value in stack.stack.get_all_config().items()}
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpuserve", stack=stack.name, preview=True)
    start = time.monotonic()
    _sync_await(run_pulumi_func(lambda: program.run(values, stack.name)))
    return time.monotonic() - start, mocks


def rollout_spec(mocks: RecordingMocks) -> dict:
    """One of our rollout resources' `spec` input, so the floor's resources carry as much."""
    return mocks.of_type(":ModelRollout")[0].inputs["spec"]


class FloorStack:
    """The floor's stack: our toolchain, a bare program, `count` services."""

    def __init__(self, root: Path, count: int, spec: dict):
        project = root / "project"
        project.mkdir(parents=True)
        (project / "Pulumi.yaml").write_text(
            f"name: floor\nruntime:\n  name: python\n  options:\n    virtualenv: {CURRENT.venv}\n")
        (project / "__main__.py").write_text(FLOOR_PROGRAM)
        (project / "floor_provider.py").write_text(FLOOR_PROVIDER)
        pack = root / "pack"
        pack.mkdir()
        (pack / "__main__.py").write_text(FLOOR_PACK)
        # The same launcher form as policies/run-pack.
        self.pack = pack / "run-pack"
        self.pack.write_text(f'#!/bin/sh\nexec "{CURRENT.python}" -u -m pulumi.policy "$@" "{pack}"\n')
        self.pack.chmod(0o755)
        env = stack_env_vars(root, CURRENT)
        workspace = auto.LocalWorkspace(
            work_dir=str(project), pulumi_home=str(root / "pulumi-home"), env_vars=env,
            pulumi_command=auto.PulumiCommand(root=str(CURRENT.command_root)))
        self.stack = auto.Stack.create_or_select("floor", workspace)
        self.stack.set_all_config({"count": auto.ConfigValue(str(count)),
                                   "spec": auto.ConfigValue(json.dumps(spec))})

    def preview(self, **options) -> None:
        self.stack.preview(**options)


def timed(preview, **options) -> float:
    start = time.monotonic()
    preview(**options)
    return time.monotonic() - start


def measure(stack: LocalStack, floor_root: Path, count: int, repeats: int = 3) -> dict[str, float]:
    """Each column's best of `repeats`, the columns interleaved within each repeat so a
    noisy moment on this shared machine falls on all of them alike."""
    stack.preview(policy_packs=[POLICY_PACK])  # warm caches (bytecode, plugins)
    _, mocks = program_under_mocks(stack)  # and this process's imports
    floor = FloorStack(floor_root, count, rollout_spec(mocks))
    floor.preview(policy_packs=[str(floor.pack)])  # its warm-up
    runs = {"preview_pack_s": lambda: timed(stack.preview, policy_packs=[POLICY_PACK]),
            "preview_s": lambda: timed(stack.preview),
            "program_s": lambda: program_under_mocks(stack)[0],
            "floor_pack_s": lambda: timed(floor.preview, policy_packs=[str(floor.pack)]),
            "floor_s": lambda: timed(floor.preview)}
    best = {column: float("inf") for column in COLUMNS}
    for _ in range(repeats):
        for column in COLUMNS:
            best[column] = min(best[column], runs[column]())
    return best


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "sizes 1 and 2, one repeat (for tests)", argv)
    sizes, repeats = ([1, 2], 1) if args.smoke else ([1, 50, 200], 3)
    timings: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpuserve-preview-") as root:
        for size in sizes:
            stack = LocalStack(Path(root) / str(size), gpus=8, services=services(size))
            timings[size] = measure(stack, Path(root) / f"floor-{size}", size, repeats)
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
                 "engine, provider checks, CLI": round(per["preview_s"] - per["program_s"], 1),
                 # What any program of this shape pays, and what ours adds to it.
                 "floor (Pulumi alone)": per["floor_s"],
                 "floor's one-policy pack": round(per["floor_pack_s"] - per["floor_s"], 1),
                 "ours above the floor, pack included": round(per["preview_pack_s"] - per["floor_pack_s"], 1)}
    print(table(rows, parts))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}-preview.json").write_text(json.dumps(
        {"timestamp": stamp, "goal_ms_per_added_service": 10, "repeats": repeats, "rows": rows,
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
    sys.exit(main())
