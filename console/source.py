"""Where the console reads from: the stack's state through Pulumi's Automation API (what
the last `up` recorded: each service's spec, its rollout steps, how to reach the cluster)
and the live cluster itself (what serves now), never one for the other."""

from __future__ import annotations

import json
import os
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

REPO = Path(__file__).resolve().parents[1]
LOCAL_PASSPHRASE = "gpuserve-local-stack"  # the Makefile's, for local-target stacks


class ConsoleError(Exception):
    """What the operator should read instead of a traceback."""


@dataclass(frozen=True)
class Rollout:
    """One service's ModelRollout, as the stack's state holds it."""

    service: str
    spec: dict
    history: list[dict]
    dashboard_url: str
    token: str | None
    token_path: str | None
    kubeconfig: str | None
    rollouts: list[dict] = field(default_factory=list)  # past rollouts, as state keeps them
    props: dict = field(default_factory=dict)  # every output, for a provider session
    urn: str = ""


class Source(Protocol):
    def rollouts(self) -> list[Rollout]: ...

    def live(self, rollout: Rollout) -> tuple[Any, float | None]:
        """(LiveService, GPUs its replicas hold) from the cluster now."""
        ...

    def session(self, rollout: Rollout) -> contextlib.AbstractContextManager:
        """(RolloutController, ServeClient) on the service's cluster, as a provider has them."""
        ...

    def refresh(self, rollout: Rollout) -> None:
        """`pulumi refresh` of the service's ModelRollout: state learns what the console did."""
        ...

    def run_record(self, rollout: Rollout, rollout_id: int) -> dict | None:
        """A rollout's full record (runtime/record.write_run), where this machine keeps it."""
        ...

    def samples(self, rollout: Rollout, since_ms: int) -> list[dict]:
        """The splitter's answers for the service since `since_ms` (none where its admin
        sockets are not on this machine)."""
        ...


def plain(value: Any) -> Any:
    """A value of `pulumi stack export --show-secrets`, secrets unwrapped."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def rollouts_of(deployment: dict) -> list[Rollout]:
    """PURE. The ModelRollout resources of an exported deployment."""
    found = []
    for resource in deployment.get("resources") or []:
        if not str(resource.get("type", "")).endswith(":ModelRollout"):
            continue
        out = {k: plain(v) for k, v in (resource.get("outputs") or {}).items()}
        spec = out.get("spec") or {}
        found.append(Rollout(service=spec.get("service") or resource["urn"].rsplit("::", 1)[-1], spec=spec,
                             history=out.get("history") or [], dashboard_url=out.get("dashboard_url") or "",
                             token=out.get("token"), token_path=out.get("token_path"),
                             kubeconfig=out.get("kubeconfig"), rollouts=out.get("rollouts") or [],
                             props=out, urn=resource["urn"]))
    return sorted(found, key=lambda r: r.service)


class StackSource:
    """A stack of this repo (`stacks/Pulumi.<stack>.yaml`), read as `make` runs it."""

    def __init__(self, stack: str, repo: Path | None = None):
        # GPUSERVE_PROJECT: another checkout's stacks (the tests' own projects, say).
        self.stack, self.repo = stack, Path(repo or os.environ.get("GPUSERVE_PROJECT") or REPO)
        self._deployment: dict | None = None
        self._samples: dict[tuple, Any] = {}  # (service, admins) -> runtime.analysis.SampleSource

    def _workspace(self):
        from pulumi import automation as auto

        from components.config_file import read_stack_file

        state = self.repo / ".state"
        path = self.repo / "stacks" / f"Pulumi.{self.stack}.yaml"
        if not path.is_file():
            raise ConsoleError(f"no stack file {path.relative_to(self.repo)}: name a stack of stacks/ with --stack")
        env = {"PULUMI_BACKEND_URL": os.environ.get("PULUMI_BACKEND_URL", f"file://{state / 'backend'}"),
               "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
        _, document = read_stack_file(path)
        local = ((document.get("config") or {}).get("gpuserve:target") or "local") == "local"
        if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and local:
            env["PULUMI_CONFIG_PASSPHRASE"] = LOCAL_PASSPHRASE
        if not local:
            # A cluster stack's refresh needs the Kubernetes provider (make k8s-provider).
            env["PATH"] = f"{self.repo / '.tools' / 'k8s' / 'provider'}:{os.environ.get('PATH', '')}"
        command = self.repo / ".tools"
        return auto.LocalWorkspace(
            work_dir=str(self.repo), pulumi_home=os.environ.get("PULUMI_HOME", str(state / "pulumi-home")),
            env_vars=env, pulumi_command=auto.PulumiCommand(root=str(command)) if command.is_dir() else None)

    def deployment(self) -> dict:
        if self._deployment is None:
            from pulumi import automation as auto

            try:
                self._deployment = self._workspace().export_stack(self.stack).deployment or {}
            except auto.CommandError as exc:
                raise ConsoleError(f"cannot read stack {self.stack}'s state: {str(exc).strip()[-400:]} "
                                   f"(has `make up STACK={self.stack}` run?)") from None
        return self._deployment

    def rollouts(self) -> list[Rollout]:
        return rollouts_of(self.deployment())

    @contextlib.contextmanager
    def session(self, rollout: Rollout) -> Iterator[tuple[Any, Any]]:
        import httpx

        from components.rollout import _session
        from runtime.k8s_forward import ForwardError
        from runtime.serve_api import ServeApiError

        try:
            with _session(rollout.props) as (controller, client):
                yield controller, client
        except (httpx.HTTPError, ServeApiError, ForwardError, OSError) as exc:
            raise ConsoleError(f"{rollout.service}: the cluster at {rollout.dashboard_url} does not answer "
                               f"({type(exc).__name__}: {exc})") from None

    def run_record(self, rollout: Rollout, rollout_id: int) -> dict | None:
        from runtime.record import read_run

        folder = rollout.props.get("record_dir")
        return read_run(Path(folder) / rollout.service / f"{rollout_id}.json") if folder else None

    def samples(self, rollout: Rollout, since_ms: int) -> list[dict]:
        """The splitter instances' answers for the service; `watch` and the metrics page ask
        every few seconds, so each service keeps one incremental reader."""
        from runtime.analysis import SampleSource

        admins = tuple(rollout.props.get("splitter_admins") or [])
        key = (rollout.service, admins)
        if key not in self._samples:
            self._samples[key] = SampleSource(list(admins), rollout.service)
        return self._samples[key](since_ms)

    def refresh(self, rollout: Rollout) -> None:
        from pulumi import automation as auto

        try:
            auto.Stack.select(self.stack, self._workspace()).refresh(target=[rollout.urn])
        except auto.CommandError as exc:
            raise ConsoleError(f"the command took effect, but `pulumi refresh` of {rollout.service} failed "
                               f"({str(exc).strip()[-300:]}); run `make refresh STACK={self.stack}`") from None
        self._deployment = None

    def live(self, rollout: Rollout) -> tuple[Any, float | None]:
        import httpx

        from runtime.k8s_forward import ForwardError, dashboard
        from runtime.live import observe
        from runtime.ray_state import gpus_in_use
        from runtime.serve_api import ServeApiError, ServeClient

        try:
            token = rollout.token or Path(rollout.token_path or "").read_text().strip()
        except OSError as exc:
            raise ConsoleError(f"{rollout.service}: the cluster's token is gone ({exc}): is the stack up?") from None
        try:
            with dashboard(rollout.dashboard_url, rollout.kubeconfig) as url, ServeClient(url, token) as client:
                live = observe(client.state(), rollout.service)
                gpus = gpus_in_use(url, token, client.http, app=rollout.service)
        except (httpx.HTTPError, ServeApiError, ForwardError) as exc:
            raise ConsoleError(f"{rollout.service}: the cluster at {rollout.dashboard_url} does not answer "
                               f"({type(exc).__name__}: {exc})") from None
        return live, gpus
