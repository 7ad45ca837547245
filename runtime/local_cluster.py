"""Start, probe and stop a single-node Ray head on 127.0.0.1 with virtual GPUs.

The head runs `ray start --head --block` in a session of its own (setsid), so every Ray
process it spawns shares that session id. Stopping kills exactly that session, never
every Ray process of the user as the Ray CLI's own stop command would.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TypeVar

import httpx
import psutil

from runtime.errors import LocalClusterError
from runtime.constants import PROJECT_DIR
from runtime.environment import child_environment
from runtime.ray_start import LOOPBACK_ENV

T = TypeVar("T")



@dataclass(frozen=True)
class LocalClusterSpec:
    name: str
    gpus: int
    num_cpus: int
    gcs_port: int
    dashboard_port: int
    internal_ports_start: int
    state_dir: str  # holds the token, the log and Ray's temp dir
    metrics_report_interval_ms: int | None = None  # Ray's default (10 s) when None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


@dataclass(frozen=True)
class LocalClusterHandle:
    """What create() records and delete() needs: the session that owns every process."""

    pid: int
    sid: int
    started_at: float
    dashboard_url: str
    token_path: str
    log_path: str
    # The head process's start time (psutil): with the pid, its identity. A recycled pid
    # has another start time. None in state written before it was recorded.
    create_time: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# Ray's own words when a raylet did not register with the GCS within its fixed 30 s
# (ray/_private/node.py): on a loaded 2-core machine a transient, so worth one more try.
STARTUP_TIMEOUT = "timed out during startup"


def with_one_more_try(start_once: Callable[[], T], name: str, attempts: int = 2) -> T:
    """`start_once()`, again if it failed only because its raylet registered too slowly
    (its compensation stopped what it started, so nothing is left behind); any other
    failure is final."""
    for attempt in range(1, attempts + 1):
        try:
            return start_once()
        except LocalClusterError as exc:
            if STARTUP_TIMEOUT not in str(exc) or attempt == attempts:
                raise
            print(f"{name} timed out registering with the GCS (attempt {attempt} of {attempts}); "
                  "starting it again", flush=True)
    raise AssertionError("unreachable")


def start(spec: LocalClusterSpec, ready_timeout_s: float = 90.0) -> LocalClusterHandle:
    """Start the head and wait until its dashboard answers."""
    return with_one_more_try(lambda: _start_once(spec, ready_timeout_s), f"Ray head '{spec.name}'")


def _start_once(spec: LocalClusterSpec, ready_timeout_s: float) -> LocalClusterHandle:
    state = Path(spec.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    token_path = state / "auth_token"
    if not token_path.exists():
        token_path.write_text(secrets.token_hex(32))
        token_path.chmod(0o600)
    log_path = state / "ray-head.log"
    # Unix socket paths must stay under ~107 bytes, so Ray's temp dir is short.
    temp_dir = ray_temp_dir(spec.gcs_port)
    p = spec.internal_ports_start
    command = [
        *ray_start_command(), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={spec.gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={spec.dashboard_port}",
        f"--num-gpus={spec.gpus}",
        f"--num-cpus={spec.num_cpus}",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={p}",
        f"--node-manager-port={p + 1}",
        f"--object-manager-port={p + 2}",
        f"--metrics-export-port={metrics_port(p)}",
        f"--dashboard-agent-listen-port={p + 4}",
        f"--dashboard-agent-grpc-port={p + 5}",
        f"--runtime-env-agent-port={p + 6}",
        f"--min-worker-port={p + 10}",
        f"--max-worker-port={p + 199}",
    ]
    # Only an allowlist of the operator's environment (runtime/environment.py): replicas
    # run user code, and `pulumi up` holds passphrases and credentials.
    env = child_environment(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        **LOOPBACK_ENV,
        # The dashboard's and the autoscaler monitor's own metrics pages: Ray's fixed
        # defaults (44227, 44217) collide between two clusters on one machine.
        DASHBOARD_METRIC_PORT=str(p + 7),
        AUTOSCALER_METRIC_PORT=str(p + 8),
        **({"RAY_metrics_report_interval_ms": str(spec.metrics_report_interval_ms)}
           if spec.metrics_report_interval_ms else {}),
        # Workers import the project's shipped modules (traffic/, the 0.1 runtime.app).
        PYTHONPATH=str(PROJECT_DIR),
    )
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=PROJECT_DIR, start_new_session=True,
        )
    handle = LocalClusterHandle(
        pid=process.pid, sid=process.pid, started_at=time.time(), create_time=psutil.Process(process.pid).create_time(),
        dashboard_url=spec.dashboard_url, token_path=str(token_path), log_path=str(log_path),
    )
    return wait_started(
        process, lambda: handle if dashboard_ready(handle) else None, ready_timeout_s, lambda: stop(handle),
        died=lambda code: (f"Ray head '{spec.name}' exited with code {code} while starting: {last_words(log_path)} "
                           f"(see {log_path}; a port in use? change gpuserve:local ports)"),
        late=f"Ray head '{spec.name}' did not answer on {spec.dashboard_url} within {ready_timeout_s:.0f}s; "
             f"see {log_path}")


def wait_started(process: subprocess.Popen, ready: Callable[[], T | None], timeout_s: float,
                 compensate: Callable[[], object], died: Callable[[int], str], late: str) -> T:
    """Poll `ready` until it returns something. If the process exits first, or the time
    runs out, `compensate` (stop what was started) and raise with `died(code)` or `late`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            compensate()
            raise LocalClusterError(died(process.returncode))
        result = ready()
        if result is not None:
            return result
        time.sleep(0.5)
    compensate()
    raise LocalClusterError(late)


def last_words(log_path: Path, limit: int = 400) -> str:
    """What a `ray start` that died said last: its error lines, else its last line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace")[-8000:].splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if any(w in line for w in ("Error", "error", "Exception", "abort", "Failed"))]
    return (" | ".join(errors[-2:]) or (lines[-1] if lines else "empty log"))[-limit:]


def ray_start_command() -> list[str]:
    """`ray start` with the node address kept on loopback (runtime/ray_start.py)."""
    return [sys.executable, "-m", "runtime.ray_start"]


def metrics_port(internal_ports_start: int) -> int:
    """The node's metrics page (Ray's and Serve's), one of the head's internal ports."""
    return internal_ports_start + 3


def ray_temp_dir(gcs_port: int) -> Path:
    return Path("/tmp") / f"gpuserve-{gcs_port}"


def token(handle: LocalClusterHandle | dict) -> str:
    path = handle["token_path"] if isinstance(handle, dict) else handle.token_path
    return Path(path).read_text().strip()


def dashboard_ready(handle: LocalClusterHandle) -> bool:
    try:
        response = httpx.get(
            f"{handle.dashboard_url}/api/serve/applications/",
            headers={"Authorization": f"Bearer {token(handle)}"},
            timeout=2.0,
        )
    except (httpx.HTTPError, OSError):
        return False
    return response.status_code == 200


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 6 is the session id; the command name (field 2) may contain spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def alive(handle: LocalClusterHandle | dict) -> bool:
    """Whether the head still runs: judged by its identity (the `ray start` process, with
    its start time when recorded, in its own session), never by how fast the dashboard
    answers. A slow or failing dashboard is a reason to retry, not to replace the head
    and every service on it."""
    h = handle if isinstance(handle, LocalClusterHandle) else LocalClusterHandle(**handle)
    if h.pid not in session_pids(h.sid):
        return False
    try:
        process = psutil.Process(h.pid)
        if h.create_time is not None:
            return abs(process.create_time() - h.create_time) < 1.0
        return any("ray" in part for part in process.cmdline()[:3])
    except psutil.Error:
        return False


def stop(handle: LocalClusterHandle | dict, grace_s: float = 15.0) -> int:
    """Stop the head's session: SIGTERM to `ray start` (it tears its children down),
    then SIGTERM to the rest of the session, then SIGKILL what is left. Returns the
    number of processes that were alive."""
    h = handle if isinstance(handle, LocalClusterHandle) else LocalClusterHandle(**handle)
    initial = session_pids(h.sid)
    if not initial:
        return 0
    _signal(h.pid, signal.SIGTERM)
    _wait_gone(h.sid, grace_s / 2)
    for pid in session_pids(h.sid):
        _signal(pid, signal.SIGTERM)
    if not _wait_gone(h.sid, grace_s / 2):
        for pid in session_pids(h.sid):
            _signal(pid, signal.SIGKILL)
        if not _wait_gone(h.sid, 5.0):
            raise LocalClusterError(
                f"processes of Ray session {h.sid} survived SIGKILL: {session_pids(h.sid)}"
            )
    return len(initial)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(sid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not session_pids(sid):
            return True
        time.sleep(0.2)
    return not session_pids(sid)
