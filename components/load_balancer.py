"""InferenceLoadBalancer: the HTTP entry point of a serving runtime and its health check.

local: the splitter (splitter/, Go): `local.splitter_instances` processes sharing
       127.0.0.1:<public_port>, in front of the Serve proxy; health check `/-/healthz`.
kubernetes: the splitter as a Deployment (`splitter_replicas` pods, a PodDisruptionBudget,
       the Serve proxies of every Ray node as its upstream) behind a Service of type
       LoadBalancer (the cluster's own; annotations, class and source ranges from the
       stack) or ClusterIP. Public only when declared, and then only to its allowlist.
aws:   the same Deployment (`aws.splitter_replicas` pods, a PodDisruptionBudget,
       behind a Service of type LoadBalancer reconciled by the AWS Load Balancer
       Controller into an NLB: internal unless
       `public_load_balancer: true`, health-checked on `/-/healthz`, cross-zone, TLS when
       a certificate ARN is given. The Ray dashboard is never behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.config import AwsTarget, ClusterSettings, KubernetesTarget, LocalCluster
from components.serving_runtime import ServingRuntime
from runtime.constants import HEALTH_PATH


@dataclass(frozen=True)
class InferenceLoadBalancerArgs:
    runtime: ServingRuntime
    cluster: ClusterSettings | None = None  # set for the kubernetes and aws targets
    k8s_provider: Any = None
    local: LocalCluster | None = None  # set for the local target
    state_dir: str | None = None  # local: where the splitter keeps sockets and logs


class InferenceLoadBalancer(pulumi.ComponentResource):
    url: pulumi.Output[str]
    health_check_url: pulumi.Output[str]
    # Admin sockets of the local splitter instances ([] elsewhere).
    splitter_admins: pulumi.Output[list]

    def __init__(self, name: str, args: InferenceLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpuserve:load_balancer:InferenceLoadBalancer", name, None, opts)
        if args.cluster is None:
            self.url, self.splitter_admins = self._splitter(name, args)
        else:
            self.url = self._in_cluster(name, args)
            self.splitter_admins = pulumi.Output.from_input([])
        self.health_check_url = self.url.apply(lambda url: f"{url}{HEALTH_PATH}")
        self.register_outputs({"url": self.url, "health_check_url": self.health_check_url})

    def _splitter(self, name: str, args: InferenceLoadBalancerArgs):
        from components.providers.local_splitter import LocalSplitter
        from runtime.errors import LocalClusterError
        from runtime.splitter import binary_sha

        local = args.local or LocalCluster()
        try:
            build = binary_sha()
        except LocalClusterError as exc:
            raise pulumi.RunError(str(exc)) from None
        splitter = LocalSplitter(
            f"{name}-splitter",
            {
                "listen": f"127.0.0.1:{local.public_port}",
                "upstream": args.runtime.http_url,
                "serve_api": args.runtime.dashboard_url,
                "token_path": args.runtime.token_path,
                "state_dir": args.state_dir,
                "instances": local.splitter_instances,
                "max_body_bytes": 10 << 20,
                "max_header_bytes": local.max_header_bytes,
                "binary_sha": build,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.runtime]),
        )
        return splitter.url, splitter.admins

    def _in_cluster(self, name: str, args: InferenceLoadBalancerArgs) -> pulumi.Output[str]:
        import pulumi_kubernetes as k8s

        from components.aws import render as aws_render
        from components.kubernetes import render

        cluster, settings = args.runtime.cluster_name, args.cluster
        ns = settings.namespace
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[args.runtime])
        proxies = render.serve_proxies_service(cluster, ns)
        k8s.core.v1.Service(f"{name}-serve-proxies", metadata=proxies["metadata"], spec=proxies["spec"],
                            opts=k8s_opts)
        deployment = render.splitter_deployment(cluster, settings, f"{cluster}-dashboard-token")
        splitter = k8s.apps.v1.Deployment(f"{name}-splitter", metadata=deployment["metadata"],
                                          spec=deployment["spec"], opts=k8s_opts)
        budget = render.splitter_disruption_budget(cluster, ns)
        k8s.policy.v1.PodDisruptionBudget(f"{name}-splitter-pdb", metadata=budget["metadata"], spec=budget["spec"],
                                          opts=k8s_opts)
        if isinstance(settings, AwsTarget):
            manifest = aws_render.serve_service(cluster, settings)
            scheme = "https" if settings.tls_certificate_arn else "http"
        else:
            assert isinstance(settings, KubernetesTarget)
            manifest = render.serve_service(cluster, settings)
            scheme = "http"  # TLS, if any, is the cluster's: its load balancer or an Ingress in front
        service = k8s.core.v1.Service(
            f"{name}-service", metadata=manifest["metadata"], spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[args.runtime, splitter]),
        )
        in_cluster = f"{manifest['metadata']['name']}.{ns}.svc.cluster.local"
        # Until the cloud has provisioned the load balancer (and under mocks), and always
        # for ClusterIP, there is no address yet; the in-cluster name reaches the same proxies.
        return service.status.apply(lambda status: f"{scheme}://{lb_address(status) or in_cluster}")

    def endpoint(self, route_prefix: str) -> pulumi.Output[str]:
        return self.url.apply(lambda url: f"{url}{route_prefix}")


def lb_address(status: Any) -> str | None:
    """The load balancer's hostname (AWS) or IP (GKE, AKS, MetalLB) from a Service status:
    the provider's typed output (attributes) or plain data (camelCase keys, mocks)."""
    balancer = _field(status, "load_balancer", "loadBalancer")
    ingress = _field(balancer, "ingress", "ingress") or []
    first = ingress[0] if ingress else None
    for key in ("hostname", "ip"):
        value = _field(first, key, key)
        if value:
            return value
    return None


def _field(value: Any, attribute: str, key: str) -> Any:
    if value is None:
        return None
    found = getattr(value, attribute, None)
    if found is None and isinstance(value, dict):
        found = value.get(key)
    return found
