"""InferenceLoadBalancer: the HTTP entry point of a serving runtime and its health check.

local: the Serve HTTP proxy itself (it listens on 127.0.0.1 and health-checks at
       `/-/healthz`), so nothing extra is created; the component names the endpoints.
aws:   a Service of type LoadBalancer with AWS Load Balancer Controller annotations.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.serving_runtime import ServingRuntime

HEALTH_PATH = "/-/healthz"


@dataclass(frozen=True)
class InferenceLoadBalancerArgs:
    runtime: ServingRuntime


class InferenceLoadBalancer(pulumi.ComponentResource):
    url: pulumi.Output[str]
    health_check_url: pulumi.Output[str]

    def __init__(self, name: str, args: InferenceLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:load_balancer:InferenceLoadBalancer", name, None, opts)
        self.url = args.runtime.http_url
        self.health_check_url = args.runtime.http_url.apply(lambda url: f"{url}{HEALTH_PATH}")
        self.register_outputs({"url": self.url, "health_check_url": self.health_check_url})

    def endpoint(self, route_prefix: str) -> pulumi.Output[str]:
        return self.url.apply(lambda url: f"{url}{route_prefix}")
