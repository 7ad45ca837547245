"""The effects a rollout has on one service's Serve apps, each waiting until Serve shows it.

`ServeActions` is the only writer of a service's apps: every write reads the live apps,
changes ours and PUTs the full declarative config (runtime/serve_api.py), so the
controller and the operator never fight over partial state. The controller
(runtime/controller.py) decides *which* of these to run; nothing here decides anything.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx

from runtime import apps, packaging, record, splitter
from runtime.constants import PROJECT_DIR
from runtime.errors import RolloutFailed
from runtime.gates import serve_status_verdict
from runtime.live import LiveService, observe
from runtime.serve_api import ServeClient
from runtime.spec import ServiceSpec
from traffic import protocol

OnFail = Callable[[str], None] | None  # called with the reason before a wait gives up


class ServeActions:
    def __init__(self, spec: ServiceSpec, client: ServeClient, poll_s: float = 0.25):
        self.spec = spec
        self.client = client
        self.poll_s = poll_s
        self._code_uri: str | None = None
        self._record_uri: str | None = None
        # The run's intent, recorded in the router with every write that names a canary
        # (runtime/live.py): the controller sets it before each step.
        self.intent: dict | None = None
        # The rollout's deadline (epoch seconds) while one runs forward: every wait ends by
        # then. None during a rollback, which must finish whatever the clock says.
        self.deadline: float | None = None
        # Called at every poll of every wait (the controller's check for an operator's
        # command); it may raise to end the wait.
        self.interrupt: Callable[[], None] | None = None
        # A finished rollout's summary (runtime/record.py), added to the history with the
        # next write of the routing record.
        self.summary: dict | None = None
        self.last_state = None  # the Serve state the latest read returned

    # --------------------------------------------------------------- packages
    def code_uri(self) -> str | None:
        """The declared version's code_dir, uploaded once (content-addressed)."""
        version = self.spec.version
        if version.code_dir and self._code_uri is None:
            self._code_uri = packaging.ensure_uploaded(self.client.http, version.code_dir, version.code_hash
                                                       or packaging.digest(version.code_dir))
        return self._code_uri

    def record_uri(self) -> str:
        """gpuserve's `traffic` package, which the routing record imports on the cluster."""
        if self._record_uri is None:
            self._record_uri = packaging.ensure_module_uploaded(self.client.http, PROJECT_DIR / "traffic")
        return self._record_uri

    def router_app(self, primary: str, canary: str | None, weights: dict[str, float]) -> dict:
        record = apps.router_app(self.spec, primary, canary, weights)
        return {**record, "runtime_env": {"py_modules": [self.record_uri()]}}

    # --------------------------------------------------------------- reading
    def state(self):
        self.last_state = self.client.state()
        return self.last_state

    def live(self) -> LiveService:
        return observe(self.state(), self.spec.service)

    def app(self, version: str):
        return self.state().apps.get(apps.version_app_name(self.spec.service, version))

    def operator(self, fresh: bool = False) -> record.OperatorCommand | None:
        """The operator's command in the routing record, as the latest read showed it."""
        state = self.state() if fresh or self.last_state is None else self.last_state
        router = state.apps.get(self.spec.service)
        return record.operator_of(router.config if router else None)

    # --------------------------------------------------------------- writing
    def apply(self, change: Callable[[dict[str, dict]], dict[str, dict]]) -> None:
        """The one way to write Serve: read, change our apps, PUT the union. Every version
        app of the service sits on its hidden prefix, where the splitter sends traffic."""
        service = self.spec.service
        summary = self.summary

        def with_prefixes(current: dict[str, dict]) -> dict[str, dict]:
            changed = change(current)
            if service in changed:
                # A new routing record keeps the live one's operator command and history.
                router = record.carried(current.get(service), changed[service])
                if summary is not None:
                    router = record.with_rollouts(
                        router, record.appended(record.rollouts_of(current.get(service)), summary))
                changed[service] = router
            return {name: apps.with_hidden_prefix(service, name, config) for name, config in changed.items()}

        self.client.update_apps(with_prefixes, http_options=self.spec.http_options)
        if summary is not None and self.summary is summary:
            self.summary = None  # written

    def write_summary(self, summary: dict) -> None:
        """Add a rollout's summary to the history now (when no routing write follows)."""
        self.summary = summary
        self.apply(lambda a: a)

    def set_operator(self, command: record.OperatorCommand | None) -> None:
        """Record (or clear, with None) the operator's command in the routing record."""
        service = self.spec.service

        def change(current: dict[str, dict]) -> dict[str, dict]:
            if service not in current:
                raise RolloutFailed(f"{service} has no routing record on the cluster: nothing to command")
            return {**current, service: record.with_operator(current[service], command)}
        self.apply(change)

    def put_declared_version(self, replicas: int) -> None:
        """Write the app of the version the spec declares, at `replicas` replicas."""
        app = apps.version_app(self.spec.service, self.spec.version, self.spec.scaling, replicas, self.code_uri())
        self.apply(lambda a: {**a, app["name"]: app})

    def scale(self, version: str, replicas: int, on_fail: OnFail = None, purpose: str | None = None,
              watch: Callable[[], None] | None = None, outlast_unhealthy: bool = False) -> None:
        name = apps.version_app_name(self.spec.service, version)
        self.apply(lambda a: {**a, name: _with_replicas(a[name], replicas, self.spec)})
        self.wait_ready(version, replicas, purpose=purpose or f"scaling {version} to {replicas}", on_fail=on_fail,
                        watch=watch, outlast_unhealthy=outlast_unhealthy)

    def write_router(self, primary: str, canary: str | None, canary_traffic: float,
                     started: float | None = None, baseline_p95_ms: float | None = None) -> None:
        weights = {primary: round(100 - canary_traffic, 4)}
        if canary:
            weights[canary] = canary_traffic
        router = self.router_app(primary, canary, weights)
        user = router["deployments"][0]["user_config"]
        if canary:
            user["rollout_started_at"] = started or time.time()
            if baseline_p95_ms is not None:
                user["latency_baseline_ms"] = baseline_p95_ms
            if self.intent is not None:
                user["intent"] = self.intent
        self.apply(lambda a: {**a, router["name"]: router})

    def shift(self, primary: str, canary: str, canary_traffic: float, started: float | None,
              baseline_p95_ms: float | None) -> bool:
        """Move traffic, and wait until the data plane applies it. False (and nothing
        written) when it already has."""
        live = self.live()
        if live.canary == canary and live.canary_traffic == canary_traffic and live.primary == primary:
            return False
        self.write_router(primary, canary, canary_traffic, started, baseline_p95_ms)
        self.wait_router(primary, canary, canary_traffic)
        return True

    def remove_version(self, version: str, primary: str) -> None:
        """Route everything to `primary`, then delete `version`'s app and wait until it is gone."""
        name = apps.version_app_name(self.spec.service, version)
        router = self.router_app(primary, None, {primary: 100})
        self.apply(lambda a: {**{k: v for k, v in a.items() if k != name}, router["name"]: router})
        self.wait_router(primary, None, 0)
        self.wait_gone(version)

    def remove_versions(self, versions: list[str]) -> None:
        names = {apps.version_app_name(self.spec.service, v) for v in versions}
        self.apply(lambda a: {k: v for k, v in a.items() if k not in names})

    def remove_service(self) -> None:
        self.apply(lambda a: {k: v for k, v in a.items() if apps.service_of(k) != self.spec.service})

    def in_place_update_needed(self, version: str, replicas: int) -> tuple[dict, dict] | None:
        """The version and router apps a lightweight change needs, or None if live already matches."""
        wanted = apps.version_app(self.spec.service, self.spec.version, self.spec.scaling, replicas, self.code_uri())
        live = self.live()
        router_wanted = record.carried(live.router_config, self.router_app(version, None, {version: 100}))
        current = self.app(version)
        if current and _same_app(current.config, wanted) and _same_app(live.router_config or {}, router_wanted):
            return None
        return wanted, router_wanted

    # --------------------------------------------------------------- waiting
    def wait_router(self, primary: str, canary: str | None, canary_traffic: float) -> None:
        """Wait until the data plane serves the weights: every splitter instance when
        their admin sockets are known (local), else the public routes page."""
        want = {primary: round(100 - canary_traffic, 4)}
        if canary and canary_traffic:
            want[canary] = float(canary_traffic)
        want = {v: w for v, w in want.items() if w > 0}
        if self.spec.splitter_admins:
            confirmed = splitter.confirm_routes(self.spec.splitter_admins, self.spec.service, primary, want)
            if confirmed:
                return
        url = self.spec.http_url.rstrip("/") + protocol.RESERVED_PREFIX + "routes"
        deadline = time.monotonic() + 60
        last = None
        while time.monotonic() < deadline:
            try:
                last = splitter.route_of(httpx.get(url, timeout=5).json(), self.spec.service)
                if last and last.get("primary") == primary and last.get("weights") == want:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(self.poll_s / 2)
        raise RolloutFailed(f"the splitter at {url} did not apply {self.spec.service} weights {want} "
                            f"within 60s; it reports {last}")

    def wait_ready(self, version: str, replicas: int, purpose: str, on_fail: OnFail,
                   watch: Callable[[], None] | None = None, outlast_unhealthy: bool = False) -> None:
        """Wait until exactly `replicas` replicas of `version` run. A failed Serve status or
        the step timeout calls `on_fail(reason)` (which may raise), then raises RolloutFailed.
        `watch`, if given, runs between polls (and may raise to end the wait).
        `outlast_unhealthy`: an UNHEALTHY status (a replica failed its health check: its
        node was lost, say) is waited out up to the step timeout, since Serve replaces such
        replicas; DEPLOY_FAILED still ends the wait at once. For the primary, whose
        replicas have served all along: giving up on it would leave nothing to fall back to
        (the bench's node loss failed `pulumi up` here while Serve was replacing it)."""
        timeout_s, cause = self.spec.rollout.step_timeout_seconds, "step_timeout_seconds"
        if self.deadline is not None and self.deadline - time.time() < timeout_s:
            timeout_s, cause = max(0.0, self.deadline - time.time()), "the rollout's deadline_minutes"
        deadline = time.monotonic() + timeout_s
        unhealthy = ""
        while True:
            app = self.app(version)
            self._interrupt()  # on the state just read
            if app is not None:
                replicas_now = [r for d in app.serving for r in d.replicas]
                running = sum(1 for r in replicas_now if r.state == "RUNNING")
                if app.status == "RUNNING" and running == replicas and len(replicas_now) == replicas:
                    return
                verdict = serve_status_verdict(app)
                if not verdict.passed:
                    if not (outlast_unhealthy and _only_unhealthy(app)):
                        self._give_up(f"{purpose}: {verdict.detail}", on_fail)
                    unhealthy = f": {verdict.detail}"
            if time.monotonic() > deadline:
                self._give_up(f"{purpose}: not ready within {timeout_s:.0f}s ({cause}; "
                              f"status {app.status if app else 'missing'}){unhealthy}", on_fail)
            if watch is not None:
                watch()
            time.sleep(self.poll_s)

    def wait_gone(self, version: str, timeout_s: float = 120.0) -> None:
        name = apps.version_app_name(self.spec.service, version)
        deadline = time.monotonic() + timeout_s
        while name in self.state().apps:
            if time.monotonic() > deadline:
                raise RolloutFailed(f"{self.spec.service}: app {name} still present {timeout_s:g}s after delete")
            time.sleep(self.poll_s)

    def _interrupt(self) -> None:
        if self.interrupt is not None:
            self.interrupt()

    def _give_up(self, why: str, on_fail: OnFail) -> None:
        if on_fail:
            on_fail(why)
        raise RolloutFailed(f"{self.spec.service}: {why}")


def _only_unhealthy(app) -> bool:
    """Whether the app's failure is only replicas failing health checks (Serve replaces
    them), not a deploy that failed."""
    return "DEPLOY_FAILED" not in {app.status, *(d.status for d in app.deployments.values())}


def _with_replicas(config: dict, replicas: int, spec: ServiceSpec) -> dict:
    config = {**config, "deployments": [dict(d) for d in config["deployments"]]}
    scaled = apps.scaled_deployment(config)
    for deployment in config["deployments"]:
        if deployment.get("name") != scaled:
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
