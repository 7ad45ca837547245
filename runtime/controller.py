"""Execute rollout plans against a live Serve cluster, as small ordered steps.

Every step re-reads the live Serve config, does one thing and prints one flushed line
(Pulumi shows a provider's stdout as info messages). Live state is the truth: nothing
is remembered between steps or between runs, so a rollout killed at any moment resumes
from what the cluster shows.

The only state kept outside the apps themselves sits in the Router's user_config:
which version is primary, which is canary, the weights, and when the rollout started
(for the deadline). It lives in the cluster, so it survives a crash of `pulumi up`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from runtime import apps
from runtime.decisions import Intent, Move, decide
from runtime.errors import RolloutFailed
from runtime.gates import GateVerdict, Prober, serve_status_verdict
from runtime.plan import Plan, Step, StepKind, plan_rollback
from runtime.serve_api import ServeClient, ServeState
from runtime.spec import ServiceSpec


@dataclass(frozen=True)
class LiveService:
    """A service as the cluster shows it now."""

    primary: str | None
    canary: str | None
    canary_traffic: float
    declared: dict[str, int]  # version -> declared replicas
    ready: dict[str, int]  # version -> RUNNING replicas
    replica_ids: dict[str, list[str]]
    statuses: dict[str, str]  # version -> app status
    started_at: float | None  # rollout start, from the router
    latency_baseline_ms: float | None  # primary p95 before traffic moved, from the router
    router_config: dict | None

    def outputs(self) -> dict:
        weights = {}
        if self.primary:
            weights[self.primary] = 100 - self.canary_traffic
        if self.canary:
            weights[self.canary] = self.canary_traffic
        return {
            "primary_version": self.primary,
            "canary_version": self.canary,
            "weights": weights,
            "replicas": dict(self.ready),
            "replica_ids": {v: sorted(ids) for v, ids in self.replica_ids.items()},
        }


def observe(state: ServeState, service: str) -> LiveService:
    router = state.apps.get(service)
    primary, canary, weights = apps.router_weights(router.config if router else None)
    declared, ready, ids, statuses = {}, {}, {}, {}
    for name, app in state.apps.items():
        version = apps.version_of(name)
        if apps.service_of(name) != service or version is None:
            continue
        declared[version] = apps.app_replicas(app.config)
        ready[version] = app.running_replicas
        ids[version] = sorted(app.replica_ids)
        statuses[version] = app.status
    # A canary whose app is gone (deleted by a finished or aborted run) is not live.
    if canary and canary not in declared:
        canary = None
    if primary and primary not in declared:
        primary = None
    started = baseline = None
    if router:
        for deployment in router.config.get("deployments", []):
            user = deployment.get("user_config") or {}
            started = user.get("rollout_started_at", started)
            baseline = user.get("latency_baseline_ms", baseline)
    return LiveService(
        primary=primary,
        canary=canary,
        canary_traffic=float(weights.get(canary, 0.0)) if canary else 0.0,
        declared=declared,
        ready=ready,
        replica_ids=ids,
        statuses=statuses,
        started_at=started,
        latency_baseline_ms=baseline,
        router_config=router.config if router else None,
    )


@dataclass
class History:
    """Steps of the current run, with timestamps and gate figures: a resource output."""

    entries: list[dict] = field(default_factory=list)

    def add(self, **entry) -> None:
        self.entries.append({"at": round(time.time(), 3), **entry})


class RolloutController:
    def __init__(
        self,
        spec: ServiceSpec,
        client: ServeClient,
        prober: Prober | None = None,
        log: Callable[[str], None] | None = None,
        poll_s: float = 0.5,
    ):
        self.spec = spec
        self.client = client
        self.prober = prober or Prober(spec.http_url.rstrip("/") + spec.route_prefix)
        self.log = log or (lambda line: print(line, flush=True))
        self.poll_s = poll_s
        self.history = History()
        self.t0 = time.monotonic()
        self.baseline_p95_ms: float | None = None

    # ----------------------------------------------------------------- reading
    def _apply(self, change: Callable[[dict[str, dict]], dict[str, dict]]) -> None:
        """The one way this controller writes Serve: read, change our apps, PUT the union."""
        self.client.update_apps(change, http_options=self.spec.http_options)

    def live(self) -> LiveService:
        return observe(self.client.state(), self.spec.service)

    def say(self, message: str, **entry) -> None:
        # Elapsed time ends the first line, so a message followed by a table still reads
        # (and parses) as one timed line.
        first, _, rest = message.partition("\n")
        line = f"[{self.spec.service}] {first} ({time.monotonic() - self.t0:.1f}s)"
        self.log(line + (f"\n{rest}" if rest else ""))
        self.history.add(message=message, **entry)

    # ------------------------------------------------------------- entry point
    def converge(self) -> LiveService:
        """Bring the live service to the spec. Raises RolloutFailed after a rollback.

        `decide` (runtime/decisions.py, pure) names the moves; this runs the first one,
        re-reads the cluster and decides again until a move ends the run."""
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
            self._apply_in_place(live)
            return self._drop_orphans(self.live())
        if move.intent is Intent.ROLLOUT:
            if move.resumed:
                self.say(f"resuming rollout {move.primary} -> {move.canary} from live state: canary "
                         f"{live.ready.get(move.canary, 0)} ready at {live.canary_traffic}% traffic "
                         "(its progress so far passed the gates; the next wave re-checks them)")
            return self._rollout(live, move.plan)
        if move.intent in (Intent.ROLLBACK_STALE, Intent.ABORT):
            self._rollback(live, reason=move.why, raise_after=False)  # it says what it does
            return self.live()
        self.say(move.why)
        if move.intent is Intent.ADOPT:
            self._write_router(move.primary, None, 0)
        return self.live()  # DECLINE: nothing moves

    # ----------------------------------------------------------------- create
    def _create(self) -> LiveService:
        target = self.spec.version.version
        n = self.spec.scaling.replicas
        self.say(f"deploying {target} with {n} replicas")
        self._put_declared_version(n)
        self._wait_ready(target, n, purpose=f"first deploy of {target}", on_fail=self._fail_create)
        self._write_router(target, None, 0)
        self._wait_router(target, None, 0)
        self.say(f"{target} serves 100% with {n} replicas")
        return self.live()

    def _fail_create(self, why: str) -> None:
        target = self.spec.version.version
        self._apply(lambda a: {k: v for k, v in a.items()
                                           if apps.service_of(k) != self.spec.service})
        raise RolloutFailed(
            f"first deploy of {self.spec.service} {target} failed: {why}; nothing serves "
            f"{self.spec.service} yet. Fix the version and run `pulumi up` again."
        )

    # -------------------------------------------------------------- in place
    def _apply_in_place(self, live: LiveService) -> None:
        """Lightweight changes: Serve reconfigures in place, no replica restarts."""
        version = live.primary
        n = self.spec.scaling.replicas
        wanted = apps.version_app(self.spec.service, self.spec.version, self.spec.scaling, n)
        router_now = live.router_config
        router_wanted = apps.router_app(self.spec, version, None, {version: 100})
        current = self.client.state().apps.get(apps.version_app_name(self.spec.service, version))
        if current and _same_app(current.config, wanted) and _same_app(router_now or {}, router_wanted):
            return
        self.say(f"applying lightweight change to {version} in place ({n} replicas)")
        self._apply(lambda a: {**a, wanted["name"]: wanted, router_wanted["name"]: router_wanted})
        self._wait_ready(version, n, purpose="in-place update", on_fail=None)

    def _drop_orphans(self, live: LiveService) -> LiveService:
        orphans = [v for v in live.declared if v not in (live.primary, live.canary)]
        if orphans:
            self.say(f"removing versions that receive no traffic: {', '.join(orphans)}")
            names = {apps.version_app_name(self.spec.service, v) for v in orphans}
            self._apply(lambda a: {k: v for k, v in a.items() if k not in names})
            return self.live()
        return live

    # --------------------------------------------------------------- rollout
    def _rollout(self, live: LiveService, plan: Plan) -> LiveService:
        primary, canary = live.primary, self.spec.version.version
        started = live.started_at or time.time()
        deadline = started + self.spec.rollout.deadline_minutes * 60
        self.say(f"rollout {primary} -> {canary}: {plan.waves} waves, surge {plan.surge}, "
                 f"peak {plan.peak_gpus:g} GPUs\n{plan.table()}")
        self.baseline_p95_ms = live.latency_baseline_ms if live.canary == canary else None
        p = live.ready.get(primary, self.spec.scaling.replicas)
        c = live.ready.get(canary, 0) if live.canary == canary else 0
        t = live.canary_traffic if live.canary == canary else 0
        for step in plan.steps:
            try:
                self._check_deadline(deadline, step)
                if step.kind is StepKind.DEPLOY_CANARY:
                    self._put_declared_version(step.canary_replicas)
                    self._write_router(primary, canary, 0, started)
                    self._wait_ready(canary, step.canary_replicas, purpose="canary deploy", on_fail=self._raise_gate)
                    c = step.canary_replicas
                    self.say(f"canary {canary} deployed: {c} ready at 0% traffic",
                             step=step.kind.value, primary_replicas=p, canary_replicas=c, canary_traffic=0)
                    self._measure_baseline(primary, canary, started)
                    continue
                self._shift(primary, canary, step.canary_traffic, started)
                t = step.canary_traffic
                if step.gated:
                    verdict = self._bake_and_gate(canary, step)
                    if not verdict.passed:
                        raise _GateFailed(verdict)
                if step.kind is StepKind.HOLD:
                    self.say(f"holding at {t:.4g}% canary traffic (canary_percent); next `pulumi up` "
                             "with 100 or unset completes, 0 aborts",
                             step="hold", wave=step.wave, canary_traffic=t)
                    return self.live()
                if step.kind is StepKind.FINISH:
                    return self._finish(primary, canary, step)
                self._resize(primary, step.primary_replicas, canary, step.canary_replicas)
                p, c = step.primary_replicas, step.canary_replicas
                self.say(f"wave {step.wave}/{plan.waves}: {canary} {c} replicas at {t:.4g}%, "
                         f"{primary} {p} replicas at {100 - t:.4g}%",
                         step="wave", wave=step.wave, primary_replicas=p, canary_replicas=c, canary_traffic=t)
            except _GateFailed as failed:
                self._rollback(self.live(), reason=failed.verdict.detail, wave=step.wave,
                               waves=plan.waves, verdict=failed.verdict)
        return self.live()

    def _finish(self, primary: str, canary: str, step: Step) -> LiveService:
        # The canary already carries 100%: give the primary's in-flight requests
        # graceful_shutdown_timeout_s to finish, then delete it.
        drain = self.spec.scaling.graceful_shutdown_timeout_s
        self.say(f"wave {step.wave}: {canary} serves 100%; draining {primary} for {drain:g}s")
        time.sleep(drain)
        old = apps.version_app_name(self.spec.service, primary)
        router = apps.router_app(self.spec, canary, None, {canary: 100})
        self._apply(lambda a: {**{k: v for k, v in a.items() if k != old}, router["name"]: router})
        self._wait_gone(primary)
        self.say(f"rollout complete: {canary} is primary with {step.canary_replicas} replicas",
                 step="finish", wave=step.wave, canary_traffic=100)
        return self.live()

    # --------------------------------------------------------------- rollback
    def _rollback(self, live: LiveService, reason: str, wave: int = 0, waves: int = 0,
                  verdict: GateVerdict | None = None, raise_after: bool = True) -> None:
        primary, canary = live.primary, live.canary
        n = self.spec.scaling.replicas
        if canary is None:
            if raise_after:
                self._raise_failed(primary, self.spec.version.version, reason, wave, waves, verdict)
            return
        plan = plan_rollback(
            n, self.spec.rollout.max_surge_percent,
            primary=min(n, live.ready.get(primary, 0)),
            canary=live.ready.get(canary, 0),
            canary_traffic=live.canary_traffic,
        )
        self.say(f"rolling back {canary} -> {primary}: {reason}\n{plan.table()}", step="rollback-start")
        started = live.started_at
        c = live.ready.get(canary, 0)
        p = live.ready.get(primary, 0)
        for step in plan.steps:
            self._shift(primary, canary, step.canary_traffic, started)
            if step.kind is StepKind.REMOVE_CANARY:
                self._remove_canary(primary, canary)
                c = 0
                if step.primary_replicas > p:
                    self._scale(primary, step.primary_replicas)
                    p = step.primary_replicas
            else:
                # Free canary replicas before growing the primary: GPUs may be short.
                if step.canary_replicas < c:
                    self._scale(canary, step.canary_replicas)
                if step.primary_replicas > p:
                    self._scale(primary, step.primary_replicas)
                p, c = step.primary_replicas, step.canary_replicas
            self.say(f"rollback: {primary} {p} replicas at {100 - step.canary_traffic:.4g}%, "
                     f"{canary} {c} at {step.canary_traffic:.4g}%",
                     step="rollback", primary_replicas=p, canary_replicas=c, canary_traffic=step.canary_traffic)
        if p < n:
            self._scale(primary, n)
        self.say(f"rollback complete: {primary} serves 100% with {n} replicas", step="rollback-done")
        if raise_after:
            self._raise_failed(primary, canary, reason, wave, waves, verdict)

    def _raise_failed(self, primary, canary, reason, wave, waves, verdict) -> None:
        where = f" at wave {wave}/{waves}" if wave else " before wave 1"
        gate = f" ({verdict.gate} gate)" if verdict else ""
        raise RolloutFailed(
            f"rollout of {self.spec.service} {canary} rolled back{where}{gate}: {reason}; "
            f"primary {primary} serves 100%"
        )

    def _remove_canary(self, primary: str, canary: str) -> None:
        name = apps.version_app_name(self.spec.service, canary)
        router = apps.router_app(self.spec, primary, None, {primary: 100})
        self._apply(lambda a: {**{k: v for k, v in a.items() if k != name}, router["name"]: router})
        self._wait_router(primary, None, 0)
        self._wait_gone(canary)

    # ------------------------------------------------------------ primitives
    def _check_deadline(self, deadline: float, step: Step) -> None:
        if time.time() > deadline:
            raise _GateFailed(GateVerdict(
                False, "deadline",
                f"rollout deadline of {self.spec.rollout.deadline_minutes:g} minutes passed "
                f"before {step.kind.value} {step.wave or ''}".rstrip(),
            ))

    def _raise_gate(self, why: str) -> None:
        raise _GateFailed(GateVerdict(False, "serve-status", why))

    def _bake_and_gate(self, canary: str, step: Step) -> GateVerdict:
        end = time.monotonic() + self.spec.rollout.bake_seconds
        while time.monotonic() < end:
            verdict = self._status_verdict(canary)
            if not verdict.passed:
                return verdict
            time.sleep(min(self.poll_s, max(0.0, end - time.monotonic())))
        verdict = self._status_verdict(canary)
        if not verdict.passed:
            return verdict
        verdict = self.prober.evaluate(self.spec.rollout.gates, self.baseline_p95_ms)
        self.say(f"gate after wave {step.wave} at {step.canary_traffic:.4g}%: "
                 f"{'pass' if verdict.passed else 'FAIL'}: {verdict.detail}",
                 step="gate", wave=step.wave, gate=verdict.figures())
        return verdict

    def _measure_baseline(self, primary: str, canary: str, started: float) -> None:
        """The primary's p95 under its full share of traffic, before any moves; kept in
        the router so a resumed rollout judges latency against the same reference."""
        gates = self.spec.rollout.gates
        if not gates.enabled:
            return
        stats = self.prober.probe("primary", gates.min_probes, gates.probe_concurrency)
        self.baseline_p95_ms = round(stats.p95_ms, 1) if stats.ok else None
        self._write_router(primary, canary, 0, started)
        self.say(f"latency baseline: primary {primary} p95 {stats.p95_ms:.0f}ms over {stats.sent} probes",
                 step="baseline", baseline_p95_ms=self.baseline_p95_ms)

    def _status_verdict(self, version: str) -> GateVerdict:
        app = self.client.state().apps.get(apps.version_app_name(self.spec.service, version))
        if app is None:
            return GateVerdict(False, "serve-status", f"app of {version} disappeared")
        return serve_status_verdict(app.status, {d.name: d.status for d in app.deployments.values()}, app.message)

    def _put_declared_version(self, replicas: int) -> None:
        """Write the app of the version the spec declares, at `replicas` replicas."""
        app = apps.version_app(self.spec.service, self.spec.version, self.spec.scaling, replicas)
        self._apply(lambda a: {**a, app["name"]: app})

    def _scale(self, version: str, replicas: int) -> None:
        name = apps.version_app_name(self.spec.service, version)

        def change(current: dict[str, dict]) -> dict[str, dict]:
            config = _with_replicas(current[name], replicas, self.spec)
            return {**current, name: config}

        self._apply(change)
        self._wait_ready(version, replicas, purpose=f"scaling {version} to {replicas}", on_fail=None)

    def _resize(self, primary: str, p: int, canary: str, c: int) -> None:
        # Shrink first and wait until the replicas are gone, so the surge budget
        # holds at every instant, then grow the canary into the freed GPUs.
        self._scale(primary, p)
        grown = apps.version_app_name(self.spec.service, canary)
        self._apply(lambda a: {**a, grown: _with_replicas(a[grown], c, self.spec)})
        self._wait_ready(canary, c, purpose=f"growing canary {canary} to {c}", on_fail=self._raise_gate)

    def _write_router(self, primary: str, canary: str | None, canary_traffic: float,
                      started: float | None = None) -> None:
        weights = {primary: round(100 - canary_traffic, 4)}
        if canary:
            weights[canary] = canary_traffic
        router = apps.router_app(self.spec, primary, canary, weights)
        user = router["deployments"][0]["user_config"]
        if canary:
            user["rollout_started_at"] = started or time.time()
            if self.baseline_p95_ms is not None:
                user["latency_baseline_ms"] = self.baseline_p95_ms
        self._apply(lambda a: {**a, router["name"]: router})

    def _shift(self, primary: str, canary: str, canary_traffic: float, started: float | None) -> None:
        live = self.live()
        if live.canary == canary and live.canary_traffic == canary_traffic and live.primary == primary:
            return
        self._write_router(primary, canary, canary_traffic, started)
        self._wait_router(primary, canary, canary_traffic)

    def _wait_router(self, primary: str, canary: str | None, canary_traffic: float) -> None:
        """Wait until the Router replica has applied the weights (it reports them on GET)."""
        import httpx

        url = self.spec.http_url.rstrip("/") + self.spec.route_prefix
        want = {primary: round(100 - canary_traffic, 4)}
        if canary and canary_traffic:
            want[canary] = float(canary_traffic)
        want = {v: w for v, w in want.items() if w > 0}
        deadline = time.monotonic() + 60
        last = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(url, timeout=5).json()
                if last.get("primary") == primary and last.get("weights") == want:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(self.poll_s / 2)
        raise RolloutFailed(f"router of {self.spec.service} did not apply weights {want} within 60s; "
                            f"it reports {last}")

    def _wait_ready(self, version: str, replicas: int, purpose: str,
                    on_fail: Callable[[str], None] | None) -> None:
        name = apps.version_app_name(self.spec.service, version)
        deadline = time.monotonic() + self.spec.rollout.step_timeout_seconds
        while True:
            app = self.client.state().apps.get(name)
            if app is not None:
                replicas_now = [r for d in app.deployments.values() for r in d.replicas]
                running = sum(1 for r in replicas_now if r.state == "RUNNING")
                if app.status == "RUNNING" and running == replicas and len(replicas_now) == replicas:
                    return
                verdict = serve_status_verdict(
                    app.status, {d.name: d.status for d in app.deployments.values()}, app.message)
                if not verdict.passed:
                    why = f"{purpose}: {verdict.detail}"
                    if on_fail:
                        on_fail(why)
                    raise RolloutFailed(f"{self.spec.service}: {why}")
            if time.monotonic() > deadline:
                why = (f"{purpose}: not ready within {self.spec.rollout.step_timeout_seconds:g}s "
                       f"(status {app.status if app else 'missing'})")
                if on_fail:
                    on_fail(why)
                raise RolloutFailed(f"{self.spec.service}: {why}")
            time.sleep(self.poll_s)

    def _wait_gone(self, version: str, timeout_s: float = 120.0) -> None:
        name = apps.version_app_name(self.spec.service, version)
        deadline = time.monotonic() + timeout_s
        while name in self.client.state().apps:
            if time.monotonic() > deadline:
                raise RolloutFailed(f"{self.spec.service}: app {name} still present {timeout_s:g}s after delete")
            time.sleep(self.poll_s)

    # ----------------------------------------------------------------- delete
    def remove(self) -> None:
        self._apply(lambda a: {k: v for k, v in a.items() if apps.service_of(k) != self.spec.service})


class _GateFailed(Exception):
    def __init__(self, verdict: GateVerdict):
        super().__init__(verdict.detail)
        self.verdict = verdict


def _with_replicas(config: dict, replicas: int, spec: ServiceSpec) -> dict:
    config = {**config, "deployments": [dict(d) for d in config["deployments"]]}
    for deployment in config["deployments"]:
        if deployment.get("name") != apps.MODEL_DEPLOYMENT:
            continue
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"] = apps.autoscaling_bounds(spec.scaling, replicas)
        else:
            deployment["num_replicas"] = replicas
    return config


def _same_app(live: dict, wanted: dict) -> bool:
    """Compare a live deployed_app_config with a rendered one on the fields we set."""
    def norm(config: dict) -> dict:
        out = {k: config.get(k) for k in ("name", "route_prefix", "import_path", "args")}
        out["runtime_env"] = config.get("runtime_env") or {}
        out["deployments"] = [
            {k: _num(v) for k, v in sorted(d.items())} for d in config.get("deployments", [])
        ]
        return out
    return norm(live) == norm(wanted)


def _num(value):
    if isinstance(value, dict):
        return {k: _num(v) for k, v in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value
