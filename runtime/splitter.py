"""The splitter: gpuserve's compiled data plane (splitter/, Go), in front of Ray Serve.

Locally, N instances share one public address (SO_REUSEPORT), each in a session of its
own, each with an admin socket in the state dir. They read the routing table from
Serve's state (the service's routing record, runtime/apps.py); `confirm_routes` tells
every live instance to reload and checks what it applied, so a weight change counts as
done only once every instance serves it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from runtime.constants import PROJECT_DIR
from runtime.environment import child_environment
from runtime.errors import LocalClusterError, RolloutFailed

BINARY = PROJECT_DIR / ".tools" / "bin" / "gpuserve-splitter"


def binary_sha() -> str:
    """The build's identity: a new build replaces the running instances."""
    import hashlib

    if not BINARY.exists():
        raise LocalClusterError(f"{BINARY} is missing: run `make setup` (scripts/build-splitter builds it)")
    return hashlib.sha256(BINARY.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class SplitterSpec:
    listen: str  # 127.0.0.1:<public port>, shared by every instance
    upstream: str  # the Serve HTTP proxy
    serve_api: str  # the Ray dashboard
    token_path: str
    state_dir: str
    instances: int = 2
    max_body_bytes: int = 10 << 20
    max_header_bytes: int = 64 << 10


@dataclass(frozen=True)
class Instance:
    pid: int
    started_at: float  # the process's create time: a reused pid is not ours
    admin: str  # unix socket path
    log: str

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started_at) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def start_instance(spec: SplitterSpec, index: int) -> Instance:
    if not BINARY.exists():
        raise LocalClusterError(f"{BINARY} is missing: run `make setup` (scripts/build-splitter builds it)")
    state = Path(spec.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    # A fresh name per start, so a replacement can start before the old set stops.
    tag = f"{index}-{secrets.token_hex(3)}"
    admin, log = state / f"splitter-{tag}.sock", state / f"splitter-{tag}.log"
    command = [str(BINARY), f"-listen={spec.listen}", f"-admin={admin}", f"-upstream={spec.upstream}",
               f"-serve-api={spec.serve_api}", f"-token-file={spec.token_path}",
               f"-max-body-bytes={spec.max_body_bytes}", f"-max-header-bytes={spec.max_header_bytes}"]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=state, env=child_environment(os.environ))
    instance = Instance(process.pid, psutil.Process(process.pid).create_time(), str(admin), str(log))
    deadline = time.monotonic() + 10
    while not _admin_answers(instance):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = Path(log).read_text(errors="replace").strip().splitlines()[-3:]
            stop_instance(instance)
            raise LocalClusterError(f"splitter instance {index} on {spec.listen} did not start: {' | '.join(tail)}")
        time.sleep(0.05)
    return instance


def start(spec: SplitterSpec) -> list[Instance]:
    started: list[Instance] = []
    try:
        for index in range(spec.instances):
            started.append(start_instance(spec, index))
    except Exception:
        for instance in started:  # compensation: no half-started data plane
            stop_instance(instance)
        raise
    return started


def stop_instance(instance: Instance, grace_s: float = 12.0) -> None:
    """SIGTERM drains the instance (requests in flight finish); SIGKILL after the grace."""
    if not instance.alive():
        return
    os.kill(instance.pid, signal.SIGTERM)
    try:
        psutil.Process(instance.pid).wait(grace_s)
    except psutil.TimeoutExpired:
        os.kill(instance.pid, signal.SIGKILL)
    except psutil.Error:
        pass
    for leftover in (instance.admin, instance.log):
        Path(leftover).unlink(missing_ok=True)


def _admin(instance: Instance, path: str, method: str = "GET", timeout_s: float = 5.0) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=instance.admin), timeout=timeout_s) as client:
        return client.request(method, f"http://splitter{path}")


def _admin_answers(instance: Instance) -> bool:
    try:
        return _admin(instance, "/healthz", timeout_s=1).status_code == 200
    except httpx.HTTPError:
        return False


def route_of(table: dict, service: str) -> dict | None:
    return next((r for r in table.get("routes") or [] if r.get("service") == service), None)


_DEAD = object()


def confirm_routes(admins: list[str], service: str, primary: str, weights: dict[str, float],
                   timeout_s: float = 60.0, poll_s: float = 0.2) -> int:
    """Tell every live instance to reload until each serves `primary` at `weights`.
    Returns how many instances confirmed. Instances whose socket is gone (the process
    died) serve nothing and are skipped; a live one that never applies it fails."""
    want = {v: float(w) for v, w in weights.items() if w > 0}
    deadline = time.monotonic() + timeout_s
    pending = [a for a in admins if Path(a).exists()]
    confirmed, last = 0, {}
    def reload(admin: str):
        try:
            response = _admin(Instance(0, 0.0, admin, ""), "/reload", "POST")
            return route_of(response.json(), service) if response.status_code == 200 else None
        except (httpx.ConnectError, FileNotFoundError):
            return _DEAD  # nobody listens on the socket: that instance is dead and serves nothing
        except (httpx.HTTPError, ValueError) as exc:
            return {"error": str(exc)}

    while pending:
        still = []
        # All instances at once: each reload is a read of Serve's state, on the way to
        # detect-to-primary.
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(pending)) as pool:
            routes = list(pool.map(reload, pending))
        for admin, route in zip(pending, routes):
            if route is _DEAD:
                continue
            if route and route.get("primary") == primary and route.get("weights") == want:
                confirmed += 1
            else:
                last[admin] = route
                still.append(admin)
        pending = still
        if pending and time.monotonic() > deadline:
            raise RolloutFailed(f"splitter instances {', '.join(Path(a).name for a in pending)} did not apply "
                                f"{service} weights {want} within {timeout_s:g}s; they report "
                                f"{json.dumps([last.get(a) for a in pending])[:400]}")
        if pending:
            time.sleep(poll_s)
    return confirmed


def as_dicts(instances: list[Instance]) -> list[dict]:
    return [asdict(i) for i in instances]


def from_dicts(rows: list[dict] | None) -> list[Instance]:
    return [Instance(int(r["pid"]), float(r["started_at"]), r["admin"], r.get("log", "")) for r in rows or []]
