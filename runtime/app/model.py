"""gpuserve 0.1.0's version app, kept so that Serve can restart replicas of versions
deployed by 0.1.0 (they name this import path). New versions ship their own code
(examples/classifier for the classifier).

The version app: one Serve application per (service, version), named
`<service>--<version>`, with no route prefix. Only the Router calls it.

Build it from a Serve config with `import_path: runtime.app.model:build` and
`args: {service, version, artifact}`.

Two environment knobs exist for chaos testing and benchmarks, and are set through the
version's `runtime_env.env_vars` (a heavyweight change, so they arrive by rollout):
- GPUSERVE_LOAD_DELAY_S: seconds the constructor sleeps, as loading large weights would;
- GPUSERVE_FAULT_ERROR_RATE: share of requests (0..1) that raise, to exercise gates.
"""

from __future__ import annotations

import os
import random
import time

from ray import serve

from runtime.app.legacy import TinyModel


class InjectedFault(RuntimeError):
    """Raised for the share of requests set by GPUSERVE_FAULT_ERROR_RATE."""


@serve.deployment(name="Model")
class Model:
    def __init__(self, service: str, version: str, artifact: str):
        # Weights load in the constructor: Serve marks the replica ready only after it
        # returns, so a replica never takes traffic it cannot answer.
        time.sleep(float(os.environ.get("GPUSERVE_LOAD_DELAY_S", "0")))
        self.model = TinyModel.load(artifact)
        self.service = service
        self.version = version
        self.error_rate = float(os.environ.get("GPUSERVE_FAULT_ERROR_RATE", "0"))
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.temperature = 1.0

    def reconfigure(self, user_config: dict) -> None:
        # user_config is lightweight: Serve calls this in place, with no restart.
        temperature = user_config.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"user_config.temperature must be a number > 0; got {temperature!r}")
        self.temperature = float(temperature)

    async def predict(self, features: list[float]) -> dict:
        if self.error_rate and random.random() < self.error_rate:
            raise InjectedFault(f"{self.service} {self.version}: injected fault")
        return {
            "service": self.service,
            "version": self.version,
            "replica": self.replica,
            **self.model.predict(features, self.temperature),
        }


    async def __call__(self, request) -> dict:
        # Direct HTTP, for a version app deployed with its own route prefix (the
        # benchmark's Ray-Serve-native peer); gpuserve itself routes through the Router.
        body = await request.json()
        return await self.predict(body["features"])


def build(args: dict) -> serve.Application:
    return Model.bind(args["service"], args["version"], args["artifact"])
