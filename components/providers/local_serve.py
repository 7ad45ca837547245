"""LocalServe: makes sure Ray Serve runs on the local head with its HTTP proxy bound to
127.0.0.1:<http_port>. Applications are not its business: ModelRollout writes those.

delete shuts Serve down (DELETE /api/serve/applications/) if the head still answers.
"""

from __future__ import annotations

import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from components.providers.watchdog import arm

from runtime.constants import HEALTH_PATH


def _client(props: dict):
    from pathlib import Path

    from runtime.serve_api import ServeClient

    return ServeClient(props["dashboard_url"], Path(props["token_path"]).read_text().strip())


def _proxy_healthy(http_url: str) -> bool:
    """The proxy answers. Before any app exists it says 503 "Route table is not
    populated yet", which still proves it listens; apps then turn it to 200."""
    import httpx

    try:
        response = httpx.get(f"{http_url}{HEALTH_PATH}", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 or "not populated" in response.text



class LocalServeProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        arm()
        from runtime.errors import ServeApiError

        port = int(props["http_port"])  # numbers arrive as floats over Pulumi's wire
        http_options = {"host": "127.0.0.1", "port": port}
        with _client(props) as client:
            # Serve starts on the first PUT; an empty change keeps any existing apps.
            # One proxy, on the head: every local node shares 127.0.0.1, where a proxy per
            # node (Serve's default) would fight over the port.
            client.update_apps(lambda current: current, http_options=http_options, proxy_location="HeadOnly")
            state = client.state()
        live_port = state.http_options.get("port")
        if live_port and int(live_port) != port:
            raise ServeApiError(
                f"Serve on {props['dashboard_url']} already listens on port {live_port}, not "
                f"{port}; Serve cannot move its proxy while running. Set "
                f"gpuserve:local.http_port to {live_port}, or destroy the stack and run up again."
            )
        http_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _proxy_healthy(http_url):
            if time.monotonic() > deadline:
                raise ServeApiError(f"Serve HTTP proxy at {http_url} not healthy within 60s")
            time.sleep(0.5)
        print(f"Ray Serve running; HTTP proxy {http_url}", flush=True)
        return CreateResult(id_=f"serve-{port}", outs={**props, "http_url": http_url, "healthy": True})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        arm()
        # A key missing from older state (None) is adopted, not treated as a change.
        changed = [k for k in ("dashboard_url", "token_path", "http_port", "cluster_id")
                   if olds.get(k) is not None and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm()
        return ReadResult(id_, {**props, "healthy": _proxy_healthy(props["http_url"])})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm()
        try:
            with _client(props) as client:
                client.shutdown()
        except Exception as exc:  # noqa: BLE001 - any failure here means Serve is gone
            # The head is gone already (or its token with it): nothing left to shut down.
            print(f"Serve on {props['dashboard_url']} not reachable, nothing to shut down: {exc}", flush=True)


class LocalServe(Resource, module="gpuserve", name="LocalServe"):
    http_url: pulumi.Output[str]
    healthy: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(LocalServeProvider(), name, {**props, "http_url": None, "healthy": None}, opts)
