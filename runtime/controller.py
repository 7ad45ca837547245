"""Carry out the moves that bring a live service to its spec, one small step at a time.

How to read it:
- `converge` asks `decide` (runtime/decisions.py, pure) for the next move, runs it,
  re-reads the cluster and decides again until a move ends the run. Nothing is remembered
  between steps or runs, so a rollout killed at any moment resumes from what the cluster
  shows (runtime/live.py).
- A rollout is the planner's steps (runtime/plan.py) run by `_rollout`, a short saga: each
  step kind has one handler in `STEPS`; every step's compensation is the same
  capacity-safe rollback (`_rollback`), run when a step's gate or wait fails.
- A first deploy's compensation is removing what it deployed (`_fail_create`).
- Effects on Serve, and the waits for them, are `ServeActions` (runtime/serve_actions.py).
Every step prints one flushed line; Pulumi shows a provider's stdout as info messages.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from runtime.decisions import Intent, Move, decide
from runtime.errors import RolloutFailed
from runtime import analysis, record
from runtime.gates import GateVerdict, Prober, TrafficGate, serve_status_verdict
from runtime.live import History, LiveService
from runtime.notify import Notifier, notifier_for
from runtime.plan import Plan, Step, StepKind, plan_rollback
from runtime.record import OperatorCommand
from runtime.prometheus import PrometheusGate
from runtime.serve_actions import ServeActions
from runtime.serve_api import ServeClient, surge_lease
from runtime.spec import GateConfig, ServiceSpec


class GateFailed(Exception):
    """A step's check failed: the rollout's compensation (a rollback) follows."""

    def __init__(self, verdict: GateVerdict):
        super().__init__(verdict.detail)
        self.verdict = verdict


class RolloutController:
    def __init__(self, spec: ServiceSpec, client: ServeClient, prober: Prober | None = None,
                 log: Callable[[str], None] | None = None, poll_s: float = 0.25,
                 traffic: TrafficGate | None = None,
                 metrics_gate: Callable[[GateConfig], PrometheusGate | None] | None = None,
                 notifier: Notifier | None = None):
        self.spec = spec
        self.serve = ServeActions(spec, client, poll_s)
        self.prober = prober or Prober(spec.http_url.rstrip("/") + spec.route_prefix, spec.rollout.gates.probe)
        # Real traffic from every local splitter instance; none where they are not reachable.
        self._samples = analysis.SampleSource(spec.splitter_admins, spec.service) if spec.splitter_admins else None
        self.traffic = traffic or TrafficGate(self._samples or (lambda since: []))
        self.metrics_gate = metrics_gate or _prometheus_gate
        self.log = log or (lambda line: print(line, flush=True))
        self.poll_s = poll_s
        self.history = History()
        self.t0 = time.monotonic()
        self.baseline_p95_ms: float | None = None
        self.steady_median_ms: float | None = None  # real traffic's, before the first shift
        self.steady_ms: tuple[float, ...] = ()  # its answers' latencies
        # Where a rollout's time goes, by kind of step (seconds): said when it completes.
        self.timings: dict[str, float] = {}
        self._inner: list[float] = []  # time of the steps timed inside each open `timed`
        self._judging_since_ms: int | None = None
        # (primary, canary, started) while a rollout runs forward: what an operator's
        # command (runtime/record.py) may stop or hurry. Read at every poll of every wait.
        self._forward: tuple[str, str, float] | None = None
        self.promoted: OperatorCommand | None = None
        self.last_summary: dict | None = None  # of the rollout this run ended (or held)
        self.serve.interrupt = self._operator_poll
        # Webhooks for the run's events, delivered off this thread (runtime/notify.py).
        self.notifier = notifier if notifier is not None else notifier_for(spec.rollout.notify, self.log)

    def notify(self, event: str, message: str, **fields) -> None:
        if self.notifier is not None:
            self.notifier.send(event, self.spec.service, message, **fields)

    def close(self) -> None:
        """End of the run: give the webhooks' queue a bounded few seconds to drain."""
        if self._samples is not None:
            self._samples.close()
        if self.notifier is not None:
            self.notifier.close()

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Count the block's time to `step`, exclusively: a step timed inside another
        (the gates judging during a resize wait) is taken out of the outer one, so the
        steps add up to the rollout's time."""
        start = time.monotonic()
        self._inner.append(0.0)
        try:
            yield
        finally:
            spent = time.monotonic() - start
            self.timings[step] = self.timings.get(step, 0.0) + spent - self._inner.pop()
            if self._inner:
                self._inner[-1] += spent

    def live(self) -> LiveService:
        return self.serve.live()

    def say(self, message: str, **entry) -> None:
        # Elapsed time ends the first line, so a message followed by a table still reads
        # as one timed line.
        first, _, rest = message.partition("\n")
        line = f"[{self.spec.service}] {first} ({time.monotonic() - self.t0:.1f}s)"
        self.log(line + (f"\n{rest}" if rest else ""))
        self.history.add(message=message, **entry)

    # ------------------------------------------------------------- entry point
    def converge(self) -> LiveService:
        """Bring the live service to the spec. Raises RolloutFailed after a rollback."""
        live = self.live()
        for _ in range(len(Intent)):  # every non-terminal move removes its own cause
            move = decide(live, self.spec)[0]
            live = self._run(move, live)
            if move.intent.terminal:
                return live
        raise RolloutFailed(f"{self.spec.service}: no terminal move after {len(Intent)} decisions; live state "
                            f"primary={live.primary} canary={live.canary}")

    def _run(self, move: Move, live: LiveService) -> LiveService:
        if move.intent is Intent.CREATE:
            return self._create()
        if move.intent is Intent.IN_PLACE:
            return self._in_place(live)
        if move.intent is Intent.ROLLOUT:
            if move.resumed:
                self.say(f"resuming rollout {move.primary} -> {move.canary} from live state: canary "
                         f"{live.ready.get(move.canary, 0)} ready at {live.canary_traffic}% traffic "
                         "(its progress so far passed the gates; the next wave re-checks them)")
            return self._leased(live, move.plan, lambda: self._rollout(live, move.plan))
        if move.intent in (Intent.ROLLBACK_STALE, Intent.ABORT):
            self._rollback(live, reason=move.why, raise_after=False)  # it says what it does
            return self.live()
        if move.intent is Intent.REFUSE:
            raise RolloutFailed(f"{self.spec.service}: {move.why}")
        if move.intent is Intent.RESUME_ROLLBACK:
            self._rollback(live, reason=move.why)  # raises: the rollout failed, as it had
            return self.live()
        self.say(move.why)
        if move.intent is Intent.ADOPT:
            # Found without a router, it may never have served: it must run before it
            # takes traffic, and if it cannot, this is a failed first deploy.
            self.serve.wait_ready(move.primary, live.declared[move.primary],
                                  purpose=f"adopting {move.primary}", on_fail=self._fail_create)
            self.serve.write_router(move.primary, None, 0)
            return self.live()
        return self._drop_orphans(self.live())  # DECLINE: nothing else moves

    def remove(self) -> None:
        self.serve.remove_service()

    # ----------------------------------------------------------------- create
    def _create(self) -> LiveService:
        target, n = self.spec.version.version, self.spec.scaling.replicas
        self.say(f"deploying {target} with {n} replicas")
        self.serve.put_declared_version(n)
        self.serve.wait_ready(target, n, purpose=f"first deploy of {target}", on_fail=self._fail_create)
        self.serve.write_router(target, None, 0)
        self.serve.wait_router(target, None, 0)
        self.say(f"{target} serves 100% with {n} replicas")
        return self.live()

    def _fail_create(self, why: str) -> None:
        self.serve.remove_service()
        raise RolloutFailed(
            f"first deploy of {self.spec.service} {self.spec.version.version} failed: {why}; nothing serves "
            f"{self.spec.service} yet. Fix the version and run `pulumi up` again."
        )

    # --------------------------------------------------------------- in place
    def _in_place(self, live: LiveService) -> LiveService:
        """Lightweight changes: Serve reconfigures in place, no replica restarts. Then
        versions that receive no traffic are removed."""
        version, n = live.primary, self.spec.scaling.replicas
        needed = self.serve.in_place_update_needed(version, n)
        if needed:
            wanted, router = needed
            self.say(f"applying lightweight change to {version} in place ({n} replicas)")
            self.serve.apply(lambda a: {**a, wanted["name"]: wanted, router["name"]: router})
            self.serve.wait_ready(version, n, purpose="in-place update", on_fail=None)
            live = self.live()
        return self._drop_orphans(live)

    def _drop_orphans(self, live: LiveService) -> LiveService:
        """Version apps the router names neither primary nor canary hold GPUs for nothing
        (e.g. a canary deployed by a run killed before its router write)."""
        orphans = [v for v in live.declared if v not in (live.primary, live.canary)]
        if not orphans:
            return live
        self.say(f"removing versions that receive no traffic: {', '.join(orphans)}")
        self.serve.remove_versions(orphans)
        return self.live()

    # ---------------------------------------------------------------- rollout
    def _leased(self, live: LiveService, plan: Plan, run):
        """Run a rollout that surges past the service's steady GPUs under its pool's surge
        lease (runtime/serve_api.surge_lease): two services' surges never overlap."""
        steady = plan.n * max(plan.old_gpus_per_replica, plan.new_gpus_per_replica)
        if plan.peak_gpus <= steady:
            return run()
        started = live.started_at or time.time()
        remaining = started + self.spec.rollout.deadline_minutes * 60 - time.time()
        with surge_lease(self.serve.client.cluster_key, self.spec.pool or "default", self.spec.service, remaining,
                         on_wait=lambda holder: self.say(
                             f"waiting for the rollout of {holder} in pool '{self.spec.pool or 'default'}' to end: "
                             "one rollout at a time surges in a pool")):
            return run()

    def _rollout(self, live: LiveService, plan: Plan) -> LiveService:
        """The saga: run the plan's steps in order; on a failed check, compensate with the
        capacity-safe rollback and raise. A HOLD or FINISH step ends the run."""
        primary, canary = live.primary, self.spec.version.version
        started = live.started_at or time.time()
        self.say(f"rollout {primary} -> {canary}: {plan.waves} waves, surge {plan.surge}, "
                 f"peak {plan.peak_gpus:g} GPUs\n{plan.table()}")
        resumed = live.canary == canary
        self.notify("start", f"rollout {primary} -> {canary}: {plan.waves} waves, surge {plan.surge}"
                    + (" (resumed)" if resumed else ""), **{"from": primary, "to": canary}, waves=plan.waves,
                    resumed=resumed)
        self.baseline_p95_ms = live.latency_baseline_ms if resumed else None
        if self.spec.rollout.gates.enabled:
            analysis.preload()
        if resumed and self.baseline_p95_ms is None:
            # Killed before the baseline reached the router: measure it now, at the split
            # that stands, rather than judge latency with no reference at all.
            self._measure_baseline(primary, canary, started, live.canary_traffic)
        self.serve.deadline = started + self.spec.rollout.deadline_minutes * 60
        self._forward = (primary, canary, started)
        held = False
        for step in plan.steps:
            # Recorded in the router with this step's first write: a run cut off here is
            # resumed in the same direction (runtime/decisions.py).
            self.serve.intent = {"direction": "forward", "target": canary, "wave": step.wave,
                                 "spec": self.spec.digest()}
            try:
                self._check_deadline(started, step)
                self.serve.operator(fresh=True)
                self._operator_poll()  # before each step, whatever the waits saw
                if STEPS[step.kind](self, primary, canary, started, step, plan):
                    held = step.kind is StepKind.HOLD
                    break
            except GateFailed as failed:  # compensate, then raise RolloutFailed
                self._forward = None
                self._rollback(self.live(), reason=failed.verdict.detail, wave=step.wave,
                               waves=plan.waves, verdict=failed.verdict)
            except RolloutFailed:
                raise  # a wait gave up after its own compensation
            except Exception as exc:
                self._forward = None
                self._safety_net(exc, step, plan)
        self._forward = None
        if held and self.promoted:
            return self._past_the_hold()
        live = self.live()
        if held:
            summary = self._summary(primary, canary, started, "held", plan.waves)
            # Converging a hold again moves nothing, and writes nothing either.
            if not any(r.get("id") == summary["id"] and r.get("outcome") == "held" for r in live.rollouts):
                self.serve.write_summary(summary)
        return live

    def _past_the_hold(self) -> LiveService:
        """The operator promoted a held canary: the rest of the rollout, as `pulumi up`
        with canary_percent unset would run it (the stack config still says hold: the next
        preview says so, runtime/record.py)."""
        self.spec = self.spec.model_copy(update={"rollout": self.spec.rollout.model_copy(
            update={"canary_percent": None})})
        self.serve.spec = self.spec
        live = self.live()
        move = decide(live, self.spec)[0]
        if move.intent is not Intent.ROLLOUT:
            return live
        self.say(f"{self.promoted.describe()}: going on past the hold")
        return self._rollout(live, move.plan)

    # --------------------------------------------------------------- operator
    def _operator_poll(self) -> None:
        """At every poll of a forward rollout: an operator's abort ends it (the rollback
        follows, as for a failed gate); a promote skips the remaining bakes and holds."""
        if self._forward is None:
            return
        primary, canary, started = self._forward
        command = self.serve.operator()
        if command is None or not command.applies_to(canary, started, self.spec.digest()):
            return
        if command.command == "abort":
            self._forward = None
            raise GateFailed(GateVerdict(False, "operator", command.describe()))
        if self.promoted is None:
            self.promoted = command
            self.say(f"{command.describe()}: the remaining bakes and holds are skipped", step="operator",
                     operator=command.to_json())

    def abort_now(self, command: OperatorCommand) -> LiveService:
        """The operator's abort with no `pulumi up` running: the same rollback."""
        live = self.live()
        if live.canary != command.version:
            raise RolloutFailed(f"{self.spec.service}: nothing to abort: {live.primary} serves 100%"
                                + (f" and the canary is {live.canary}" if live.canary else ""))
        self._rollback(live, reason=command.describe(), verdict=GateVerdict(False, "operator", command.describe()),
                       raise_after=False)
        return self.live()

    def promote_now(self, command: OperatorCommand) -> LiveService:
        """The operator's promote with no `pulumi up` running: the rest of the rollout,
        bakes skipped."""
        live = self.live()
        if live.canary != command.version:
            raise RolloutFailed(f"{self.spec.service}: nothing to promote: {live.primary} serves 100%"
                                + (f" and the canary is {live.canary}" if live.canary else ""))
        self.promoted = command
        self.spec = self.spec.model_copy(update={
            "version": self.spec.version.model_copy(update={"version": command.version})
            if self.spec.version.version != command.version else self.spec.version,
            "rollout": self.spec.rollout.model_copy(update={"canary_percent": None})})
        self.serve.spec = self.spec
        return self.converge()

    def _summary(self, primary: str, canary: str, started: float, outcome: str, waves: int,
                 reason: str | None = None, operator: OperatorCommand | None = None) -> dict:
        self.last_summary = record.summary(
            self.history.entries, service=self.spec.service, source=primary, target=canary, started=started,
            ended=time.time(), outcome=outcome, waves=waves, reason=reason, operator=operator)
        return self.last_summary

    def run_record(self) -> dict | None:
        """This run's part of a rollout, for its full record (runtime/record.write_run):
        the summary, every step and evaluation, and what a timeline needs of the spec.
        None when the run carried no rollout forward or back."""
        if self.last_summary is None:
            return None
        return {"id": self.last_summary["id"], "summary": self.last_summary, "history": self.history.entries,
                "num_gpus": self.spec.version.num_gpus, "replicas": self.spec.scaling.replicas}

    def _safety_net(self, exc: Exception, step: Step, plan: Plan) -> None:
        """Anything unforeseen after traffic may have moved: all traffic back on the
        primary (the same capacity-safe rollback) before the error surfaces."""
        cause = f"unexpected error in {step.kind.value}{f' {step.wave}' if step.wave else ''}: " \
                f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            live = self.live()
        except Exception as unreadable:
            raise RolloutFailed(f"{cause}; and the live state is unreadable ({type(unreadable).__name__}: "
                                f"{unreadable}), so traffic may still reach the canary: run `pulumi up` "
                                "again once the cluster answers") from exc
        if live.canary is None:
            raise RolloutFailed(f"{self.spec.service}: {cause}; {live.primary} serves 100%") from exc
        try:
            self._rollback(live, reason=cause, wave=step.wave, waves=plan.waves)
        except RolloutFailed:
            raise
        except Exception as again:
            raise RolloutFailed(f"{cause}; the rollback failed too ({type(again).__name__}: {again}): run "
                                "`pulumi up` again to finish it") from exc

    def _deploy_canary(self, primary: str, canary: str, started: float, step: Step, plan: Plan) -> bool:
        with self.timed("deploy"):
            self.serve.put_declared_version(step.canary_replicas)
            self.serve.write_router(primary, canary, 0, started)
        with self.timed("ready wait"):
            self.serve.wait_ready(canary, step.canary_replicas, purpose="canary deploy", on_fail=_serve_gate)
        self.say(f"canary {canary} deployed: {step.canary_replicas} ready at 0% traffic", step=step.kind.value,
                 primary_replicas=step.primary_replicas, canary_replicas=step.canary_replicas, canary_traffic=0)
        with self.timed("baseline"):
            self._measure_baseline(primary, canary, started)
        return False

    def _shift_and_gate(self, primary: str, canary: str, started: float, step: Step) -> None:
        """Move the canary's traffic share to the step's gated share (its share of the
        ready replicas, runtime/plan.py), bake, and judge the gates; then to the share the
        resize needs, when that is higher."""
        self._shift(primary, canary, started, step, step.judged_at if step.gated else step.canary_traffic)
        if step.gated:
            judged = self.timings.get("gate", 0.0)
            start = time.monotonic()
            verdict = self._bake_and_gate(primary, canary, step)
            # The bake is the waiting; the time spent judging is the gate's.
            self.timings["bake"] = (self.timings.get("bake", 0.0) + time.monotonic() - start
                                    - (self.timings.get("gate", 0.0) - judged))
            if not verdict.passed:
                raise GateFailed(verdict)
            if step.canary_traffic != step.judged_at:
                self._shift(primary, canary, started, step, step.canary_traffic)

    def _shift(self, primary: str, canary: str, started: float, step: Step, traffic: float) -> None:
        with self.timed("traffic shift"):
            self.serve.shift(primary, canary, traffic, started, self.baseline_p95_ms)
        # On record (not in the log): what the timeline draws the bake's traffic from.
        self.history.add(step="shift", wave=step.wave, canary_traffic=traffic)

    def _wave(self, primary: str, canary: str, started: float, step: Step, plan: Plan) -> bool:
        self._shift_and_gate(primary, canary, started, step)
        # Shrink first and wait until the replicas are gone, so the surge budget holds at
        # every instant, then grow the canary into the freed GPUs.
        # The canary keeps its share of real traffic while replicas change: the gates keep
        # judging it (a version that starts failing between two bakes is caught then, not
        # at the next wave's bake, after the splitter's retry budget is spent).
        watch = self._watch(primary, canary, step)
        with self.timed("drain"):
            self.serve.scale(primary, step.primary_replicas, watch=watch, outlast_unhealthy=True)
        with self.timed("ready wait"):
            self.serve.scale(canary, step.canary_replicas, on_fail=_serve_gate,
                             purpose=f"growing canary {canary} to {step.canary_replicas}", watch=watch)
        t = step.canary_traffic
        message = (f"wave {step.wave}/{plan.waves}: {canary} {step.canary_replicas} replicas at {t:.4g}%, "
                   f"{primary} {step.primary_replicas} replicas at {100 - t:.4g}%")
        self.say(message, step="wave", wave=step.wave, primary_replicas=step.primary_replicas,
                 canary_replicas=step.canary_replicas, canary_traffic=t)
        self.notify("wave", message, **{"from": primary, "to": canary}, wave=step.wave, waves=plan.waves,
                    canary_traffic=t, canary_replicas=step.canary_replicas, primary_replicas=step.primary_replicas)
        return False

    def _hold(self, primary: str, canary: str, started: float, step: Step, plan: Plan) -> bool:
        self._shift_and_gate(primary, canary, started, step)
        if self.promoted is not None:
            return True  # `_rollout` goes on past it
        self.notify("done", f"holding at {step.canary_traffic:.4g}% canary traffic (canary_percent)",
                    **{"from": primary, "to": canary}, outcome="held", canary_traffic=step.canary_traffic)
        self.say(f"holding at {step.canary_traffic:.4g}% canary traffic (canary_percent); next `pulumi up` "
                 "with 100 or unset completes, 0 aborts", step="hold", wave=step.wave,
                 canary_traffic=step.canary_traffic)
        return True

    def _finish(self, primary: str, canary: str, started: float, step: Step, plan: Plan) -> bool:
        self._shift_and_gate(primary, canary, started, step)
        # The canary carries 100% on every splitter instance (the shift waited for that),
        # so no new request reaches the primary. Deleting it now is the drain: Serve stops
        # each replica gracefully, letting its in-flight requests (streams included) finish
        # for up to graceful_shutdown_timeout_s. (A sleep of that length first, as before,
        # only made every rollout that much longer: 10 s by default.)
        drain = self.spec.scaling.graceful_shutdown_timeout_s
        self.say(f"wave {step.wave}: {canary} serves 100%; draining {primary} as it is deleted "
                 f"(in-flight requests get up to {drain:g}s)")
        self.serve.summary = self._summary(primary, canary, started, "promoted", plan.waves,
                                           operator=self.promoted)
        with self.timed("delete"):
            self.serve.remove_version(primary, canary)
        self.say(f"rollout complete: {canary} is primary with {step.canary_replicas} replicas",
                 step="finish", wave=step.wave, canary_traffic=100)
        self.notify("done", f"rollout complete: {canary} is primary with {step.canary_replicas} replicas",
                    **{"from": primary, "to": canary}, outcome="promoted", waves=plan.waves)
        self._said_timings()
        return True

    def _said_timings(self) -> None:
        """One line of where the rollout's time went, by kind of step, in STEP_ORDER."""
        spent = {k: round(self.timings[k], 2) for k in STEP_ORDER if k in self.timings}
        total = time.monotonic() - self.t0
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in spent.items())
        self.say(f"time by step: {parts}; other {max(0.0, total - sum(spent.values())):.1f}s of {total:.1f}s",
                 step="timings", timings=spent, total_s=round(total, 2))

    # --------------------------------------------------------------- rollback
    def _rollback(self, live: LiveService, reason: str, wave: int = 0, waves: int = 0,
                  verdict: GateVerdict | None = None, raise_after: bool = True) -> None:
        """Capacity-safe: traffic returns to the primary only as its ready replicas can
        carry it, and canary replicas are freed before the primary grows.

        Except from a canary that fails requests (`URGENT_GATES`): its share is failing
        or already landing on the primary through the splitter's fallback, so all of it
        moves to the primary at once (one router write), and the replicas follow."""
        primary, canary, n = live.primary, live.canary, self.spec.scaling.replicas
        if canary is not None:
            # A resumed rollback keeps the urgency it was recorded with.
            urgent = (verdict is not None and verdict.gate in URGENT_GATES) or bool((live.intent or {}).get("urgent"))
            moved_now = urgent and live.canary_traffic > 0
            traffic = 0.0 if urgent else live.canary_traffic
            plan = plan_rollback(n, self.spec.rollout.max_surge_percent, primary=min(n, live.ready.get(primary, 0)),
                                 canary=live.ready.get(canary, 0), canary_traffic=traffic)
            self.serve.deadline = None  # a rollback runs to its end, deadline or not
            # Before anything else moves (and before it is announced), the router records
            # that this is a rollback: a run cut off from here on finishes it rather than
            # roll the canary forward again. The urgent shift carries it.
            self.serve.intent = {"direction": "rollback", "target": primary, "canary": canary, "urgent": urgent,
                                 "reason": reason[:300], "spec": self.spec.digest()}
            # The first move back carries the intent (one router write, not two: each costs
            # a Serve round trip on the way to detect-to-primary); a write of its own only
            # when that first step moves no traffic.
            first = traffic if urgent or not plan.steps else plan.steps[0].canary_traffic
            if not self.serve.shift(primary, canary, first, live.started_at, self.baseline_p95_ms):
                self.serve.write_router(primary, canary, first, live.started_at, self.baseline_p95_ms)
            self.say(f"rolling back {canary} -> {primary}: {reason}\n{plan.table()}", step="rollback-start")
            self.notify("rollback", f"rolling back {canary} -> {primary}: {reason}", **{"from": canary, "to": primary},
                        reason=reason, urgent=urgent)
            p, c = live.ready.get(primary, 0), live.ready.get(canary, 0)
            announced = False
            if first == 0:
                announced = self._all_on_primary(primary, p, canary, c, urgent=moved_now)
            for step in plan.steps:
                self.serve.shift(primary, canary, step.canary_traffic, live.started_at, self.baseline_p95_ms)
                if step.canary_traffic == 0 and not announced:
                    announced = self._all_on_primary(primary, p, canary, c, urgent=False)
                if step.kind is StepKind.REMOVE_CANARY:
                    aborted = verdict is not None and verdict.gate == "operator"
                    self.serve.summary = self._summary(
                        primary, canary, live.started_at or time.time(), "aborted" if aborted else "rolled back",
                        waves, reason=reason, operator=self.serve.operator() if aborted else None)
                    self.serve.remove_version(canary, primary)
                    c = 0
                elif step.canary_replicas < c:
                    self.serve.scale(canary, step.canary_replicas)
                if step.primary_replicas > p:
                    self.serve.scale(primary, step.primary_replicas, outlast_unhealthy=True)
                p, c = max(p, step.primary_replicas), min(c, step.canary_replicas)
                self.say(f"rollback: {primary} {p} replicas at {100 - step.canary_traffic:.4g}%, "
                         f"{canary} {c} at {step.canary_traffic:.4g}%", step="rollback", primary_replicas=p,
                         canary_replicas=c, canary_traffic=step.canary_traffic)
            if p < n:
                self.serve.scale(primary, n, outlast_unhealthy=True)
            self.say(f"rollback complete: {primary} serves 100% with {n} replicas", step="rollback-done")
            aborted = verdict is not None and verdict.gate == "operator"
            self.notify("done", f"rollback complete: {primary} serves 100% with {n} replicas",
                        **{"from": canary, "to": primary}, outcome="aborted" if aborted else "rolled back",
                        reason=reason)
        if raise_after:
            where = f" at wave {wave}/{waves}" if wave else " before wave 1"
            gate = f" ({verdict.gate} gate)" if verdict else ""
            raise RolloutFailed(f"rollout of {self.spec.service} {canary or self.spec.version.version} rolled back"
                                f"{where}{gate}: {reason}; primary {primary} serves 100%")

    def _all_on_primary(self, primary: str, p: int, canary: str, c: int, urgent: bool) -> bool:
        """The moment a rollback has every request on the primary (what detect-to-primary
        measures), before the replicas are moved."""
        why = " (the canary fails requests: its traffic moved at once)" if urgent else ""
        self.say(f"rollback: all traffic on {primary}: {primary} {p} replicas at 100%, {canary} {c} at 0%{why}",
                 step="rollback", primary_replicas=p, canary_replicas=c, canary_traffic=0)
        return True

    # ------------------------------------------------------------------ gates
    def _check_deadline(self, started: float, step: Step) -> None:
        if time.time() > started + self.spec.rollout.deadline_minutes * 60:
            raise GateFailed(GateVerdict(
                False, "deadline",
                f"rollout deadline of {self.spec.rollout.deadline_minutes:g} minutes passed "
                f"before {step.kind.value} {step.wave or ''}".rstrip(),
            ))

    def _judge_traffic(self, primary: str, canary: str, step: Step, since_ms: int, metrics,
                       resizing: bool = False) -> list:
        """One evaluation of real traffic by every configured source, on record. While
        replicas start and stop (`resizing`) the splitter's figures judge errors only:
        the versions' latencies are not comparable then (one side queues on fewer
        replicas than the other, and replicas join or leave mid-window)."""
        gates = self.spec.rollout.gates
        latest = []
        with self.timed("gate"):
            if gates.uses_splitter:
                latest.append(self.traffic.judge(gates, primary, canary, since_ms, self.steady_median_ms,
                                                 latency=not resizing, steady_ms=self.steady_ms))
            if metrics is not None:
                latest.append(metrics.judge(self.spec.service, primary, canary))
        self._evaluated(step, latest, gates.window_seconds,
                        step.canary_traffic if resizing else step.judged_at, resizing)
        return latest

    def _watch(self, primary: str, canary: str, step: Step) -> Callable[[], None] | None:
        """A check for the polls of a wait while the canary carries traffic: the bake's
        real-traffic judges, every `evaluate_every_seconds`; a breach raises GateFailed."""
        gates = self.spec.rollout.gates
        if not gates.enabled or not step.canary_traffic:
            return None
        metrics = self.metrics_gate(gates)
        since_ms = self._judging_since_ms or int(time.time() * 1000)
        last = [time.monotonic()]

        def check() -> None:
            if time.monotonic() - last[0] < gates.evaluate_every_seconds:
                return
            last[0] = time.monotonic()
            failed = next((j for j in self._judge_traffic(primary, canary, step, since_ms, metrics, resizing=True)
                           if j.passed is False), None)
            if failed is not None:
                raise GateFailed(self._gate_said(step, GateVerdict(False, failed.gate, failed.detail),
                                                 during_resize=True))
        return check

    def _bake_and_gate(self, primary: str, canary: str, step: Step) -> GateVerdict:
        """Through the bake, every `evaluate_every_seconds`: the canary's Serve status and
        the real traffic of the last window, from each configured source (the splitter's
        samples, Prometheus' queries); a breach ends the bake at once. At its end, probes
        judge only if no source had enough real traffic to judge."""
        gates = self.spec.rollout.gates
        since_ms = int(time.time() * 1000)
        self._judging_since_ms = since_ms  # this wave's traffic, judged until the next shift
        end = time.monotonic() + self.spec.rollout.bake_seconds
        metrics = self.metrics_gate(gates)  # one per bake: it counts failed queries in a row
        latest: list = []
        while True:
            if self.promoted is not None:
                return self._gate_said(step, GateVerdict(True, "operator", self.promoted.describe()))
            verdict = self._status_verdict(canary)
            if not verdict.passed:
                return verdict
            if self.serve.deadline is not None and time.time() > self.serve.deadline:
                return GateVerdict(False, "deadline", f"rollout deadline of {self.spec.rollout.deadline_minutes:g} "
                                   f"minutes passed during the bake of wave {step.wave}")
            if gates.enabled:
                latest = self._judge_traffic(primary, canary, step, since_ms, metrics)
                failed = next((j for j in latest if j.passed is False), None)
                if failed is not None:
                    return self._gate_said(step, GateVerdict(False, failed.gate, failed.detail))
            if time.monotonic() >= end:
                break
            self._sleep_polling(min(gates.evaluate_every_seconds, max(0.0, end - time.monotonic())))
        if any(j.passed for j in latest):
            detail = "; ".join(j.detail for j in latest)
            return self._gate_said(step, GateVerdict(True, next(j.gate for j in latest if j.passed), detail))
        with self.timed("gate"):
            verdict = self.prober.evaluate(gates, self.baseline_p95_ms)
        return self._gate_said(step, verdict)

    def _sleep_polling(self, seconds: float) -> None:
        """Sleep, reading the routing record every OPERATOR_POLL_S for an operator's command."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(OPERATOR_POLL_S, left))
            if self._forward is not None:
                self.serve.operator(fresh=True)
                self._operator_poll()

    def _evaluated(self, step: Step, judgements: list, window_s: float, traffic: float, resizing: bool) -> None:
        """Every evaluation is on record: in the history, and one line in the log."""
        for judgement in judgements:
            self.history.add(step="evaluation", wave=step.wave, window_s=window_s, **judgement.record())
        verdicts = "; ".join(f"{j.record()['source']} {_WORD[j.passed]}: {j.detail}" for j in judgements)
        during = ", resizing: errors only" if resizing else ""
        self.log(f"[{self.spec.service}] evaluation at {traffic:.4g}% (wave {step.wave}{during}, last "
                 f"{window_s:g}s): {verdicts} ({time.monotonic() - self.t0:.1f}s)")

    def _gate_said(self, step: Step, verdict: GateVerdict, during_resize: bool = False) -> GateVerdict:
        where = (f"during wave {step.wave}'s resize at {step.canary_traffic:.4g}%" if during_resize
                 else f"after wave {step.wave} at {step.judged_at:.4g}%")
        self.say(f"gate {where}: "
                 f"{'pass' if verdict.passed else 'FAIL'}: {verdict.detail}",
                 step="gate", wave=step.wave, gate=verdict.figures())
        return verdict

    def _measure_baseline(self, primary: str, canary: str, started: float, canary_traffic: float = 0.0) -> None:
        """The primary's p95 under its full share of traffic, before any moves; kept in
        the router so a resumed rollout judges latency against the same reference."""
        gates = self.spec.rollout.gates
        if not gates.enabled:
            return
        stats = self.prober.probe("primary", gates.min_probes, gates.probe_concurrency)
        if stats.success_rate < gates.min_success_rate:
            # The reference itself fails: judging the canary against it would mean nothing.
            raise GateFailed(GateVerdict(
                False, "reference-failing",
                f"the primary {primary} answered {stats.ok} of {stats.sent} probes of {gates.probe.method} "
                f"{gates.probe.path}" + (f" (failed: {stats.answers})" if stats.answers else "")
                + "; fix the primary or rollout.gates.probe before rolling out", primary=stats))
        self.baseline_p95_ms = round(stats.p95_ms, 1) if stats.ok else None
        self.serve.write_router(primary, canary, canary_traffic, started, self.baseline_p95_ms)
        figures = (f"p95 {stats.p95_ms:.0f}ms over {stats.sent} probes" if stats.ok else
                   f"answered none of {stats.sent} probes ({stats.answers}); no baseline")
        if gates.uses_splitter:
            # Users' own requests at the steady per-replica load: the reference the canary's
            # median is judged against (runtime/analysis.py). Not kept across a resume.
            steady = self.traffic.steady(gates, primary)
            enough = len(steady.latencies_ms) >= gates.min_samples
            self.steady_median_ms = round(steady.p50_ms, 1) if enough else None
            self.steady_ms = steady.latencies_ms if enough else ()
            if enough:
                figures += f"; real traffic median {steady.p50_ms:.0f}ms over {len(steady.latencies_ms)} requests"
        self.say(f"latency baseline: primary {primary} {figures}", step="baseline",
                 baseline_p95_ms=self.baseline_p95_ms, steady_median_ms=self.steady_median_ms)

    def _status_verdict(self, version: str) -> GateVerdict:
        app = self.serve.app(version)
        if app is None:
            return GateVerdict(False, "serve-status", f"app of {version} disappeared")
        return serve_status_verdict(app)


_WORD = {True: "pass", False: "FAIL", None: "no verdict"}
# The kinds of step a rollout's time is counted in (RolloutController.timed).
STEP_ORDER = ("deploy", "ready wait", "baseline", "traffic shift", "bake", "gate", "drain", "delete")
# Verdicts that say the canary fails requests (not merely slow, nor late): its rollback
# moves all traffic to the primary at once rather than as the primary's replicas allow.
URGENT_GATES = frozenset({"traffic-errors", "success-rate", "serve-status", "operator"})
# How often a bake reads the routing record for an operator's command: an abort moves
# all traffic to the primary within about this plus one router write.
OPERATOR_POLL_S = 0.5


def _prometheus_gate(gates: GateConfig) -> PrometheusGate | None:
    return PrometheusGate(gates.prometheus, gates.window_seconds) if gates.uses_prometheus else None


def _serve_gate(why: str) -> None:
    """A wait that failed inside a rollout step is a failed gate: the saga compensates."""
    raise GateFailed(GateVerdict(False, "serve-status", why))


# One handler per kind of planned step; each returns True when it ends the run.
STEPS = {
    StepKind.DEPLOY_CANARY: RolloutController._deploy_canary,
    StepKind.WAVE: RolloutController._wave,
    StepKind.HOLD: RolloutController._hold,
    StepKind.FINISH: RolloutController._finish,
}
