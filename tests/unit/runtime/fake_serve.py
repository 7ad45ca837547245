"""An in-memory Ray Serve for controller tests.

It answers the calls the controller makes on `runtime.serve_api.ServeClient`,
`state()`, `update_apps()` and the package API (`http`), plus the splitter's routes page,
which `wait_router` polls when no splitter admin socket is given.
`state()` goes through the real `parse_state`, so the controller reads the same shapes
as from the REST API. Each `state()` read is one poll: a new replica is STARTING for
`start_polls` polls, then RUNNING; a version listed in `broken_versions` has a
constructor that raises, so its deployment turns DEPLOY_FAILED instead. Scale-downs
and deletes take effect at once. Every PUT is recorded with the ready replicas it met,
so tests can check invariants on every intermediate state.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from runtime import apps
from runtime.serve_api import ServeState, parse_state

# Fields whose change makes Serve replace every replica of an app (new code).
_CODE_FIELDS = ("import_path", "args", "runtime_env")


class SimulatedCrash(BaseException):
    """`pulumi up` was killed just before its PUT reached Serve. A BaseException, as a
    kill is nothing the controller can catch: no safety net runs."""


@dataclass(frozen=True)
class Put:
    apps: dict[str, dict]  # every app the PUT declared, by name
    ready: dict[str, int]  # RUNNING replicas per app just before the PUT


@dataclass
class _Replica:
    replica_id: str
    polls_left: int


class _Reply:
    def __init__(self, body: dict | None = None, status_code: int = 200):
        self._body = body or {}
        self.status_code = status_code
        self.text = ""

    def json(self) -> dict:
        return self._body


class _PackageApi:
    """The dashboard's /api/packages/gcs/<name>: GET says whether it exists, PUT stores it."""

    def __init__(self):
        self.packages: dict[str, bytes] = {}

    def get(self, path: str, **_kwargs) -> _Reply:
        return _Reply(status_code=200 if path in self.packages else 404)

    def put(self, path: str, content: bytes = b"", **_kwargs) -> _Reply:
        self.packages[path] = content
        return _Reply()


class FakeServe:
    def __init__(self, start_polls: int = 0, broken_versions: tuple[str, ...] = (),
                 crash_at_put: int | None = None, lose_at_put: tuple[int, str] | None = None,
                 unhealthy_polls: int = 3):
        self.start_polls = start_polls
        # (k, version): right after the k-th PUT, a node holding one of `version`'s
        # replicas is lost: its deployment is UNHEALTHY for `unhealthy_polls` reads of the
        # state, then Serve starts a replacement (start_polls more to run).
        self.lose_at_put, self.unhealthy_polls = lose_at_put, unhealthy_polls
        self.unhealthy: dict[tuple[str, str], int] = {}
        self.dashboard_url = f"http://fake-serve-{id(self)}:8265"  # its own locks
        self.cluster_key = self.dashboard_url
        self.broken_versions = set(broken_versions)
        self.crash_at_put = crash_at_put  # 1-based count of attempted PUTs
        self.configs: dict[str, dict] = {}
        self.replicas: dict[tuple[str, str], list[_Replica]] = {}  # (app, deployment) -> replicas
        self.failed: set[tuple[str, str]] = set()
        self.puts: list[Put] = []
        self.attempts = 0
        self._ids = itertools.count(1)
        self.http = _PackageApi()

    # ------------------------------------------------------ the ServeClient API
    def state(self) -> ServeState:
        self._tick()
        return parse_state(self.payload())

    def update_apps(self, change: Callable[[dict[str, dict]], dict[str, dict]],
                    http_options: dict | None = None) -> ServeState:
        # Same contract as ServeClient.update_apps: read, change, PUT the union unless
        # nothing changed.
        before = self.state()
        current = {cfg["name"]: cfg for cfg in before.app_configs()}
        wanted = change(copy.deepcopy(current))
        if wanted == current and before.running:
            return before
        self.attempts += 1
        if self.attempts == self.crash_at_put:
            raise SimulatedCrash(f"killed before PUT #{self.attempts}")
        self.puts.append(Put(copy.deepcopy(wanted), {n: a.running_replicas for n, a in before.apps.items()}))
        self._deploy(copy.deepcopy(wanted))
        if self.lose_at_put and self.lose_at_put[0] == len(self.puts):
            self._lose_replica(self.lose_at_put[1])
        return before

    def http_get(self, url: str, **_kwargs) -> _Reply:
        """What the splitter answers on /-/gpuserve/routes: the table it read from Serve."""
        assert urlparse(url).path == "/-/gpuserve/routes", url
        routes = []
        for name, config in self.configs.items():
            deployment = config["deployments"][0]
            if apps.version_of(name) is None and deployment.get("name") == apps.ROUTER_DEPLOYMENT:
                user = deployment["user_config"]
                weights = {v: float(w) for v, w in user.get("weights", {}).items() if float(w) > 0}
                routes.append({"service": name, "prefix": user.get("route_prefix"), "primary": user.get("primary"),
                               "canary": user.get("canary") or "", "weights": weights})
        return _Reply({"routes": routes})

    # ---------------------------------------------------------------- internals
    def _deploy(self, wanted: dict[str, dict]) -> None:
        for name in set(self.configs) - set(wanted):
            del self.configs[name]
            for key in [k for k in self.replicas if k[0] == name]:
                del self.replicas[key]
                self.failed.discard(key)
        for name, config in wanted.items():
            old = self.configs.get(name)
            new_code = old is None or any(old.get(f) != config.get(f) for f in _CODE_FIELDS)
            self.configs[name] = config
            for deployment in config["deployments"]:
                key = (name, deployment["name"])
                if new_code:
                    self.replicas[key] = []
                    self.failed.discard(key)
                replicas = self.replicas.setdefault(key, [])
                target = _target_replicas(deployment)
                del replicas[target:]  # scale-down: surplus replicas stop at once
                while len(replicas) < target:
                    replicas.append(_Replica(f"{name}#{next(self._ids)}", self.start_polls))
        self._settle()

    def _lose_replica(self, version: str) -> None:
        key = next(k for k, replicas in self.replicas.items() if apps.version_of(k[0]) == version and replicas)
        self.replicas[key].pop()
        self.unhealthy[key] = self.unhealthy_polls

    def _tick(self) -> None:
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.polls_left = max(0, replica.polls_left - 1)
        for key in list(self.unhealthy):
            self.unhealthy[key] -= 1
            if self.unhealthy[key] <= 0:  # Serve replaces the lost replica
                del self.unhealthy[key]
                if key in self.replicas:
                    self.replicas[key].append(_Replica(f"{key[0]}#{next(self._ids)}", self.start_polls))
        self._settle()

    def _settle(self) -> None:
        # A broken constructor raises when the replica finishes starting; Serve then
        # marks the deployment DEPLOY_FAILED and keeps no replica of it.
        for (name, deployment), replicas in self.replicas.items():
            if apps.version_of(name) in self.broken_versions and any(r.polls_left == 0 for r in replicas):
                self.failed.add((name, deployment))
                replicas.clear()

    def payload(self) -> dict:
        """The body of GET /api/serve/applications/ (the fields parse_state reads)."""
        applications = {}
        for name, config in self.configs.items():
            deployments = {}
            for deployment in config["deployments"]:
                key = (name, deployment["name"])
                replicas = self.replicas.get(key, [])
                running = all(r.polls_left == 0 for r in replicas) and len(replicas) == _target_replicas(deployment)
                status = ("DEPLOY_FAILED" if key in self.failed else "UNHEALTHY" if key in self.unhealthy
                          else "HEALTHY" if running else "UPDATING")
                deployments[deployment["name"]] = {
                    "status": status,
                    "message": (f"ValueError: constructor of {name} raised" if key in self.failed
                                else "A replica's health check failed." if key in self.unhealthy else ""),
                    "target_num_replicas": _target_replicas(deployment),
                    "replicas": [{"replica_id": r.replica_id, "state": "RUNNING" if r.polls_left == 0 else "STARTING"}
                                 for r in replicas],
                }
            statuses = {d["status"] for d in deployments.values()}
            status = ("DEPLOY_FAILED" if "DEPLOY_FAILED" in statuses else "UNHEALTHY" if "UNHEALTHY" in statuses
                      else "RUNNING" if statuses <= {"HEALTHY"} else "DEPLOYING")
            message = next((d["message"] for d in deployments.values() if d["message"]), "")
            applications[name] = {"status": status, "message": message,
                                  "deployed_app_config": copy.deepcopy(config), "deployments": deployments}
        return {"controller_info": {"node_id": "fake"}, "http_options": {"host": "127.0.0.1", "port": 8000},
                "proxy_location": "EveryNode", "applications": applications}


def _target_replicas(deployment: dict) -> int:
    if "num_replicas" in deployment:
        return int(deployment["num_replicas"])
    return int(deployment.get("autoscaling_config", {}).get("initial_replicas", 1))
