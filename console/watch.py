"""`gpuserve watch`: one frame of the live view, as data (PURE) and as a rich renderable.

A frame is what `status` shows, plus:
- the wave table of the rollout under way, planned from the service's spec exactly as
  the controller plans it (runtime/plan.py), with the wave the router's intent names
  marked;
- traffic bars per version;
- the real traffic of the last window per version (requests, errors, p95), read from
  the splitter's samples the same way the gates read them (runtime/analysis.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from console.status import ServiceStatus
from runtime import analysis
from runtime.plan import plan_rollout

BAR = 20  # characters of a traffic bar at 100%


@dataclass(frozen=True)
class WaveRow:
    wave: int
    step: str
    canary_traffic: float
    primary_replicas: int
    canary_replicas: int
    state: str  # "done" | "now" | "next"
    gated_at: float | None = None  # the canary's share while the wave bakes and is judged


@dataclass(frozen=True)
class TrafficRow:
    version: str
    requests: int
    errors: int
    error_rate: float
    p95_ms: float | None


@dataclass(frozen=True)
class Frame:
    status: ServiceStatus
    waves: list[WaveRow]
    traffic: list[TrafficRow]
    window_s: float

    def to_json(self) -> dict:
        return {**self.status.to_json(), "waves": [asdict(w) for w in self.waves],
                "traffic": [asdict(t) for t in self.traffic], "window_s": self.window_s}


def wave_rows(spec: dict, canary: str | None, intent: dict | None) -> list[WaveRow]:
    """The rollout's full plan from its start, with the intent's wave marked. PURE."""
    if not canary or not spec:
        return []
    scaling, rollout = spec.get("scaling") or {}, spec.get("rollout") or {}
    n = int(scaling.get("num_replicas") or scaling.get("max_replicas") or 1)
    hold = rollout.get("canary_percent")
    plan = plan_rollout(n, int(rollout.get("max_surge_percent") or 0), traffic_steps=rollout.get("traffic_steps"),
                        hold_at=None if hold in (None, 100) else hold)
    now = int((intent or {}).get("wave") or 0)
    rows = []
    for step in plan.steps:
        state = "done" if step.wave < now else "now" if step.wave == now else "next"
        rows.append(WaveRow(step.wave, step.kind.value, step.canary_traffic, step.primary_replicas,
                            step.canary_replicas, state, step.judged_at if step.gated else None))
    return rows


def traffic_rows(samples: list[dict], versions: list[str]) -> list[TrafficRow]:
    """Per version, what users saw in the window: the gates' own figures. PURE."""
    rows = []
    for version in versions:
        f = analysis.figures(samples, version)
        rows.append(TrafficRow(version, f.requests, f.errors, round(f.error_rate, 4),
                               round(f.p95_ms, 1) if f.latencies_ms else None))
    return rows


def bar(percent: float) -> str:
    filled = round(BAR * max(0.0, min(100.0, percent)) / 100)
    return "█" * filled + "·" * (BAR - filled)


def render(frame: Frame) -> Group:
    s = frame.status
    budget = (f"{s.gpus_in_use:g} of {s.pool_gpus:g}" if s.gpus_in_use is not None and s.pool_gpus
              else f"{s.gpus_in_use:g}" if s.gpus_in_use is not None else "–")
    parts: list = [Text.from_markup(f"[bold]{s.service}[/]  pool {s.pool or '–'}  GPUs {budget}  {s.phase}")]
    versions = Table(show_edge=False, pad_edge=False)
    for column in ("version", "role", "traffic", "%", "ready / declared", "Serve status"):
        versions.add_column(column)
    for v in s.versions:
        versions.add_row(v.version, v.role, bar(v.weight), f"{v.weight:g}", f"{v.ready} / {v.declared}", v.status)
    parts.append(versions)
    if frame.waves:
        waves = Table(title="waves", show_edge=False, pad_edge=False, title_justify="left")
        for column in ("", "wave", "step", "gated at %", "canary %", "primary replicas", "canary replicas"):
            waves.add_column(column)
        for w in frame.waves:
            mark = {"done": "✓", "now": "▶", "next": " "}[w.state]
            gated = "–" if w.gated_at is None else f"{w.gated_at:.4g}"
            waves.add_row(mark, str(w.wave), w.step, gated, f"{w.canary_traffic:.4g}", str(w.primary_replicas),
                          str(w.canary_replicas), style="bold" if w.state == "now" else None)
        parts.append(waves)
    if frame.traffic:
        traffic = Table(title=f"real traffic, last {frame.window_s:g}s", show_edge=False, pad_edge=False,
                        title_justify="left")
        for column in ("version", "requests", "errors", "error %", "p95 ms"):
            traffic.add_column(column)
        for t in frame.traffic:
            traffic.add_row(t.version, str(t.requests), str(t.errors), f"{100 * t.error_rate:.2f}",
                            f"{t.p95_ms:g}" if t.p95_ms is not None else "–")
        parts.append(traffic)
    for verdict in s.verdicts:
        parts.append(Text(f"gate: {verdict['message']}"))
    parts.append(Text(""))
    return Group(*parts)
