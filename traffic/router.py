"""The Router app: owns a service's route prefix and splits requests between version
apps by weight. Weights arrive through `user_config`, which Serve applies with
`reconfigure()` and no replica restart, so shifting traffic is a lightweight update.

user_config: {"primary": "v1", "canary": "v2" | null, "weights": {"v1": 90, "v2": 10},
              "request_timeout_s": 30}

Clients may pin a request with header `x-serve-version: primary|canary|<version>`.
POST {"features": [f1, f2, f3, f4]} -> {"version": ..., "label": ..., ...}
GET                                  -> the current routing table (a health probe).
"""

from __future__ import annotations

import asyncio
import random

from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request
from starlette.responses import JSONResponse

from traffic.protocol import ROUTER_DEPLOYMENT, VERSION_HEADER, version_app_name


@serve.deployment(name=ROUTER_DEPLOYMENT)
class Router:
    def __init__(self, service: str):
        self.service = service
        self.request_timeout_s = 30.0
        self.primary: str | None = None
        self.canary: str | None = None
        self.weights: dict[str, float] = {}
        self.handles: dict[str, object] = {}

    def reconfigure(self, config: dict) -> None:
        self.primary = config.get("primary")
        self.canary = config.get("canary")
        self.weights = {v: float(w) for v, w in config.get("weights", {}).items() if float(w) > 0}
        self.request_timeout_s = float(config.get("request_timeout_s", self.request_timeout_s))

    def _choose(self, pinned: str | None) -> str | None:
        if pinned == "primary":
            return self.primary
        if pinned == "canary":
            return self.canary
        if pinned:
            return pinned if pinned in (self.primary, self.canary) else None
        if not self.weights:
            return self.primary
        versions = list(self.weights)
        return random.choices(versions, weights=[self.weights[v] for v in versions])[0]

    def _handle(self, version: str):
        if version not in self.handles:
            self.handles[version] = serve.get_app_handle(version_app_name(self.service, version))
        return self.handles[version]

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(
                {"service": self.service, "primary": self.primary,
                 "canary": self.canary, "weights": self.weights}
            )
        pinned = request.headers.get(VERSION_HEADER)
        version = self._choose(pinned)
        if version is None:
            return JSONResponse(
                {"error": f"no version of {self.service} matches {VERSION_HEADER}: {pinned}"},
                status_code=404,
            )
        try:
            body = await request.json()
            features = body["features"]
        except Exception:
            return JSONResponse({"error": 'body must be JSON {"features": [4 floats]}'}, 400)
        try:
            result = await asyncio.wait_for(
                self._handle(version).predict.remote(features), self.request_timeout_s
            )
        except BackPressureError:
            # The version's queue (max_queued_requests) is full: shed load, do not hang.
            return JSONResponse({"error": "overloaded", "version": version}, 503,
                                headers={VERSION_HEADER: version})
        except asyncio.TimeoutError:
            return JSONResponse({"error": "timeout", "version": version}, 504,
                                headers={VERSION_HEADER: version})
        except ValueError as exc:  # the version refused the input: the client's fault
            return JSONResponse({"error": _one_line(exc), "version": version}, 400,
                                headers={VERSION_HEADER: version})
        except Exception as exc:  # a replica error is the version's fault, not the client's
            return JSONResponse({"error": type(exc).__name__, "version": version}, 500,
                                headers={VERSION_HEADER: version})
        return JSONResponse(result, headers={VERSION_HEADER: version})


def _one_line(exc: Exception) -> str:
    """The version's own message, one line. Ray wraps a replica's exception in a text with
    the replica's pid, IP address, actor id and frames: none of that reaches a client."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError keeps the original here
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:200]


def build(args: dict) -> serve.Application:
    return Router.bind(args["service"])
