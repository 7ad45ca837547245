"""`gpuserve`: the operator's console.

    gpuserve status [SERVICE]     versions, traffic, replicas, GPUs, phase, last verdicts
    gpuserve watch [SERVICE]      the same, live, with the wave table and real traffic
    gpuserve history SERVICE      past rollouts: outcome and why, waves, gate figures
    gpuserve promote SERVICE      skip the remaining bakes (or end a hold)
    gpuserve abort SERVICE        roll the canary back now
    gpuserve retry SERVICE        let an aborted version roll out again

Every command takes --stack (default local) and --json. The stack's state is read
through Pulumi's Automation API; what serves now, from the live cluster.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from console.source import ConsoleError, Rollout, Source, StackSource
from console.status import ServiceStatus, status
from runtime.record import merged

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Tests put a fake here; the default reads the named stack.
source_for: Callable[[str], Source] = StackSource

STACK = typer.Option("local", "--stack", "-s", help="the stack (stacks/Pulumi.<stack>.yaml)")
JSON = typer.Option(False, "--json", help="machine-readable output")


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _chosen(source: Source, stack: str, service: Optional[str]) -> list[Rollout]:
    rollouts = source.rollouts()
    if service:
        rollouts = [r for r in rollouts if r.service == service]
        if not rollouts:
            _fail(f"stack {stack} has no service {service!r}; it has: "
                  f"{', '.join(r.service for r in source.rollouts()) or 'none'}")
    return rollouts


def _statuses(stack: str, service: Optional[str]) -> list[ServiceStatus]:
    source = source_for(stack)
    rollouts = _chosen(source, stack, service)
    out = []
    for rollout in rollouts:
        live, gpus = source.live(rollout)
        out.append(status(rollout.service, live, rollout.spec, rollout.history, gpus))
    return out


def render(statuses: list[ServiceStatus], console: Console) -> None:
    for s in statuses:
        budget = f"{s.gpus_in_use:g} of {s.pool_gpus:g}" if s.gpus_in_use is not None and s.pool_gpus else \
            f"{s.gpus_in_use:g}" if s.gpus_in_use is not None else "–"
        console.print(f"[bold]{s.service}[/]  pool {s.pool or '–'}  GPUs {budget}  {s.phase}", highlight=False)
        table = Table(show_edge=False, pad_edge=False)
        for column in ("version", "role", "traffic %", "ready / declared", "Serve status"):
            table.add_column(column)
        for v in s.versions:
            table.add_row(v.version, v.role, f"{v.weight:g}", f"{v.ready} / {v.declared}", v.status)
        console.print(table)
        for verdict in s.verdicts:
            console.print(f"  gate: {verdict['message']}", highlight=False)
        console.print()


@app.command("status")
def status_command(service: Optional[str] = typer.Argument(None, help="one service (default: all)"),
                   stack: str = STACK, as_json: bool = JSON) -> None:
    """Per service: versions, traffic, ready replicas, GPUs against the pool, the
    rollout's phase and the last gate verdicts."""
    try:
        statuses = _statuses(stack, service)
    except ConsoleError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"stack": stack, "services": [s.to_json() for s in statuses]}, indent=1))
    else:
        render(statuses, Console())


def frames(source: Source, rollouts: list[Rollout], window_s: float) -> list:
    """One frame per service, now; a service whose cluster does not answer is one line."""
    from console.watch import Frame, traffic_rows, wave_rows

    out = []
    for rollout in rollouts:
        try:
            live, gpus = source.live(rollout)
            samples = source.samples(rollout, int((time.time() - window_s) * 1000))
        except ConsoleError as exc:
            out.append(str(exc))
            continue
        now = status(rollout.service, live, rollout.spec, rollout.history, gpus)
        out.append(Frame(now, wave_rows(rollout.spec, live.canary, live.intent),
                         traffic_rows(samples, [v.version for v in now.versions]), window_s))
    return out


@app.command("watch")
def watch_command(service: Optional[str] = typer.Argument(None, help="one service (default: all)"),
                  stack: str = STACK, as_json: bool = JSON,
                  interval: float = typer.Option(1.0, "--interval", min=0.2, help="seconds between refreshes"),
                  count: int = typer.Option(0, "--count", min=0, help="frames to show, then exit (0: until Ctrl-C)"),
                  window: float = typer.Option(10.0, "--window", min=1.0, help="seconds of real traffic shown"),
                  svg: Optional[Path] = typer.Option(None, "--svg", help="also save the last frame as an SVG picture")
                  ) -> None:
    """A live view for a second terminal while `pulumi up` runs: per service the phase,
    traffic bars, replicas, the wave table with the current wave marked, and the real
    traffic of the last window per version, as the gates see it. --json prints one JSON
    document per refresh, one per line."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from console.watch import render

    try:
        source = source_for(stack)
        rollouts = _chosen(source, stack, service)
    except ConsoleError as exc:
        _fail(str(exc))

    def view(now: list) -> Group:
        stamp = Text(f"gpuserve watch  stack {stack}  {time.strftime('%H:%M:%S')}  (Ctrl-C to leave)", style="dim")
        return Group(stamp, *[render(f) if not isinstance(f, str) else Text(f, style="red") for f in now])

    shown, last = 0, None
    try:
        if as_json:
            while not count or shown < count:
                now = frames(source, rollouts, window)
                typer.echo(json.dumps({"stack": stack, "at": round(time.time(), 3), "services": [
                    f.to_json() if not isinstance(f, str) else {"error": f} for f in now]}))
                shown += 1
                if not count or shown < count:
                    time.sleep(interval)
            return
        last = view(frames(source, rollouts, window))
        with Live(last, console=Console(), auto_refresh=False) as screen:
            shown = 1
            while not count or shown < count:
                time.sleep(interval)
                last = view(frames(source, rollouts, window))
                screen.update(last, refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass
    if svg is not None and last is not None:
        picture = Console(record=True, width=110, file=open(os.devnull, "w"))
        picture.print(last)
        picture.save_svg(str(svg), title=f"gpuserve watch {service or ''}".strip())


def _past(stack: str, service: str) -> tuple[Source, Rollout, list[dict]]:
    """The service's past rollouts: the state's copy merged with the live record's."""
    try:
        source = source_for(stack)
        (rollout,) = _chosen(source, stack, service)
        live, _ = source.live(rollout)
    except ConsoleError as exc:
        _fail(str(exc))
    return source, rollout, merged(rollout.rollouts, live.rollouts)


@app.command("timeline")
def timeline_command(service: str = typer.Argument(..., help="the service"),
                     out: Path = typer.Option(..., "--out", help="file.png or file.html"),
                     number: Optional[int] = typer.Option(None, "--rollout", min=1,
                                                          help="which rollout, as `history` numbers them "
                                                               "(default: the last)"),
                     stack: str = STACK, as_json: bool = JSON) -> None:
    """Plot one rollout against time: traffic % and replicas per version, the client
    error rate and p95 per version, with each gate decision and the rollback marked. The
    data is the rollout's full record, kept beside the stack's state on the machine that
    ran it."""
    from console.timeline import series, write_html, write_png

    if out.suffix.lower() not in (".png", ".html"):
        _fail(f"--out {out}: give a .png or an .html file")
    source, rollout, past = _past(stack, service)
    if not past:
        _fail(f"{service} has no rollout yet: nothing to plot")
    index = (number or len(past)) - 1
    if index >= len(past):
        _fail(f"{service} has {len(past)} rollouts on record; --rollout takes 1 to {len(past)}")
    chosen = past[index]
    run = source.run_record(rollout, chosen["id"])
    if run is None:
        _fail(f"no full record of {service}'s rollout {index + 1} ({chosen.get('from')} -> {chosen.get('to')}) on this "
              "machine: records are kept where `pulumi up` ran (.state/<stack>/rollouts); `gpuserve history` has "
              "its summary")
    title = (f"{service}: {chosen.get('from')} -> {chosen.get('to')}, {chosen.get('outcome')} "
             f"({_when(chosen.get('started'))} UTC)")
    data = series(run)
    (write_png if out.suffix.lower() == ".png" else write_html)(out, data, title)
    if as_json:
        typer.echo(json.dumps({"stack": stack, "service": service, "rollout": index + 1, "out": str(out),
                               "summary": chosen}, indent=1))
    else:
        Console().print(f"{service}: rollout {index + 1} ({chosen.get('from')} -> {chosen.get('to')}, "
                        f"{chosen.get('outcome')}) drawn to {out}", highlight=False)


@app.command("metrics")
def metrics_command(service: Optional[str] = typer.Argument(None, help="one service (default: all)"),
                    stack: str = STACK,
                    port: int = typer.Option(9477, "--port", min=0, max=65535, help="where to serve /metrics"),
                    once: bool = typer.Option(False, "--once", help="print one scrape and exit"),
                    window: float = typer.Option(10.0, "--window", min=1.0,
                                                 help="seconds of real traffic per scrape"),
                    as_json: bool = typer.Option(False, "--json", help="one scrape as JSON (implies --once)")) -> None:
    """Serve the rollouts' phase, waves, weights, replicas, GPUs, real-traffic figures,
    last gate verdicts and operator commands as Prometheus metrics on
    127.0.0.1:PORT/metrics, read live at each scrape. --once prints one scrape (the
    text exposition format) and exits."""
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server

    from console.metrics import RolloutCollector

    try:
        source = source_for(stack)
        rollouts = _chosen(source, stack, service)
    except ConsoleError as exc:
        _fail(str(exc))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RolloutCollector(source, rollouts, window))
    if as_json:
        samples = [{"name": s.name, "labels": s.labels, "value": s.value}
                   for family in registry.collect() for s in family.samples]
        typer.echo(json.dumps({"stack": stack, "metrics": samples}, indent=1))
        return
    if once:
        typer.echo(generate_latest(registry).decode(), nl=False)
        return
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        _fail(f"cannot serve metrics on 127.0.0.1:{port}: {exc}; choose another --port")
    Console(stderr=True).print(f"serving {stack}'s rollout metrics on http://127.0.0.1:{server.server_port}/metrics "
                               "(Ctrl-C to stop)", highlight=False)
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        server.shutdown()


@app.command("history")
def history_command(service: str = typer.Argument(..., help="the service"), stack: str = STACK,
                    as_json: bool = JSON) -> None:
    """Past rollouts of SERVICE, oldest first: when, from -> to, the outcome and why, the
    waves reached and each gate's figures (kept in the cluster and in the stack's state)."""
    _, _, past = _past(stack, service)
    if as_json:
        typer.echo(json.dumps({"stack": stack, "service": service, "rollouts": past}, indent=1))
        return
    render_history(service, past, Console())


def render_history(service: str, past: list[dict], console: Console) -> None:
    if not past:
        console.print(f"{service}: no rollout yet (the first deploy is not a rollout)")
        return
    table = Table(title=f"{service}: rollouts", show_edge=False, pad_edge=False)
    for column in ("#", "started (UTC)", "took", "from -> to", "outcome", "waves", "gates (canary ok %, p95)"):
        table.add_column(column)
    for number, entry in enumerate(past, 1):
        took = f"{entry['ended'] - entry['started']:.0f}s" if entry.get("ended") and entry.get("started") else "–"
        outcome = entry.get("outcome", "?") + (f" by {entry['operator']}" if entry.get("operator") else "")
        if entry.get("reason") and entry.get("outcome") != "promoted":
            outcome += f": {entry['reason']}"
        table.add_row(str(number), _when(entry.get("started")), took, f"{entry.get('from')} -> {entry.get('to')}",
                      outcome, f"{entry.get('reached_wave', 0)}/{entry.get('waves', '?')}",
                      "; ".join(_gate_cell(g) for g in entry.get("gates") or []) or "–")
    console.print(table)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "–"


def _gate_cell(gate: dict) -> str:
    word = "pass" if gate.get("passed") else "FAIL"
    canary = gate.get("canary") or {}
    figures = (f" {canary['success_rate'] * 100:.1f}%, {canary['p95_ms']:.0f}ms"
               if "success_rate" in canary and "p95_ms" in canary else "")
    return f"w{gate.get('wave')} {gate.get('gate')} {word}{figures}"


def _log_to_stderr(controller) -> None:
    """The controller's progress lines, when the console acts itself, go to stderr: stdout
    is the command's answer (JSON with --json)."""
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    controller.log = log
    if controller.notifier is not None:
        controller.notifier.log = log


def _command(stack: str, service: str, command: str, as_json: bool, wait_s: float) -> None:
    from console.commands import CommandError, carry_out

    source = source_for(stack)
    try:
        (rollout,) = _chosen(source, stack, service)
        with source.session(rollout) as (controller, client):
            _log_to_stderr(controller)
            result = carry_out(controller, client.cluster_key, command, wait_s=wait_s)
        if result.acted.startswith("this console"):
            source.refresh(rollout)  # state learns what moved; the next preview says what to change
    except (ConsoleError, CommandError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"stack": stack, **result.to_json()}, indent=1))
    else:
        Console().print(f"{service}: {result.message} (carried out by {result.acted})", highlight=False)


@app.command("promote")
def promote_command(service: str = typer.Argument(..., help="the service"), stack: str = STACK,
                    as_json: bool = JSON, wait_s: float = typer.Option(
                        30.0, "--wait", help="seconds to wait for a running `pulumi up` to act")) -> None:
    """End the canary's remaining bakes (and a hold at canary_percent) and let the
    rollout go on. Works while `pulumi up` runs (it reads the command at its next poll)
    and when nothing runs (the console carries the rollout on itself)."""
    _command(stack, service, "promote", as_json, wait_s)


@app.command("abort")
def abort_command(service: str = typer.Argument(..., help="the service"), stack: str = STACK,
                  as_json: bool = JSON, wait_s: float = typer.Option(
                      30.0, "--wait", help="seconds to wait for a running `pulumi up` to act")) -> None:
    """Roll the canary back now: all traffic to the primary at once, then the replicas.
    The `pulumi up` under way ends with "aborted by operator"; later ones refuse to roll
    the same config out again until it changes or `gpuserve retry` clears the abort."""
    _command(stack, service, "abort", as_json, wait_s)


@app.command("retry")
def retry_command(service: str = typer.Argument(..., help="the service"), stack: str = STACK,
                  as_json: bool = JSON) -> None:
    """Clear a standing abort, so the next `pulumi up` rolls the declared version out again."""
    from console.commands import CommandError, clear

    source = source_for(stack)
    try:
        (rollout,) = _chosen(source, stack, service)
        with source.session(rollout) as (controller, _):
            message = clear(controller)
    except (ConsoleError, CommandError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"stack": stack, "service": service, "message": message}, indent=1))
    else:
        Console().print(f"{service}: {message}", highlight=False)


@app.callback()
def _main() -> None:
    """gpuserve: the operator's console (see README "The operator's console")."""


def main() -> None:
    app()
