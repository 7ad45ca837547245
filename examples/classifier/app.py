"""The classifier: a small real model served over plain HTTP by one Serve deployment.

    POST {"features": [f1, f2, f3, f4]} -> {"label": ..., "probabilities": [...], "version": ...}
    GET                                  -> what this replica serves (a cheap health probe)

gpuserve tells every version app who it is through runtime_env env vars
(GPUSERVE_SERVICE, GPUSERVE_VERSION, GPUSERVE_ARTIFACT); the artifact path is relative to
this directory, which ships with the code. Knobs for chaos tests and the bench:
GPUSERVE_LOAD_DELAY_S (seconds the constructor sleeps, as loading large weights would),
GPUSERVE_FAULT_ERROR_RATE (share of requests that fail with a 500),
GPUSERVE_FAULT_AFTER_S (every request fails with a 500 once the replica is that old: a
late failure), GPUSERVE_FAULT_EXIT_AFTER_S (the replica process exits in the middle of a
request once it is that old; Serve restarts it, and it exits again: a crash loop) and
GPUSERVE_EXTRA_LATENCY_MS (added to every answer: a slow version).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from tiny_model import CLASSES, N_FEATURES, TinyModel


@serve.deployment(name="Model")
class Classifier:
    def __init__(self, artifact: str | None = None):
        # Weights load in the constructor: Serve marks the replica ready only after it
        # returns, so a replica never takes traffic it cannot answer.
        time.sleep(float(os.environ.get("GPUSERVE_LOAD_DELAY_S", "0")))
        self.service = os.environ.get("GPUSERVE_SERVICE", "classifier")
        self.version = os.environ.get("GPUSERVE_VERSION", "dev")
        self.model = TinyModel.load(artifact or os.environ.get("GPUSERVE_ARTIFACT") or f"models/{self.version}.npz")
        self.error_rate = float(os.environ.get("GPUSERVE_FAULT_ERROR_RATE", "0"))
        self.fail_after_s = float(os.environ.get("GPUSERVE_FAULT_AFTER_S", "inf"))
        self.exit_after_s = float(os.environ.get("GPUSERVE_FAULT_EXIT_AFTER_S", "inf"))
        self.extra_latency_s = float(os.environ.get("GPUSERVE_EXTRA_LATENCY_MS", "0")) / 1000
        self.born = time.monotonic()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.temperature = 1.0

    def reconfigure(self, user_config: dict) -> None:
        # user_config is lightweight: Serve calls this in place, with no restart. A value
        # this refuses is refused first by the stack's user_config_schema, before anything
        # moves; this check is for configs applied some other way.
        unknown = set(user_config) - {"temperature"}
        if unknown:
            raise ValueError(f"user_config: unknown keys {sorted(unknown)}; this app takes temperature")
        temperature = user_config.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 100:
            raise ValueError(f"user_config.temperature must be a number in (0, 100]; got {temperature!r}")
        self.temperature = float(temperature)

    async def __call__(self, request: Request) -> JSONResponse:
        if self.extra_latency_s:
            await asyncio.sleep(self.extra_latency_s)
        if time.monotonic() - self.born > self.exit_after_s:
            os._exit(1)  # a crash, not an exception: no answer, the process is gone
        if time.monotonic() - self.born > self.fail_after_s:
            return JSONResponse({"error": "injected late fault", "version": self.version}, status_code=500)
        if self.error_rate and random.random() < self.error_rate:
            return JSONResponse({"error": "injected fault", "version": self.version}, status_code=500)
        if request.method == "GET":
            return JSONResponse({"service": self.service, "version": self.version, "classes": list(CLASSES),
                                 "features": N_FEATURES})
        body = None
        try:
            body = await request.json()
            features = [float(x) for x in body["features"]]
            result = self.model.predict(features, self.temperature)
        except (ValueError, KeyError, TypeError) as exc:
            # The client's fault: one line, never a traceback.
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, KeyError) or (body is not None and not isinstance(body, dict)):
                message = 'body must be JSON {"features": [4 numbers]}'
            return JSONResponse({"error": message[:200]}, status_code=400)
        return JSONResponse({"service": self.service, "version": self.version, "replica": self.replica, **result})


app = Classifier.bind()


def build(args: dict | None = None) -> serve.Application:
    """A builder, for a Serve config that passes `args: {artifact: ...}`."""
    return Classifier.bind((args or {}).get("artifact"))
