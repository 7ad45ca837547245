"""Drive the real Pulumi CLI against a throwaway copy of the project.

Each `LocalStack` gets its own stack name, file backend, PULUMI_HOME and free ports, so
tests never touch the user's `local` stack or its Ray head. The project's code is
symlinked, so the program that runs is the repo's own.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from runtime import local_cluster

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "bin"
VENV = REPO / ".venv"


def free_port_block(size: int = 210) -> int:
    """A base port such that [base, base + size) are all free on 127.0.0.1 now."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - size)
        if all(_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free block of ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class LocalStack:
    root: Path
    gpus: int = 4
    services: list[dict] = field(default_factory=list)
    rollout: dict = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.project = self.root / "project"
        (self.project / "stacks").mkdir(parents=True, exist_ok=True)
        for entry in ("__main__.py", "components", "runtime", "policies"):
            target = self.project / entry
            if not target.exists() and (REPO / entry).exists():
                target.symlink_to(REPO / entry)
        # The policy pack finds its virtualenv at ../.venv, relative to policies/.
        if not (self.project / ".venv").exists():
            (self.project / ".venv").symlink_to(VENV)
        pulumi_yaml = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
        pulumi_yaml["runtime"]["options"]["virtualenv"] = str(VENV)
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml))
        base = free_port_block()
        self.ports = {"http_port": base, "dashboard_port": base + 1, "gcs_port": base + 2,
                      "internal_ports_start": base + 5}
        self.env = {
            **os.environ,
            "PATH": f"{TOOLS}:{VENV / 'bin'}:{os.environ['PATH']}",
            "PULUMI_HOME": str(self.root / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{self.root / 'backend'}",
            "PULUMI_CONFIG_PASSPHRASE": "integration-tests",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        }
        (self.root / "backend").mkdir(exist_ok=True)
        self.write_config()
        self.pulumi("stack", "init", self.name)

    # -- config -----------------------------------------------------------------
    def config_document(self) -> dict:
        return {
            "gpuserve:target": "local",
            "gpuserve:local": {**self.ports, "num_cpus": 4},
            "gpuserve:node_pools": [{"name": "gpu", "gpus": self.gpus}],
            "gpuserve:rollout": self.rollout,
            "gpuserve:services": self.services,
        }

    def write_config(self) -> None:
        path = self.project / "stacks" / f"Pulumi.{self.name}.yaml"
        existing = yaml.safe_load(path.read_text()) if path.exists() else {}
        existing = existing or {}
        existing["config"] = self.config_document()
        path.write_text(yaml.safe_dump(existing, sort_keys=False))

    # -- CLI --------------------------------------------------------------------
    def pulumi(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(TOOLS / "pulumi"), *args, "--stack", self.name, "--non-interactive"]
            if args[:2] != ("stack", "init") else [str(TOOLS / "pulumi"), *args, "--non-interactive"],
            cwd=self.project, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(TOOLS / "pulumi"), *args, "--stack", self.name, "--non-interactive"],
            cwd=self.project, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def up(self, check: bool = True) -> subprocess.CompletedProcess:
        return self.pulumi("up", "--yes", "--skip-preview", check=check)

    def outputs(self) -> dict:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets").stdout)

    def resources(self) -> list[dict]:
        state = json.loads(self.pulumi("stack", "export").stdout)
        return (state.get("deployment") or {}).get("resources") or []

    def ray_head(self) -> dict | None:
        for resource in self.resources():
            if resource["type"].endswith("LocalRayHead"):
                return resource.get("outputs")
        return None

    def token(self) -> str:
        return Path(self.ray_head()["token_path"]).read_text().strip()

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard_port']}"

    def endpoint(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports['http_port']}/{service}"

    def destroy(self) -> None:
        head = self.ray_head()
        try:
            self.pulumi("destroy", "--yes", "--skip-preview")
        finally:
            # Belt and braces: whatever happened above, leave no process of ours behind.
            if head and head.get("sid"):
                local_cluster.stop({k: head[k] for k in ("pid", "sid", "started_at", "dashboard_url",
                                                          "token_path", "log_path")})
            # The head's token and log live in the repo's .state/<stack>; drop them too.
            shutil.rmtree(REPO / ".state" / self.name, ignore_errors=True)
            shutil.rmtree(local_cluster.ray_temp_dir(self.ports["gcs_port"]), ignore_errors=True)


class Load:
    """Background clients on loopback that count every response by (status, version)."""

    def __init__(self, url: str, clients: int = 4, headers: dict | None = None):
        self.url, self.clients, self.headers = url, clients, headers or {}
        self.counts: Counter = Counter()
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json={"features": [5.9, 3.0, 4.2, 1.5]}, headers=self.headers)
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
