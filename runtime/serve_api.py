"""Typed client for Ray Serve's REST API on the Ray dashboard (default port 8265).

- GET    /api/serve/applications/  -> ServeInstanceDetails (live status of every app)
- PUT    /api/serve/applications/  <- ServeDeploySchema (the full declarative config)
- DELETE /api/serve/applications/  shuts Serve down

The dashboard requires token auth: every call carries `Authorization: Bearer <token>`.
PUT replaces every application on the cluster, so a writer must read the live config,
change only its own service's apps, and put the union back; `ServeClient.update_apps`
does that under a per-cluster lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import filelock
import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from runtime.apps import SCALED_DEPLOYMENT_ENV
from runtime.errors import ServeApiError

APPS_PATH = "/api/serve/applications/"
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class TransientServeError(ServeApiError):
    """An answer worth asking again: the dashboard is busy, restarting or overloaded."""


_TRANSIENT = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout,
              httpx.WriteError, httpx.PoolTimeout, TransientServeError)


@dataclass(frozen=True)
class ReplicaState:
    replica_id: str
    state: str


@dataclass(frozen=True)
class DeploymentState:
    name: str
    status: str
    message: str
    target_replicas: int
    replicas: tuple[ReplicaState, ...]

    @property
    def running_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.state == "RUNNING")


@dataclass(frozen=True)
class AppState:
    name: str
    status: str
    message: str
    config: dict
    deployments: dict[str, DeploymentState] = field(default_factory=dict)

    @property
    def serving(self) -> list[DeploymentState]:
        """The deployment whose replicas a rollout counts: the scaled one its config names
        (runtime/apps.py), even before Serve lists it; every deployment of an app that
        names none (deployed before names were recorded)."""
        env = ((self.config or {}).get("runtime_env") or {}).get("env_vars") or {}
        name = env.get(SCALED_DEPLOYMENT_ENV)
        if name is None:
            return list(self.deployments.values())
        return [d for d in self.deployments.values() if d.name == name]

    @property
    def running_replicas(self) -> int:
        return sum(d.running_replicas for d in self.serving)

    @property
    def replica_ids(self) -> set[str]:
        return {r.replica_id for d in self.serving for r in d.replicas}


@dataclass(frozen=True)
class ServeState:
    """What Serve reports right now: the one source of truth for the controller."""

    running: bool
    http_options: dict
    proxy_location: str | None
    apps: dict[str, AppState]

    def app_configs(self) -> list[dict]:
        return [a.config for a in self.apps.values() if a.config]


def parse_state(payload: dict) -> ServeState:
    apps: dict[str, AppState] = {}
    for name, app in (payload.get("applications") or {}).items():
        deployments = {
            dname: DeploymentState(
                name=dname,
                status=d.get("status", ""),
                message=d.get("message", ""),
                target_replicas=int(d.get("target_num_replicas") or 0),
                replicas=tuple(
                    ReplicaState(r["replica_id"], r["state"]) for r in d.get("replicas", [])
                ),
            )
            for dname, d in (app.get("deployments") or {}).items()
        }
        apps[name] = AppState(
            name=name,
            status=app.get("status", ""),
            message=app.get("message", ""),
            config=app.get("deployed_app_config") or {},
            deployments=deployments,
        )
    return ServeState(
        running=bool(payload.get("controller_info")),
        http_options=payload.get("http_options") or {},
        proxy_location=payload.get("proxy_location"),
        apps=apps,
    )


def validate_deploy_config(config: dict) -> dict:
    """Validate with Ray's own ServeDeploySchema before anything is sent.

    Imported lazily: ray.serve.schema is heavy and only needed where configs are written.
    """
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except Exception as exc:  # pydantic.ValidationError, kept generic across Ray versions
        raise ServeApiError(f"Serve config rejected by ServeDeploySchema: {exc}") from exc
    return config


# The lock guards one read-modify-write of the config: seconds. A wait this long means the
# holder is stuck, and saying so beats waiting forever.
LOCK_TIMEOUT_S = 60.0


@contextlib.contextmanager
def cluster_lock(dashboard_url: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise read-modify-write of one cluster's Serve config across processes.

    Pulumi runs resource operations in parallel, and PUT replaces every app, so two
    services writing at once would undo each other without this lock. The holder's pid
    sits beside it, so that a timeout can name who holds it.
    """
    path = _lock_path("serve", dashboard_url)
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=timeout_s)
    except filelock.Timeout:
        raise ServeApiError(
            f"the Serve config lock of {dashboard_url} ({path}) is still held after {timeout_s:g}s, by "
            f"{_holder(path)}; if that process is stuck, end it, then run `pulumi up` again") from None
    try:
        path.with_suffix(".holder").write_text(f"pid {os.getpid()}")
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def surge_lease(dashboard_url: str, pool: str, service: str, timeout_s: float,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """One rollout at a time holds surge GPUs in a node pool.

    Pulumi rolls services out in parallel, and each rollout's surge was checked (by the
    policy pack, by the planner) against the pool minus the others' steady replicas:
    two surges at once could together exceed the pool. So a rollout that surges waits
    here, up to `timeout_s` (its deadline), for the one under way in the same pool.
    Nothing has moved while it waits."""
    path = _lock_path("surge", f"{dashboard_url}#{pool}")
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if on_wait:
            on_wait(_holder(path))
        try:
            lock.acquire(timeout=max(timeout_s, 0.0))
        except filelock.Timeout:
            raise ServeApiError(
                f"{service}: the rollout of {_holder(path)} in pool '{pool}' still holds its surge GPUs after "
                f"{timeout_s:g}s (this rollout's deadline); nothing moved. Run `pulumi up` again once it is done."
            ) from None
    try:
        path.with_suffix(".holder").write_text(f"{service} (pid {os.getpid()})")
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def service_lock(cluster_key: str, service: str, holder: str, wait_s: float | None = None) -> Iterator[None]:
    """Held by whoever converges a service (a `pulumi up`, or the console acting on an
    operator's command when nothing runs): one at a time. `wait_s` None waits as long
    as it takes; 0 raises ServiceBusy at once, naming the holder."""
    path = _lock_path("service", f"{cluster_key}#{service}")
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=-1 if wait_s is None else wait_s)
    except filelock.Timeout:
        raise ServiceBusy(_holder(path)) from None
    try:
        path.with_suffix(".holder").write_text(f"{holder} (pid {os.getpid()})")
        yield
    finally:
        lock.release()


class ServiceBusy(Exception):
    """Another process converges the service; its description is the message."""


def _lock_path(kind: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gpuserve-{kind}-{digest}.lock"


def _holder(path: Path) -> str:
    holder = path.with_suffix(".holder")
    return holder.read_text().strip() if holder.exists() else "an unknown process"


class ServeClient:
    def __init__(self, dashboard_url: str, token: str, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None, cluster_key: str | None = None):
        self.dashboard_url = dashboard_url.rstrip("/")
        # What the cross-process locks are keyed by: the cluster's declared address. A
        # Kubernetes dashboard is reached through a port-forward whose local port differs
        # per call, so the URL itself would lock nothing.
        self.cluster_key = (cluster_key or dashboard_url).rstrip("/")
        self._http = httpx.Client(
            base_url=self.dashboard_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    @property
    def http(self) -> httpx.Client:
        """The authenticated dashboard client, for the package API (runtime/packaging.py)."""
        return self._http

    def __enter__(self) -> "ServeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        # Exponential with full jitter, so parallel services do not retry in lockstep.
        wait=wait_random_exponential(multiplier=0.2, max=2),
        stop=stop_after_delay(30),
        reraise=True,
    )
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            kind = TransientServeError if response.status_code in _TRANSIENT_STATUS else ServeApiError
            raise kind(
                f"{method} {self.dashboard_url}{path} returned {response.status_code}: "
                f"{response.text[:500]}"
            )
        return response

    def state(self) -> ServeState:
        return parse_state(self._request("GET", APPS_PATH).json())

    def put(self, config: dict) -> None:
        self._request("PUT", APPS_PATH, json=validate_deploy_config(config))

    def shutdown(self) -> None:
        self._request("DELETE", APPS_PATH)

    def update_apps(
        self,
        change: Callable[[dict[str, dict]], dict[str, dict]],
        http_options: dict | None = None,
        proxy_location: str | None = None,
    ) -> ServeState:
        """Read the live app configs, apply `change` (name -> app config), PUT the union.

        `change` receives every app on the cluster and returns the full new mapping;
        callers touch only their own service's apps. Returns the state read before.
        """
        with cluster_lock(self.cluster_key):
            before = self.state()
            apps = {cfg["name"]: cfg for cfg in before.app_configs()}
            new_apps = change(dict(apps))
            if new_apps == apps and before.running:
                return before
            config: dict = {"applications": list(new_apps.values())}
            options = http_options or _declarable_http_options(before.http_options)
            if options:
                config["http_options"] = options
            if proxy_location or before.proxy_location:
                config["proxy_location"] = proxy_location or before.proxy_location
            self.put(config)
            return before


def _declarable_http_options(live: dict) -> dict:
    # Only host and port are ours to declare; echoing every live field back would
    # pin defaults (timeouts, TLS) that we never chose.
    return {k: live[k] for k in ("host", "port") if live.get(k) is not None}
