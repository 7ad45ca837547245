"""`gpuserve timeline`: one rollout against time, from its full record (runtime/record.py).

Four panels sharing the time axis (seconds from the rollout's start):
- traffic % per version, as the router was set;
- replicas per version (and the GPUs they hold);
- the client error rate per version, from each evaluation of real traffic;
- p95 latency per version, from the same evaluations;
with every gate decision marked (green pass, red FAIL) and the rollback's start.

`series` is PURE (record -> plotted data); `write_png` and `write_html` draw it.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

# Entries whose replica and traffic fields set the shape from then on.
SHAPE_STEPS = ("deploy-canary", "shift", "wave", "hold", "finish", "rollback", "rollback-start", "rollback-done")


@dataclass
class Series:
    source: str
    target: str
    started: float
    outcome: str
    num_gpus: float
    t_shape: list[float] = field(default_factory=list)
    traffic: dict[str, list[float]] = field(default_factory=dict)
    replicas: dict[str, list[float]] = field(default_factory=dict)
    t_eval: list[float] = field(default_factory=list)
    error_rate: dict[str, list[float | None]] = field(default_factory=dict)
    p95_ms: dict[str, list[float | None]] = field(default_factory=dict)
    gates: list[tuple[float, bool, str]] = field(default_factory=list)  # (t, passed, label)
    events: list[tuple[float, str]] = field(default_factory=list)  # (t, message), for the HTML table
    rollback_at: float | None = None


def series(run: dict) -> Series:
    """PURE. The plotted data of one rollout's record."""
    summary = run.get("summary") or {}
    source, target = summary.get("from") or "primary", summary.get("to") or "canary"
    history = sorted(run.get("history") or [], key=lambda e: e.get("at") or 0)
    # The first step on record starts the clock (the same clock as every entry's `at`).
    started = history[0]["at"] if history and history[0].get("at") else summary.get("started") or 0.0
    out = Series(source, target, started, summary.get("outcome", "?"), float(run.get("num_gpus") or 1))
    n = int(run.get("replicas") or 0)
    for version in (source, target):
        out.traffic[version], out.replicas[version] = [], []
        out.error_rate[version], out.p95_ms[version] = [], []
    primary_replicas, canary_replicas, canary_traffic = n, 0, 0.0
    # Before the first move: the primary alone, at full size.
    out.t_shape.append(0.0)
    out.traffic[source].append(100.0)
    out.traffic[target].append(0.0)
    out.replicas[source].append(n)
    out.replicas[target].append(0)
    for entry in history:
        t = round((entry.get("at") or started) - started, 3)
        step = entry.get("step")
        if entry.get("message"):
            out.events.append((t, entry["message"].splitlines()[0]))
        if step in SHAPE_STEPS or "canary_traffic" in entry:
            primary_replicas = entry.get("primary_replicas", primary_replicas)
            canary_replicas = entry.get("canary_replicas", canary_replicas)
            canary_traffic = float(entry.get("canary_traffic", canary_traffic))
            if step == "finish":
                primary_replicas, canary_replicas = 0, entry.get("canary_replicas", canary_replicas or n)
            if step == "rollback-done":
                primary_replicas, canary_replicas, canary_traffic = n, 0, 0.0
            out.t_shape.append(t)
            out.traffic[source].append(100.0 - canary_traffic)
            out.traffic[target].append(canary_traffic)
            out.replicas[source].append(primary_replicas)
            out.replicas[target].append(canary_replicas)
        if step == "rollback-start" and out.rollback_at is None:
            out.rollback_at = t
        if step == "evaluation":
            out.t_eval.append(t)
            for version, side in ((target, "canary"), (source, "primary")):
                figures = entry.get(side) or {}
                sent = figures.get("requests")
                out.error_rate[version].append(figures.get("error_rate") if sent else None)
                out.p95_ms[version].append(figures.get("p95_ms") if sent else None)
        if step == "gate":
            figures = entry.get("gate") or {}
            word = "pass" if figures.get("passed") else "FAIL"
            out.gates.append((t, bool(figures.get("passed")), f"w{entry.get('wave')} {figures.get('gate')} {word}"))
    return out


def _figure(data: Series, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    traffic, replicas, errors, latency = axes
    colors = {data.source: "tab:blue", data.target: "tab:orange"}
    for version, color in colors.items():
        if data.t_shape:
            traffic.step(data.t_shape, data.traffic[version], where="post", color=color, label=version)
            replicas.step(data.t_shape, data.replicas[version], where="post", color=color,
                          label=f"{version} ({data.num_gpus:g} GPU each)")
        if data.t_eval:
            errors.plot(data.t_eval, [None if v is None else 100 * v for v in data.error_rate[version]], ".-",
                        color=color, markersize=3, label=version)
            latency.plot(data.t_eval, data.p95_ms[version], ".-", color=color, markersize=3, label=version)
    traffic.set_ylabel("traffic %")
    traffic.set_ylim(-5, 105)
    replicas.set_ylabel("replicas")
    errors.set_ylabel("client errors %")
    latency.set_ylabel("p95 ms")
    latency.set_xlabel("seconds from the rollout's start")
    for t, passed, label in data.gates:
        for axis in axes:
            axis.axvline(t, color="tab:green" if passed else "tab:red", linewidth=0.8, alpha=0.7)
        traffic.annotate(label, (t, 102), fontsize=7, rotation=90, va="top", ha="right",
                         color="tab:green" if passed else "tab:red")
    if data.rollback_at is not None:
        for axis in axes:
            axis.axvline(data.rollback_at, color="black", linestyle="--", linewidth=1)
        replicas.annotate("rollback", (data.rollback_at, 0.2), fontsize=8)
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig, plt


def write_png(path: Path, data: Series, title: str) -> None:
    fig, plt = _figure(data, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_html(path: Path, data: Series, title: str) -> None:
    """One self-contained page: the same figure (inline SVG) and every event of the run."""
    fig, plt = _figure(data, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = base64.b64encode(buffer.getvalue()).decode()
    rows = "\n".join(f"<tr><td>{t:.1f}</td><td>{html.escape(message)}</td></tr>" for t, message in data.events)
    Path(path).write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 8px;vertical-align:top}}
td:first-child{{text-align:right;color:#555}}</style></head>
<body><h1>{html.escape(title)}</h1>
<img alt="timeline" src="data:image/svg+xml;base64,{svg}" style="width:100%">
<h2>Events (seconds from the start)</h2><table>{rows}</table></body></html>
""")
