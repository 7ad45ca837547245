"""The routing record: one Serve app per service, named after it, with no route prefix and
no traffic. Its Router deployment holds the service's routing table in user_config:

    {"primary": "v1", "canary": "v2" | null, "weights": {"v1": 90, "v2": 10},
     "route_prefix": "/llm", "request_timeout_s": 30, "max_body_bytes": 10485760,
     "rollout_started_at": ..., "latency_baseline_ms": ...}

The splitter (splitter/, Go) reads it from Serve's REST API and serves the route prefix;
the controller writes it. Keeping it in Serve makes Serve's declarative config the one
source of truth, which survives a crash of `pulumi up` and is readable by anyone.
Serve applies user_config with `reconfigure()`, no restart.

Shipped to the cluster as a content-addressed py_module (runtime/packaging.py), like a
service's own code: nothing needs gpuserve installed on the Ray nodes.
"""

from __future__ import annotations

from ray import serve

from traffic.protocol import ROUTER_DEPLOYMENT


@serve.deployment(name=ROUTER_DEPLOYMENT)
class RoutingRecord:
    def __init__(self) -> None:
        self.table: dict = {}

    def reconfigure(self, config: dict) -> None:
        self.table = dict(config)

    def __call__(self, *_args) -> dict:
        return self.table


app = RoutingRecord.bind()


def build(_args: dict | None = None) -> serve.Application:
    return RoutingRecord.bind()
