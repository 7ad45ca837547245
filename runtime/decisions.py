"""What `pulumi up` will do to a service, decided from its live state and its spec. PURE.

One function, `decide`, serves both sides of a change:
- the controller runs the first move, re-reads the live cluster and decides again, so a
  crash at any point resumes from what the cluster shows;
- `pulumi preview` prints every move with its plan table, so what a reviewer approves is
  what `up` then does (a revert of a held canary previews as the rollback it is).

No I/O here: `live` is anything with the fields of `runtime.controller.LiveService`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from runtime.plan import Plan, plan_rollback, plan_rollout
from runtime.spec import ServiceSpec


class Live(Protocol):
    primary: str | None
    canary: str | None
    canary_traffic: float
    declared: dict[str, int]  # version -> declared replicas
    ready: dict[str, int]  # version -> ready replicas
    intent: dict | None  # what the last run was doing, from the router
    operator: object | None  # the operator's last command (runtime/record.OperatorCommand)


class Intent(str, Enum):
    CREATE = "create"  # nothing live: deploy the version and route all traffic to it
    ADOPT = "adopt"  # version apps but no router: route everything to one of them
    ROLLBACK_STALE = "rollback-stale"  # a live canary that is not the target
    RESUME_ROLLBACK = "resume-rollback"  # a rollback of the target was cut off; config unchanged since
    IN_PLACE = "in-place"  # the target is primary: lightweight changes only
    ABORT = "abort"  # canary_percent 0 while the target is the canary
    DECLINE = "decline"  # canary_percent 0 and nothing under way: nothing moves
    REFUSE = "refuse"  # the target was aborted by an operator and the config still declares it
    ROLLOUT = "rollout"  # start, or resume, primary -> target

    @property
    def terminal(self) -> bool:
        """After a terminal move, `up` is done; after another, it decides again."""
        return self not in (Intent.ADOPT, Intent.ROLLBACK_STALE)


@dataclass(frozen=True)
class Move:
    intent: Intent
    primary: str | None
    canary: str | None
    why: str
    plan: Plan | None = None
    resumed: bool = False  # a ROLLOUT that continues a canary already live

    def describe(self, service: str) -> str:
        """One line, plus the plan table when there is one (what preview prints)."""
        rollback = self.intent in (Intent.ROLLBACK_STALE, Intent.ABORT, Intent.RESUME_ROLLBACK)
        line = f"[{service}] " + (f"rolling back {self.canary} -> {self.primary}: {self.why}" if rollback else self.why)
        return f"{line}\n{self.plan.table()}" if self.plan is not None else line


def decide(live: Live, spec: ServiceSpec) -> list[Move]:
    """The moves that bring `live` to `spec`, in order. Only the first one is certain to
    run as planned: the controller re-reads the cluster after each non-terminal move."""
    target = spec.version.version
    hold = spec.rollout.canary_percent
    n = spec.scaling.replicas
    surge = spec.rollout.max_surge_percent
    if live.primary is None and not live.declared:
        return [Move(Intent.CREATE, target, None, f"deploying {target} with {n} replicas")]
    moves: list[Move] = []
    primary, canary, traffic = live.primary, live.canary, live.canary_traffic
    if primary is None:
        # Router lost (or never written) but version apps exist: adopt the desired
        # version if live, else the largest one, and continue from there.
        primary = target if target in live.declared else max(live.declared, key=live.declared.get)
        moves.append(Move(Intent.ADOPT, primary, None, f"no router found; adopting live version {primary} as primary"))
        canary, traffic = None, 0.0
    if canary and canary != target:
        why = "reverted to the primary" if target == primary else f"desired is now {target}"
        moves.append(Move(Intent.ROLLBACK_STALE, primary, canary, f"stale canary {canary}: {why}",
                          _rollback(live, n, surge, primary, canary, traffic)))
        canary, traffic = None, 0.0
    intent = live.intent or {}
    aborted = _operator_abort(live, spec, primary)
    if aborted is not None and canary == target:
        # The operator's abort was cut off half-way: finish it, as any rollback.
        moves.append(Move(Intent.RESUME_ROLLBACK, primary, canary, f"finishing the rollback: {target} was "
                          f"{aborted.describe()}", _rollback(live, n, surge, primary, canary, traffic)))
    elif aborted is not None:
        moves.append(Move(Intent.REFUSE, primary, None, (
            f"{target} was {aborted.describe()}, and the stack config still declares it; nothing moves. Set "
            f"the service's version back to {primary} to keep the abort, or run `gpuserve retry {spec.service}` "
            f"to roll {target} out again")))
    elif canary and canary == target and intent.get("direction") == "rollback" and intent.get("spec") == spec.digest():
        # A rollback stays a rollback: the run that began it was cut off, and nothing the
        # user declares has changed since, so finishing the rollout would undo a verdict.
        moves.append(Move(Intent.RESUME_ROLLBACK, primary, canary,
                          f"finishing the interrupted rollback ({intent.get('reason') or 'no reason recorded'})",
                          _rollback(live, n, surge, primary, canary, traffic)))
    elif primary == target:
        moves.append(Move(Intent.IN_PLACE, primary, None, f"{primary} stays primary; lightweight changes apply in place"))
    elif hold == 0 and canary == target:
        moves.append(Move(Intent.ABORT, primary, canary, "canary_percent is 0 (abort requested)",
                          _rollback(live, n, surge, primary, canary, traffic)))
    elif hold == 0:
        moves.append(Move(Intent.DECLINE, primary, None,
                          f"canary_percent is 0: {target} not rolled out; {primary} keeps serving"))
    else:
        resumed = canary == target
        plan = plan_rollout(
            n, surge,
            primary=min(n, live.ready.get(primary, n)) if resumed else n,
            canary=min(n, live.ready.get(canary, 0)) if resumed else 0,
            canary_traffic=traffic if resumed else 0,
            traffic_steps=spec.rollout.traffic_steps,
            hold_at=None if hold in (None, 100) else hold,
            old_gpus_per_replica=spec.version.num_gpus,
            new_gpus_per_replica=spec.version.num_gpus,
        )
        start = "resuming rollout" if resumed else "rollout"
        moves.append(Move(Intent.ROLLOUT, primary, target,
                          f"{start} {primary} -> {target}: {plan.waves} waves, surge {plan.surge} of N={n}, "
                          f"peak {plan.peak_gpus:g} GPUs", plan, resumed))
    return moves


def _operator_abort(live: Live, spec: ServiceSpec, primary: str | None):
    """The operator's abort of the declared version, while it still stands: the config has
    not changed since (same digest, when the abort recorded one) and it is not primary."""
    command = getattr(live, "operator", None)
    target = spec.version.version
    if command is None or command.command != "abort" or command.version != target or primary == target:
        return None
    return command if command.spec in (None, spec.digest()) else None


def _rollback(live: Live, n: int, surge: int, primary: str, canary: str, traffic: float) -> Plan:
    return plan_rollback(n, surge, primary=min(n, live.ready.get(primary, 0)),
                         canary=live.ready.get(canary, 0), canary_traffic=traffic)
