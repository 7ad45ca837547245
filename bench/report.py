"""The rollout bench's results as tables and pictures, generated from its JSON, never typed.

    .venv/bin/python -m bench.report [RESULTS.json] [--readme]

Prints the tables of a results file (default: the newest full run in bench/results);
`--readme` writes them into README.md between the `bench:rollouts` markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cli import RESULTS

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- bench:rollouts:begin (bench/report.py writes this) -->", "<!-- bench:rollouts:end -->"

COLUMNS = [
    ("peer_title", "peer"), ("sent", "sent"), ("failed", "failed"),
    ("p50", "p50 ms steady → during"), ("p99", "p99 ms steady → during"),
    ("peak_over_steady", "peak/steady GPUs"), ("min_capacity", "min capacity"), ("wall_s", "change s"),
    ("actual_over_ideal", "actual/ideal"), ("detect_to_primary_s", "detect-to-primary s"),
    ("retries", "retries"), ("outcome", "outcome"),
]
STEP_ORDER = ("pulumi and the other resources",  # runs before the engine's phases were told apart
              "pulumi: program and the other resources", "pulumi: provider around the controller",
              "pulumi: finishing", "deploy", "ready wait", "baseline", "traffic shift", "bake", "gate",
              "drain", "delete", "other")


def newest(mode: str = "full", folder: Path = RESULTS) -> Path | None:
    for path in sorted(folder.glob("*-rollouts.json"), reverse=True):
        if json.loads(path.read_text()).get("mode") == mode:
            return path
    return None


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _row(case: dict) -> dict:
    m = case["metrics"]
    return {**m, "peer_title": case["peer_title"],
            "p50": f"{_cell(m['p50_ms_before'])} → {_cell(m['p50_ms_during'])}",
            "p99": f"{_cell(m['p99_ms_before'])} → {_cell(m['p99_ms_during'])}"}


def markdown(data: dict) -> str:
    """One table per load and scenario, the peers side by side; then where one rollout's
    time went."""
    out = []
    scenarios = list(dict.fromkeys((c["load"], c["scenario"]) for c in data["cases"]))
    for load, scenario in scenarios:
        cases = [c for c in data["cases"] if (c["load"], c["scenario"]) == (load, scenario)]
        rates = [f"{c['peer']} {c['metrics']['offered_rps']:g} of {c['metrics']['capacity_rps']:g} rps"
                 for c in cases if c["metrics"].get("offered_rps")]
        saturation = data["settings"]["saturation"]
        load_text = (f"{load}: open loop at {saturation:.0%} of each path's measured capacity ({', '.join(rates)})"
                     if rates else f"{load}: {data['settings']['clients']} closed-loop clients")
        out += [f"**{scenario}**, {load_text}", "",
                "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for case in cases:
            row = _row(case)
            out.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
        out.append("")
    steps = next((c for c in data["cases"] if c["peer"] == "gpuserve" and c["scenario"] == "healthy"
                  and c["metrics"].get("time_by_step")), None)
    if steps:
        m = steps["metrics"]
        spent = m["time_by_step"]
        out += [f"**Where the time goes** ({steps['case']}: {m['wall_s']:g} s, ideal {_cell(m['ideal_s'])} s "
                f"= {m['waves']} waves × (replica ready {_cell(m['replica_ready_s'])} s + bake "
                f"{data['settings']['bake_s']:g} s)); against the rollout's own ready waits plus bakes "
                f"({_cell(m.get('actual_over_own_waits'))}×), the rest below is overhead", "",
                "| step | seconds | share |", "|---|---|---|"]
        for key in STEP_ORDER:
            if key in spent:
                out.append(f"| {key} | {spent[key]:g} | {spent[key] / m['wall_s']:.0%} |")
        out.append("")
    out.append(f"Run {data['timestamp']} ({data['mode']}), {data['duration_s'] / 60:.0f} min on "
               f"{data['machine']['cores']} cores, Ray {data['machine']['ray']}, Pulumi {data['machine']['pulumi']}; "
               f"percentiles: numpy `{data['settings']['percentile_method']}`.")
    return "\n".join(out)


def readme_block(data: dict, source: str) -> str:
    return f"{BEGIN}\nFrom `{source}`:\n\n{markdown(data)}\n{END}"


def write_readme(path: Path, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    block = readme_block(json.loads(path.read_text()), f"bench/results/{path.name}")
    readme.write_text(text[:start] + block + text[end:])


def timeline_png(path: Path, title: str, outcome: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_base = outcome["t0"]
    samples = outcome["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    shown = [s for s in samples if "replicas" in s]
    for version in sorted({v for s in shown for v in s["replicas"]}):
        top.step([s["t"] - t_base for s in shown], [s["replicas"].get(version, 0) for s in shown],
                 where="post", label=f"replicas {version}")
    top.step([s["t"] - t_base for s in samples if "gpus" in s], [s["gpus"] for s in samples if "gpus" in s],
             where="post", color="black", linestyle=":", label="GPUs held by this service")
    failed = [r["t"] - t_base for r in outcome["records"] if r["status"] != 200]
    if failed:
        top.plot(failed, [0.1] * len(failed), "rx", markersize=4, label=f"failed requests ({len(failed)})")
    lost = outcome["metrics"].get("node_lost")
    if lost:
        for axis in (top, bottom):
            axis.axvline(lost["t"] - t_base, color="red", linewidth=0.8)
        top.annotate(f"node {lost['node']} lost", (lost["t"] - t_base, 0.3), fontsize=7, color="red")
    top.set_ylabel("replicas / GPUs")
    top.legend(loc="upper left", fontsize=7)
    weight_versions = sorted({v for s in samples for v in s.get("weights", {})})
    for version in weight_versions:
        bottom.step([s["t"] - t_base for s in samples], [s.get("weights", {}).get(version, 0) for s in samples],
                    where="post", label=f"traffic % {version}")
    if not weight_versions:
        # Serve's own update has no router: show the versions that answered instead.
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
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path)
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    path = args.results or newest()
    if path is None:
        print("no full run in bench/results: run `make bench` first", file=sys.stderr)
        return 2
    if args.readme:
        write_readme(path)
        print(f"README.md: tables from {path}")
    else:
        print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
