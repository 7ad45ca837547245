"""What `gpuserve promote|abort|retry SERVICE` do, over a provider session (a controller
and its Serve client).

A command is first written into the service's routing record (runtime/record.py), where
it is durable and where a running `pulumi up` reads it at every poll. Then:
- if a `pulumi up` converges the service (it holds the service lock), that run acts on it:
  an abort is waited for until every request is on the primary;
- if nothing runs, the console acts itself, under the same lock, with the same
  controller code: an abort is the capacity-safe rollback (urgent, as for a failing
  canary), a promote the rest of the rollout with no bakes.
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import asdict, dataclass

from runtime import record
from runtime.errors import GpuserveError
from runtime.serve_api import ServiceBusy, service_lock


class CommandError(Exception):
    """Nothing to do, or it could not be done: the message says which, and what now."""


@dataclass(frozen=True)
class CommandResult:
    service: str
    command: str
    version: str
    by: str
    acted: str  # who carried it out
    primary: str | None
    canary: str | None
    canary_traffic: float
    message: str
    recorded_at: float  # when the write of the command into the routing record returned (epoch s)
    write_s: float  # how long that write (a Serve config PUT) took
    took_s: float  # from recorded_at until the console saw its effect (or gave up)

    def to_json(self) -> dict:
        return asdict(self)


def operator_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def carry_out(controller, cluster_key: str, command: str, by: str | None = None,
              wait_s: float = 30.0, poll_s: float = 0.25) -> CommandResult:
    service = controller.spec.service
    by = by or operator_name()
    live = controller.live()
    order = record.command_for(command, live.router_config, by)
    if order is None or live.canary is None:
        raise CommandError(f"{service}: nothing to {command}: {live.primary} serves 100% and no rollout is "
                           "under way (see `gpuserve history " + service + "`)")
    writing = time.time()
    controller.serve.set_operator(order)
    recorded = time.time()
    try:
        with service_lock(cluster_key, service, holder=f"gpuserve {command} ({by})", wait_s=0):
            acted = "this console (no `pulumi up` was converging the service)"
            try:
                live = controller.abort_now(order) if command == "abort" else controller.promote_now(order)
            except GpuserveError as exc:
                raise CommandError(str(exc)) from None
            finally:
                controller.close()
    except ServiceBusy as busy:
        acted = f"the running {busy}"
        live = _wait_for(controller, order, wait_s, poll_s) if command == "abort" else controller.live()
    if command == "abort":
        done = live.canary is None or live.canary_traffic == 0
        message = (f"{order.version} aborted: {live.primary} serves 100%" if done else
                   f"abort recorded; {order.version} still takes {live.canary_traffic:g}% after {wait_s:g}s: "
                   "the running `pulumi up` has not read it yet (see its output)")
    else:
        message = (f"{order.version} promoted: it serves 100%" if live.primary == order.version else
                   f"promote recorded: the running `pulumi up` skips the remaining bakes of {order.version}")
    return CommandResult(service=service, command=command, version=order.version, by=by, acted=acted,
                         primary=live.primary, canary=live.canary, canary_traffic=live.canary_traffic,
                         message=message, recorded_at=recorded, write_s=round(recorded - writing, 3),
                         took_s=round(time.time() - recorded, 3))


def _wait_for(controller, order: record.OperatorCommand, wait_s: float, poll_s: float):
    """Until the running `up` has taken the aborted canary's traffic off (or wait_s)."""
    deadline = time.monotonic() + wait_s
    while True:
        live = controller.live()
        if live.canary != order.version or live.canary_traffic == 0 or time.monotonic() > deadline:
            return live
        time.sleep(poll_s)


def clear(controller) -> str:
    """`gpuserve retry`: forget the operator's standing command, so the declared version
    may roll out again at the next `pulumi up`."""
    live = controller.live()
    if live.operator is None:
        raise CommandError(f"{controller.spec.service}: no operator command stands; `pulumi up` rolls out "
                           "whatever the stack config declares")
    controller.serve.set_operator(None)
    return (f"cleared: {live.operator.version} {live.operator.describe()}; the next `pulumi up` rolls out "
            "what the stack config declares")
