"""Drive the real Pulumi CLI, through Pulumi's Automation API, against a throwaway copy of
the project.

Each `LocalStack` gets its own stack name, file backend, PULUMI_HOME and free ports, so
tests never touch the user's `local` stack or its Ray head. The project's code is
symlinked, so the program that runs is the repo's own. Every operation returns a `Run`
built from the engine's event stream (diagnostics, policy events, the change summary),
not from the CLI's printed text.
"""

from __future__ import annotations

import contextlib

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import yaml
from pulumi import automation as auto

from runtime import local_cluster

REPO = Path(__file__).resolve().parents[2]
POLICY_PACK = str(REPO / "policies" / "run-pack")


@dataclass(frozen=True)
class Toolchain:
    """Which Pulumi CLI (`<root>/bin/pulumi` plus its language host and launchers) and which
    venv run a stack. The default is the one `make setup` builds; the upgrade test also
    uses the release gpuserve shipped with before."""

    root: Path = REPO / ".tools"
    venv: Path = REPO / ".venv"
    # Our language host (older than the CLI) needs PULUMI_PYTHON_CMD; 3.79's own host
    # joins it onto the virtualenv's bin/ and must not get it.
    python_cmd: bool = True
    # Run the CLI under gpuserve's supervisor (scripts/build-supervisor), as `make` does.
    supervised: bool = True

    @property
    def command_root(self) -> Path:
        """What the Automation API runs: `<command_root>/bin/pulumi`."""
        return self.root / "supervised" if self.supervised else self.root

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


CURRENT = Toolchain()


def free_port_block(size: int = 210) -> int:
    """A base port such that [base, base + size) are all free on 127.0.0.1 now, below the
    kernel's ephemeral range: a port in that range may be taken by any outgoing connection
    (Ray opens many) between this check and the bind."""
    ephemeral_start = _ephemeral_range()[0]
    for _ in range(50):
        base = random.randrange(10000, max(10001, ephemeral_start - size))
        if all(_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free block of ports found")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prepare_project(root: Path, toolchain: Toolchain) -> Path:
    """A project directory under `root` whose code is the repo's own (symlinked), run on
    `toolchain`'s venv. Returns its path."""
    project = root / "project"
    (project / "stacks").mkdir(parents=True, exist_ok=True)
    for entry in ("__main__.py", "components", "runtime", "policies", "traffic", "examples"):
        target = project / entry
        if not target.exists() and (REPO / entry).exists():
            target.symlink_to(REPO / entry)
    # The policy pack's launcher finds its virtualenv at ../.venv, relative to policies/.
    venv_link = project / ".venv"
    if venv_link.is_symlink():
        venv_link.unlink()
    venv_link.symlink_to(toolchain.venv)
    pulumi_yaml = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    pulumi_yaml["runtime"]["options"]["virtualenv"] = str(toolchain.venv)
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml))
    return project


def stack_env_vars(root: Path, toolchain: Toolchain) -> dict[str, str]:
    """What the CLI needs beyond the environment: a file backend under `root`, offline
    plugins, and the toolchain's binaries and interpreter."""
    (root / "backend").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{toolchain.bin}:{toolchain.venv / 'bin'}:{os.environ['PATH']}",
        "PULUMI_BACKEND_URL": f"file://{root / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": "integration-tests",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    if toolchain.python_cmd:
        env["PULUMI_PYTHON_CMD"] = str(toolchain.python)
    return env


def config_document(ports: dict, gpus: int, services: list[dict], rollout: dict, local: dict | None = None,
                    pool: dict | None = None) -> dict:
    """A local stack's whole `config:` section; `pool` adds node pool settings (gpus_per_node)."""
    return {
        "gpuserve:target": "local",
        "gpuserve:local": {**ports, "num_cpus": 4, **(local or {})},
        "gpuserve:node_pools": [{"name": "gpu", "gpus": gpus, **(pool or {})}],
        "gpuserve:rollout": rollout,
        "gpuserve:services": services,
    }


@dataclass
class Run:
    """One Pulumi operation, as its event stream told it."""

    ok: bool
    changes: dict[str, int]  # resource operations other than "same", from the summary event
    diagnostics: list[tuple[float, str, str]]  # (monotonic arrival time, severity, message)
    policy_violations: list[auto.PolicyEvent]
    output: str  # the CLI's own text: for failure reports only, never parsed
    steps: list[tuple[str, str]] = field(default_factory=list)  # (operation, resource type) other than "same"

    @classmethod
    def from_events(cls, ok: bool, events: list[tuple[float, auto.EngineEvent]], output: str) -> "Run":
        changes: dict[str, int] = {}
        diagnostics, violations, steps = [], [], []
        for arrived, event in events:
            if event.resource_pre_event and event.resource_pre_event.metadata:
                meta = event.resource_pre_event.metadata
                op = str(meta.op.value if hasattr(meta.op, "value") else meta.op)
                if op != "same":
                    steps.append((op, meta.type))
            if event.diagnostic_event:
                diag = event.diagnostic_event
                diagnostics.append((arrived, diag.severity, diag.message.rstrip("\n")))
            if event.policy_event:
                violations.append(event.policy_event)
            if event.summary_event:
                changes = {str(op.value if hasattr(op, "value") else op): n
                           for op, n in (event.summary_event.resource_changes or {}).items() if n}
                changes.pop("same", None)
        return cls(ok, changes, diagnostics, violations, output, steps)

    @property
    def log(self) -> str:
        """Every diagnostic message (the program's errors, the providers' progress lines)."""
        return "\n".join(message for _, _, message in self.diagnostics)

    def report(self) -> str:
        return f"{self.log[-6000:]}\n--- CLI output ---\n{self.output[-3000:]}"


@dataclass
class LocalStack:
    root: Path
    gpus: int = 4
    services: list[dict] = field(default_factory=list)
    rollout: dict = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")
    toolchain: Toolchain = CURRENT
    ports: dict = field(default_factory=dict)  # chosen free on 127.0.0.1 unless given
    local: dict = field(default_factory=dict)  # more `gpuserve:local` settings
    pool: dict = field(default_factory=dict)  # more node pool settings, e.g. gpus_per_node

    def __post_init__(self) -> None:
        self.project = prepare_project(self.root, self.toolchain)
        # The head's ports, then a block per worker node (runtime/local_nodes.py).
        base = free_port_block(210 + 30 * 8 * bool(self.pool))
        self.ports = self.ports or {"http_port": base, "dashboard_port": base + 1, "gcs_port": base + 2,
                                    "public_port": base + 3, "internal_ports_start": base + 5}
        self.env_vars = stack_env_vars(self.root, self.toolchain)
        self.env = {**os.environ, **self.env_vars, "PULUMI_HOME": str(self.root / "pulumi-home")}
        self.workspace = auto.LocalWorkspace(
            work_dir=str(self.project), pulumi_home=str(self.root / "pulumi-home"), env_vars=self.env_vars,
            pulumi_command=auto.PulumiCommand(root=str(self.toolchain.command_root)))
        self.stack = auto.Stack.create_or_select(self.name, self.workspace)
        self.write_config()

    # -- config -----------------------------------------------------------------
    def config_document(self) -> dict:
        return config_document(self.ports, self.gpus, self.services, self.rollout, self.local, self.pool)

    def write_config(self) -> None:
        """Declare the whole config document (`pulumi config set-all --json`)."""
        self.stack.set_all_config_json(json.dumps({
            key: ({"value": json.dumps(value), "objectValue": value, "secret": False}
                  if isinstance(value, (dict, list)) else {"value": str(value), "secret": False})
            for key, value in self.config_document().items()
        }))

    # -- operations -------------------------------------------------------------
    def _run(self, operation: str, check: bool, on_event=None, **options) -> Run:
        """Run one operation; `on_event`, if given, also sees every engine event as it arrives."""
        events: list[tuple[float, auto.EngineEvent]] = []

        def record(event: auto.EngineEvent) -> None:
            events.append((time.monotonic(), event))
            if on_event is not None:
                on_event(event)

        try:
            result = getattr(self.stack, operation)(on_event=record, **options)
            ok, output = True, f"{result.stdout}\n{result.stderr}"
        except auto.CommandError as exc:
            ok, output = False, str(exc)
        run = Run.from_events(ok, events, output)
        if check and not ok:
            raise AssertionError(f"pulumi {operation} of {self.name} failed:\n{run.report()}")
        return run

    def up(self, check: bool = True, **options) -> Run:
        return self._run("up", check, **options)

    def preview(self, check: bool = True, **options) -> Run:
        return self._run("preview", check, **options)

    def refresh(self, check: bool = True, **options) -> Run:
        return self._run("refresh", check, **options)

    def up_killed_when(self, seen: Callable[[str], bool]) -> tuple[Run, list[int]]:
        """`up`, SIGKILLed (the engine process itself, as `kill -9` would) as soon as a
        diagnostic line matches `seen`. Returns the run and the pids of every process the
        update had started in its session (the language host, analyzers, providers) just
        before the kill; the Ray head and splitters run in sessions of their own."""
        killed: list[int] = []

        def watch(event: auto.EngineEvent) -> None:
            diag = event.diagnostic_event
            if killed or not diag or not seen(diag.message):
                return
            engine = self.engine_process()
            if engine is None:
                return
            killed.extend(p.pid for p in [engine, *engine.children(recursive=True)]
                          if _session_of(p.pid) == engine.pid)
            engine.kill()

        run = self._run("up", check=False, on_event=watch)
        assert killed, f"nothing matched before the update ended:\n{run.report()}"
        return run, killed

    def engine_process(self):
        """The Pulumi CLI process (a psutil.Process) running an operation on this stack, if any."""
        import psutil

        for process in psutil.process_iter(["cmdline"]):
            cmd = process.info["cmdline"] or []
            if cmd and cmd[0].endswith("/bin/pulumi") and "--stack" in cmd and self.name in cmd:
                return process
        return None

    def recover_if_stale(self) -> None:
        """What `make up` runs first: clear a killed update's lock and pending operations."""
        env = {**self.env, "PULUMI": str(self.toolchain.command_root / "bin" / "pulumi"),
               "PYTHON": str(self.toolchain.python)}
        subprocess.run([str(REPO / "scripts" / "recover"), "--if-stale", self.name], cwd=self.project, env=env,
                       check=True, capture_output=True, timeout=300)

    def outputs(self) -> dict:
        return {key: output.value for key, output in self.stack.outputs().items()}

    def resources(self) -> list[dict]:
        state = self.stack.export_stack().deployment or {}
        return state.get("resources") or []

    def ray_head(self) -> dict | None:
        return self.resource_outputs("LocalRayHead")

    def resource_outputs(self, type_suffix: str) -> dict | None:
        for resource in self.resources():
            if resource["type"].endswith(type_suffix):
                return resource.get("outputs")
        return None

    def ray_nodes(self) -> dict[str, dict]:
        """The cluster's live nodes by name, as Ray's state API lists them."""
        result = httpx.get(f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=true",
                           headers={"Authorization": f"Bearer {self.token()}"}, timeout=10).json()
        return {n["node_name"]: n for n in result["data"]["result"]["result"] if n["state"] == "ALIVE"}

    def splitter_instances(self) -> list:
        from runtime.splitter import from_dicts

        return from_dicts((self.resource_outputs("LocalSplitter") or {}).get("instances_live"))

    def token(self) -> str:
        return Path(self.ray_head()["token_path"]).read_text().strip()

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard_port']}"

    def endpoint(self, service: str) -> str:
        """The public URL of a service: the splitter's port (Serve's own proxy is behind it)."""
        return f"http://127.0.0.1:{self.ports.get('public_port', self.ports['http_port'])}/{service}"

    @contextlib.contextmanager
    def running(self):
        """`up`, then the caller's block, then `destroy` whatever happened: a first `up`
        that fails must not leave its Ray head and splitter behind."""
        try:
            self.up()
            yield self
        finally:
            self.destroy()

    def routing(self, service: str) -> dict:
        """The routing table the splitter serves for `service` (one instance's view)."""
        base = self.endpoint(service).rsplit("/", 1)[0]
        routes = httpx.get(f"{base}/-/gpuserve/routes", timeout=10).json()["routes"]
        route = next(r for r in routes if r["service"] == service)
        return {"service": service, "primary": route["primary"], "canary": route["canary"] or None,
                "weights": route["weights"]}

    def destroy(self) -> None:
        from runtime import local_nodes, splitter

        head = self.ray_head()
        instances = self.splitter_instances()
        nodes = (self.resource_outputs("LocalRayWorkers") or {}).get("nodes") or []
        try:
            self._run("destroy", check=True)
        finally:
            # Belt and braces: whatever happened above, leave no process of ours behind.
            for instance in instances:
                splitter.stop_instance(instance, grace_s=2)
            for node in nodes:
                local_nodes.stop_node(node)
            if head and head.get("sid"):
                local_cluster.stop({k: head[k] for k in ("pid", "sid", "started_at", "dashboard_url",
                                                          "token_path", "log_path")})
            # The head's token and log live in the repo's .state/<stack>; drop them too.
            shutil.rmtree(REPO / ".state" / self.name, ignore_errors=True)
            shutil.rmtree(local_cluster.ray_temp_dir(self.ports["gcs_port"]), ignore_errors=True)


class PrometheusServer:
    """A real Prometheus server (Debian's package, unpacked by scripts/install-prometheus)
    on a free 127.0.0.1 port, scraping `targets` (host:port of metrics pages) every
    second into `root`. Runs in a session of its own, stopped by that session's id."""

    BINARY = REPO / ".tools" / "prometheus" / "usr" / "bin" / "prometheus"
    UNAVAILABLE = REPO / ".tools" / "prometheus.unavailable"

    @classmethod
    def unavailable(cls) -> str | None:
        """Why there is no server to run here, or None."""
        if cls.BINARY.exists():
            return None
        if cls.UNAVAILABLE.exists():
            return cls.UNAVAILABLE.read_text().strip()
        return f"no {cls.BINARY}: run scripts/install-prometheus (make test does)"

    def __init__(self, root: Path, targets: list[str], scrape_s: float = 1.0):
        self.root, self.targets, self.scrape_s = root, targets, scrape_s
        self.port = free_port_block(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "PrometheusServer":
        self.root.mkdir(parents=True, exist_ok=True)
        interval = f"{int(self.scrape_s * 1000)}ms"
        (self.root / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": self.targets}]}],
        }))
        with open(self.root / "prometheus.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.BINARY), f"--config.file={self.root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"Prometheus did not become ready; see {self.root / 'prometheus.log'}")

    def __exit__(self, *exc) -> None:
        if self.process is None:
            return
        for pid in local_cluster.session_pids(self.process.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for pid in local_cluster.session_pids(self.process.pid):
                os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def query(self, promql: str) -> list:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()["data"]["result"]


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def alive_of(pids: list[int]) -> list[int]:
    """Those of `pids` still running (zombies count as gone)."""
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


# The classifier under load at two replicas, gated on real traffic with short windows: what
# the gate and fault tests roll out (each picks its bake).
CLASSIFIER_SERVICE = {"name": "clf", "pool": "gpu", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1},
                      "graceful_shutdown_timeout_s": 1, "max_ongoing_requests": 32, "max_queued_requests": 128,
                      "request_timeout_s": 10}


def gated_rollout(bake_seconds: float) -> dict:
    return {"max_surge_percent": 50, "bake_seconds": bake_seconds, "step_timeout_seconds": 120,
            "gates": {"window_seconds": 5, "min_samples": 10, "min_probes": 10,
                      "probe": {"method": "POST", "json_body": {"features": [5.9, 3.0, 4.2, 1.5]}}}}


def classifier_stack(root: Path, bake_seconds: float) -> "LocalStack":
    """A stack serving the classifier's v1 (CLASSIFIER_SERVICE), gated_rollout(bake_seconds)."""
    return LocalStack(root, gpus=4, services=[{**CLASSIFIER_SERVICE, "version": "v1"}],
                      rollout=gated_rollout(bake_seconds))


CLASSIFY = {"method": "POST", "json": {"features": [5.9, 3.0, 4.2, 1.5]}}


class Load:
    """Background clients on loopback that count every response by (status, version).
    `request` is httpx.request's keywords beyond the URL (default: a classifier call)."""

    def __init__(self, url: str, clients: int = 4, headers: dict | None = None, request: dict | None = None):
        self.url, self.clients, self.headers = url, clients, headers or {}
        self.request = request or CLASSIFY
        self.counts: Counter = Counter()
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.request(url=self.url, headers=self.headers, **self.request)
                    key = (response.status_code, response.headers.get("x-serve-version"))
                    if response.status_code != 200:
                        self._error(f"{response.status_code} {response.text[:120]}")
                except httpx.HTTPError as exc:
                    key = ("exception", type(exc).__name__)
                    self._error(repr(exc))
                with self._lock:
                    self.counts[key] += 1

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append((time.time(), text))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(n for (status, _), n in self.counts.items() if status != 200)


class GpuSampler:
    """Samples GPUs held by live Ray actors every `period_s`, from Ray's State API."""

    def __init__(self, dashboard_url: str, token: str, period_s: float = 0.25):
        self.dashboard_url, self.token, self.period_s = dashboard_url, token, period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from runtime.ray_state import gpus_in_use

        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.time(), gpus_in_use(self.dashboard_url, self.token, client)))
                except httpx.HTTPError:
                    pass
                self._stop.wait(self.period_s)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def peak(self) -> float:
        return max((g for _, g in self.samples), default=0.0)
