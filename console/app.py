"""`gpuserve`: the operator's console.

    gpuserve status [SERVICE] [--stack local] [--json]

Reads the stack's state through Pulumi's Automation API and the live cluster; changes
nothing.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from console.source import ConsoleError, Source, StackSource
from console.status import ServiceStatus, status

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Tests put a fake here; the default reads the named stack.
source_for: Callable[[str], Source] = StackSource

STACK = typer.Option("local", "--stack", "-s", help="the stack (stacks/Pulumi.<stack>.yaml)")
JSON = typer.Option(False, "--json", help="machine-readable output")


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _statuses(stack: str, service: Optional[str]) -> list[ServiceStatus]:
    source = source_for(stack)
    rollouts = source.rollouts()
    if service:
        rollouts = [r for r in rollouts if r.service == service]
        if not rollouts:
            _fail(f"stack {stack} has no service {service!r}; it has: "
                  f"{', '.join(r.service for r in source.rollouts()) or 'none'}")
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


@app.callback()
def _main() -> None:
    """gpuserve: the operator's console (see README "The operator's console")."""


def main() -> None:
    app()
