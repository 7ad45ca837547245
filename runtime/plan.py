"""Pure wave planning for surge-limited rollouts and capacity-safe rollbacks.

No I/O and no pulumi, httpx or ray imports: numbers in, steps out. The controller
executes the steps and re-reads live state between them.

Terms (see ../shared/DESIGN.md): N is the steady-state replica count, p the max surge
percent, P and C the primary's and canary's replicas, t the canary's traffic percent.

Rules, with capacity measured against N (a version with k ready replicas can carry at
most k/N of the traffic):

    surge        = min(N, max(1, ceil(p% * N)))          # replicas a wave adds
    cap          = N + surge                               # replicas alive at any time
    t            <= 100 * C / N                            # canary traffic cap
    100 - t      <= 100 * P / N                            # primary traffic cap

Traffic is a float percent (rounded to 4 decimals): with integer percents, N=3 would
give the canary 33% and the primary 67% of traffic on 2/3 of the capacity.
    P >= 1 and C >= 1 until t = 100

A wave: shift t to the canary's share of the ready replicas, C / (C + P), bake and
gate; shift t up to the canary's cap (or the next explicit traffic step), shrink the
primary by up to `surge` (never below what its traffic needs), then grow the canary
into the freed budget. Worked example, N=4, p=25 (surge 1, cap 5):

    deploy canary  P=4 C=1 t=0
    wave 1         gate at t=20, t=25  -> P=3 C=2
    wave 2         gate at t=40, t=50  -> P=2 C=3
    wave 3         gate at t=60, t=75  -> P=1 C=4
    wave 4         t=100 -> P=0 (primary drained and deleted)

Why the gate runs at C / (C + P) rather than at the cap C / N: both versions then carry
the same load per replica, lighter than steady state (the surge's replica shares it).
At C / N the canary's replicas carry the full steady load per replica while the
primary's N replicas carry less; near saturation a single canary replica queues far
more than N pooled ones at the same per-replica load, and a healthy canary was judged
slower and rolled back (bench: median 408 ms against 210 ms before the rollout). An
explicit traffic step below that share gates at the step; a hold (`canary_percent`)
holds at exactly its percent.

Blue/green is p=100: surge N, one wave, 2N replicas at the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class StepKind(str, Enum):
    DEPLOY_CANARY = "deploy-canary"  # create the canary app at traffic 0
    WAVE = "wave"  # shift traffic, bake, gate, then resize
    FINISH = "finish"  # canary takes 100%, primary drains and is deleted
    HOLD = "hold"  # manual canary_percent reached: stop here, both versions live
    ROLLBACK = "rollback"  # move traffic back, resize towards the primary
    REMOVE_CANARY = "remove-canary"  # canary at 0%: delete it


@dataclass(frozen=True)
class Step:
    """One ordered move. The controller applies, in this order: traffic, then the
    version that shrinks, then the version that grows, then waits for readiness."""

    kind: StepKind
    wave: int  # 1-based wave number; 0 for steps outside waves
    canary_traffic: float  # percent to the canary after this step's traffic shift
    primary_replicas: int  # after this step
    canary_replicas: int  # after this step
    gated: bool = False  # bake + gates run after the traffic shift
    # The canary's share while it bakes and is gated, when lower than `canary_traffic`
    # (the share the resize needs): C / (C + P) of the ready replicas. None: the same.
    gate_traffic: float | None = None

    @property
    def judged_at(self) -> float:
        """The canary's traffic share during this step's bake and gate."""
        return self.canary_traffic if self.gate_traffic is None else self.gate_traffic


@dataclass(frozen=True)
class Plan:
    n: int
    surge: int
    steps: tuple[Step, ...]
    old_gpus_per_replica: float = 1.0
    new_gpus_per_replica: float = 1.0

    @property
    def waves(self) -> int:
        return sum(1 for s in self.steps if s.kind in (StepKind.WAVE, StepKind.FINISH, StepKind.HOLD) and s.gated)

    def gpus(self, step: Step) -> float:
        return step.primary_replicas * self.old_gpus_per_replica + step.canary_replicas * self.new_gpus_per_replica

    @property
    def peak_gpus(self) -> float:
        return max((self.peak_gpus_of(s) for s in self.steps), default=self.n * self.old_gpus_per_replica)

    def peak_gpus_of(self, step: Step) -> float:
        # Within a step the shrinking side goes first, so the peak is at the step's end
        # or at its start (the previous step's end): both are covered by max over steps.
        return self.gpus(step)

    def table(self) -> str:
        rows = [f"{'wave':>5} {'step':<14} {'canary':>6} {'primary':>7} {'gated at':>8} {'canary %':>8} {'GPUs':>6}"]
        for s in self.steps:
            wave = str(s.wave) if s.wave else "-"
            gated = f"{s.judged_at:>7.4g}%" if s.gated else f"{'-':>8}"
            rows.append(
                f"{wave:>5} {s.kind.value:<14} {s.canary_replicas:>6} {s.primary_replicas:>7} "
                f"{gated} {s.canary_traffic:>7.4g}% {self.gpus(s):>6g}"
            )
        return "\n".join(rows)


def surge_replicas(n: int, max_surge_percent: int) -> int:
    """ceil(p% * N), at least 1 and at most N."""
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    if not 1 <= max_surge_percent <= 100:
        raise ValueError(f"max_surge_percent must be in 1..100, got {max_surge_percent}")
    return min(n, max(1, math.ceil(max_surge_percent * n / 100)))


def peak_replicas(n: int, max_surge_percent: int) -> int:
    """N + ceil(p% * N): the most replicas both versions may hold at once during a rollout."""
    return n + surge_replicas(n, max_surge_percent)


TRAFFIC_DECIMALS = 4
# Replica-unit slack for comparing rounded percents; far below one replica.
_EPS = 1e-3


def traffic_cap(replicas: int, n: int) -> float:
    """The most traffic (percent) `replicas` ready replicas may carry out of N."""
    return 100.0 if replicas >= n else round(100 * replicas / n, TRAFFIC_DECIMALS)


def ready_share(canary: int, primary: int, n: int) -> float:
    """The canary's share of the ready replicas, C / (C + P), in percent; 100 once the
    canary alone has N (a finish gates at 100)."""
    if canary >= n or primary <= 0:
        return 100.0
    return round(100 * canary / (canary + primary), TRAFFIC_DECIMALS)


def replicas_for(traffic: float, n: int) -> int:
    """The fewest replicas whose capacity covers `traffic` percent of N."""
    return max(0, math.ceil(traffic * n / 100 - _EPS))


def plan_rollout(
    n: int,
    max_surge_percent: int,
    *,
    primary: int | None = None,
    canary: int = 0,
    canary_traffic: float = 0,
    traffic_steps: list[int] | None = None,
    hold_at: int | None = None,
    old_gpus_per_replica: float = 1.0,
    new_gpus_per_replica: float = 1.0,
    first_wave: int = 1,
) -> Plan:
    """Plan the rest of a rollout from any state (P, C, t); the start is (N, 0, 0).

    `hold_at` (canary_percent) stops the plan at that traffic share with a HOLD step;
    100 or None runs to the end. Resuming a rollout after a crash passes the live state.
    """
    surge = surge_replicas(n, max_surge_percent)
    cap = n + surge
    p = n if primary is None else primary
    c, t = canary, canary_traffic
    targets = sorted(set(traffic_steps or [])) + [100]
    stop_at = 100 if hold_at is None else hold_at
    steps: list[Step] = []
    if c == 0:
        c = min(surge, n, cap - p)
        if c < 1:
            raise ValueError(f"no surge budget to deploy a canary: P={p}, cap={cap}")
        steps.append(Step(StepKind.DEPLOY_CANARY, 0, 0, p, c))
    wave = first_wave
    while True:
        wanted = next((x for x in targets if x > t), 100)
        t_next = min(wanted, traffic_cap(c, n), stop_at)
        if t_next >= 100:
            steps.append(Step(StepKind.FINISH, wave, 100, 0, c, gated=True))
            break
        if t_next <= t and stop_at <= t_next:
            # Already held here: gates are evaluated again on every `pulumi up`.
            steps.append(Step(StepKind.HOLD, wave, t, p, c, gated=True))
            break
        before = (p, c, t)
        t = max(t, t_next)
        # The primary keeps what its traffic needs, and at least one replica.
        p_next = max(p - surge, replicas_for(100 - t, n), 1)
        c_next = min(n, cap - p_next)
        if t == stop_at:
            steps.append(Step(StepKind.HOLD, wave, t, p, c, gated=True))
            break
        if (p_next, c_next, t) == before:
            # Cannot happen with the rules above; guard against an endless loop.
            raise AssertionError(f"rollout planner made no progress at P={p} C={c} t={t}")
        # Never below where traffic already is: traffic only moves forward.
        gate = min(t, max(before[2], ready_share(c, p, n)))
        steps.append(Step(StepKind.WAVE, wave, t, p_next, c_next, gated=True,
                          gate_traffic=gate if gate < t else None))
        p, c = p_next, c_next
        wave += 1
    return Plan(n, surge, tuple(steps), old_gpus_per_replica, new_gpus_per_replica)


def plan_rollback(
    n: int,
    max_surge_percent: int,
    *,
    primary: int,
    canary: int,
    canary_traffic: float,
    old_gpus_per_replica: float = 1.0,
    new_gpus_per_replica: float = 1.0,
) -> Plan:
    """Return to the primary at N replicas and 100% traffic, capacity-safe.

    Each step first moves as much traffic back as the primary's ready replicas can
    carry, then frees canary replicas that no longer carry traffic, then grows the
    primary into the budget. Traffic never exceeds either side's ready capacity, and
    total replicas never exceed N + surge. Where GPUs are short, canary replicas are
    freed before the primary grows.
    """
    surge = surge_replicas(n, max_surge_percent)
    cap = n + surge
    p, c, t = primary, canary, canary_traffic
    steps: list[Step] = []
    while True:
        # Traffic first: the primary takes all it can carry right now.
        t = min(t, max(0.0, round(100 - traffic_cap(p, n), TRAFFIC_DECIMALS)))
        if p >= n or t == 0:
            # The canary carries nothing: free it entirely, then restore the primary
            # to N (the controller deletes before it grows, so the cap holds).
            steps.append(Step(StepKind.REMOVE_CANARY, 0, 0, n, 0))
            break
        c_next = max(replicas_for(t, n), 1)
        p_next = min(n, cap - c_next)
        if p_next <= p and c_next >= c:
            raise AssertionError(f"rollback planner made no progress at P={p} C={c} t={t}")
        steps.append(Step(StepKind.ROLLBACK, 0, t, p_next, c_next))
        p, c = p_next, c_next
    return Plan(n, surge, tuple(steps), old_gpus_per_replica, new_gpus_per_replica)
