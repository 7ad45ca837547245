"""Typed stack config: pydantic models of everything under the `gpuserve:` namespace.

`load_stack_config()` validates the whole config before the program registers any
resource, and raises one `ConfigError` that lists every problem as
`<key path>: got <value>; allowed: <what>`.

Keys (stacks/Pulumi.<stack>.yaml):
  gpuserve:target       local (default) | kubernetes | aws
  gpuserve:local        ports and logical CPUs of the local Ray head   (target local)
  gpuserve:kubernetes   any cluster: kubeconfig, namespace, LB         (target kubernetes)
  gpuserve:aws          region and EKS cluster                         (target aws)
  gpuserve:node_pools   GPU node pools
  gpuserve:rollout      rollout defaults; a service's `rollout` overrides keys of it
  gpuserve:services     model services

Longer than our usual ~300 lines on purpose: the whole schema a user writes stays in one
file, read top to bottom. How problems are reported lives in config_errors.py.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from components.config_errors import NAMESPACE, ConfigError, problem
from components.config_file import check_values, read_stack_file
from runtime.constants import LOCAL_NODE_PORTS, LOCAL_NODE_PORTS_START, MAX_LOCAL_NODES, PROJECT_DIR
from runtime.spec import RolloutStrategy

# The classifier gpuserve ships (examples/classifier): a service that names no code of
# its own serves it, with weights models/<version>.npz from that directory.
SHIPPED_APP = "app:app"
SHIPPED_CODE_DIR = "examples/classifier"
REMOTE_URI = r"^(s3|gs|https?)://\S+$"
DEPLOYMENT_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
# Names end up in Serve app names `<service>--<version>`: no double dash inside either.
SERVICE_NAME = r"^[a-z](-?[a-z0-9])*$"
VERSION_NAME = r"^[A-Za-z0-9]([._-]?[A-Za-z0-9])*$"
# GPU instance families EKS offers with the AL2023 NVIDIA AMI.
GPU_INSTANCE = r"^(g4dn|g5|g5g|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en)\.[0-9]*x?large$"


# Node labels gpuserve sets itself (components/aws/render.py): a pool's own labels cannot
# override them. Keys and values as Kubernetes defines them.
RESERVED_LABEL_PREFIX = "gpuserve.io/"
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# A Kubernetes resource quantity ("4", "500m", "16Gi").
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


def _label_map(labels: dict[str, str], own: bool) -> dict[str, str]:
    """Kubernetes label keys and values; `own`: labels gpuserve sets, so not under its prefix."""
    for key, value in labels.items():
        if own and key.startswith(RESERVED_LABEL_PREFIX):
            raise ValueError(f"{key}: keys under {RESERVED_LABEL_PREFIX} are gpuserve's own (the pool's name "
                             "and GPU type); choose another key")
        if not LABEL_KEY.match(key) or len(key.partition("/")[0 if "/" in key else 2]) > 253:
            raise ValueError(f"{key!r}: a Kubernetes label key ([prefix/]name, name at most 63 characters)")
        if not LABEL_VALUE.match(value):
            raise ValueError(f"{key}={value!r}: a Kubernetes label value (at most 63 alphanumerics, '-', '_', '.')")
    return labels


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(Strict):
    min_replicas: int = Field(ge=1, le=256)
    max_replicas: int = Field(ge=1, le=256)
    target_ongoing_requests: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas: a value >= min_replicas")
        return self


class ActorOptions(Strict):
    num_gpus: float = Field(1.0, gt=0.0, le=8.0)  # fractional GPUs share a device
    num_cpus: float = Field(0.0, ge=0.0, le=64.0)


class RuntimeEnv(Strict):
    env_vars: dict[str, str] = {}


class DeploymentOptions(Strict):
    """Serve options of one deployment of a version app, addressed by its name."""

    num_replicas: int | None = Field(None, ge=1, le=256)
    max_ongoing_requests: int | None = Field(None, ge=1, le=10_000)
    max_queued_requests: int | None = Field(None, ge=-1, le=1_000_000)
    user_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] | None = None
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0.0, le=3600.0)
    health_check_period_s: float | None = Field(None, gt=0.0, le=3600.0)
    health_check_timeout_s: float | None = Field(None, gt=0.0, le=3600.0)

    def serve_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ServiceConfig(Strict):
    name: str = Field(pattern=SERVICE_NAME, max_length=31)
    pool: str
    version: str = Field(pattern=VERSION_NAME, max_length=40)
    # The model's weights: a path inside code_dir (shipped with the code), an absolute
    # path, or a URI; the app reads it from GPUSERVE_ARTIFACT. The shipped classifier
    # defaults to models/<version>.npz.
    artifact: str | None = None
    # The Serve app, as in a Serve config: an import path inside the code.
    import_path: str = Field(SHIPPED_APP, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    # The code: a local directory (relative to the project), packaged content-addressed
    # and uploaded to the cluster; and/or a remote zip URI (s3://, gs://, https://).
    code_dir: str | None = None
    working_dir: str | None = None
    pip: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    # Serve `args` when import_path names a builder function.
    args: dict[str, Any] | None = None
    # The deployment that holds the GPU replicas (the one the rollout scales), and
    # options for the app's other deployments, by their names.
    deployment: str = Field("Model", pattern=DEPLOYMENT_NAME, max_length=100)
    deployments: dict[Annotated[str, Field(pattern=DEPLOYMENT_NAME)], DeploymentOptions] = {}
    runtime_env: RuntimeEnv = RuntimeEnv()
    num_replicas: int | None = Field(None, ge=1, le=256)
    autoscaling: Autoscaling | None = None
    ray_actor_options: ActorOptions = ActorOptions()
    max_ongoing_requests: int = Field(8, ge=1, le=10_000)
    max_queued_requests: int = Field(64, ge=1, le=1_000_000)
    graceful_shutdown_timeout_s: float = Field(10.0, ge=0.0, le=3600.0)
    health_check_period_s: float = Field(10.0, gt=0.0, le=3600.0)
    health_check_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    request_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    # The splitter answers 413 to a request body over this.
    max_body_bytes: int = Field(10 << 20, ge=1024, le=1 << 30)
    # A weighted request that fails on the canary before any byte is retried once on the
    # primary; retries add at most this share of requests (0: off) plus this many per
    # second (Linkerd's retry budget defaults: 20%, 10/s, over 10 s), for these methods.
    retry_budget_percent: float = Field(20.0, ge=0.0, le=100.0)
    retry_min_per_second: float = Field(10.0, ge=0.0, le=10_000.0)
    retry_methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]] = []
    user_config: dict[str, Any] | None = None
    # A JSON Schema the app's user_config must satisfy. user_config changes are applied to
    # the serving replicas in place (Serve calls reconfigure(), no canary), so a value the
    # app would refuse must be refused here, before anything moves.
    user_config_schema: dict[str, Any] | None = None
    rollout: RolloutStrategy = RolloutStrategy()

    @field_validator("working_dir")
    @classmethod
    def _remote(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(REMOTE_URI, uri):
            raise ValueError("a remote zip URI (s3://, gs://, https://); a local directory goes in code_dir")
        return uri

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> "ServiceConfig":
        if (self.num_replicas is None) == (self.autoscaling is None):
            raise ValueError("num_replicas: set exactly one of num_replicas or autoscaling")
        return self

    @property
    def replicas(self) -> int:
        """Steady-state replica count N (autoscaling: max_replicas, the worst case)."""
        return self.num_replicas if self.num_replicas is not None else self.autoscaling.max_replicas

    @property
    def gpus_per_replica(self) -> float:
        return self.ray_actor_options.num_gpus

    @property
    def ships_classifier(self) -> bool:
        return self.import_path == SHIPPED_APP and self.code_dir is None and self.working_dir is None

    def code_path(self) -> Path | None:
        """The local code directory, absolute (the shipped classifier's by default)."""
        if self.code_dir is None:
            return PROJECT_DIR / SHIPPED_CODE_DIR if self.ships_classifier else None
        path = Path(self.code_dir).expanduser()
        return path if path.is_absolute() else PROJECT_DIR / path

    def artifact_ref(self) -> str | None:
        """The artifact as the app gets it (relative paths resolve inside the code)."""
        if self.artifact is None and self.ships_classifier:
            return f"models/{self.version}.npz"
        return self.artifact

    def artifact_file(self) -> Path | None:
        """The artifact's local file, if it is one (for its hash and for checks)."""
        ref = self.artifact_ref()
        if ref is None or "://" in ref:
            return None
        path = Path(ref).expanduser()
        if path.is_absolute():
            return path
        code = self.code_path()
        return code / path if code else None


class LocalCluster(Strict):
    """The local Ray head and data plane. Every port binds 127.0.0.1 where Ray lets us choose."""

    # Where clients connect: the splitter instances, which share this port.
    public_port: int = Field(18080, ge=1024, le=65535)
    splitter_instances: int = Field(2, ge=1, le=16)
    max_header_bytes: int = Field(64 << 10, ge=4096, le=1 << 20)
    # Ray Serve's own HTTP proxy, behind the splitter.
    http_port: int = Field(18000, ge=1024, le=65535)
    dashboard_port: int = Field(18265, ge=1024, le=65535)
    gcs_port: int = Field(18379, ge=1024, le=65535)
    # Ray's internal ports (node manager, object manager, agents, workers) use
    # [internal_ports_start, internal_ports_start + 200).
    internal_ports_start: int = Field(18400, ge=1024, le=65335)
    num_cpus: int = Field(4, ge=1, le=256)
    # How often Ray exports its metrics (Serve's request counters and latencies) to the
    # node's metrics page, for a Prometheus server to scrape; unset keeps Ray's default
    # (10 s). 1000 is Ray's floor and what Prometheus-gated rollouts want.
    metrics_report_interval_ms: int | None = Field(None, ge=1000, le=600_000)


class LocalNodePool(Strict):
    """A pool of virtual GPUs. With `gpus_per_node`, the pool is gpus / gpus_per_node Ray
    worker nodes joined to a head that runs no GPU work; growing adds nodes, shrinking
    drains and removes them, and the head is never touched (runtime/local_nodes.py).
    Without it the head itself holds the GPUs: one node, as stacks made before node pools
    were; switching an existing stack to nodes replaces its head once."""

    name: str = Field(pattern=SERVICE_NAME, max_length=31)
    gpus: int = Field(ge=1, le=64)  # the pool's virtual GPUs in all
    gpus_per_node: int | None = Field(None, ge=1, le=64)
    cpus_per_node: int | None = Field(None, ge=1, le=64)  # unset: one per GPU

    @model_validator(mode="after")
    def _nodes(self) -> "LocalNodePool":
        if self.gpus_per_node is not None:
            if self.gpus % self.gpus_per_node:
                raise ValueError(f"gpus ({self.gpus}) must be a multiple of gpus_per_node ({self.gpus_per_node})")
            if self.nodes > MAX_LOCAL_NODES:
                raise ValueError(f"at most {MAX_LOCAL_NODES} worker nodes (gpus / gpus_per_node = {self.nodes})")
        elif self.cpus_per_node is not None:
            raise ValueError("cpus_per_node needs gpus_per_node (worker nodes)")
        return self

    @property
    def nodes(self) -> int:
        """Worker nodes; 0 when the head holds the GPUs."""
        return self.gpus // self.gpus_per_node if self.gpus_per_node else 0

    @property
    def total_gpus(self) -> float:
        return float(self.gpus)


class AwsNodePool(Strict):
    name: str = Field(pattern=SERVICE_NAME, max_length=31)
    instance_types: list[Annotated[str, Field(pattern=GPU_INSTANCE)]] = Field(min_length=1)
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    gpu_type: str = Field(pattern=r"^[a-z0-9-]+$")
    gpus_per_node: int = Field(ge=1, le=16)
    min_nodes: int = Field(0, ge=0, le=1000)
    desired_nodes: int = Field(1, ge=0, le=1000)
    max_nodes: int = Field(ge=1, le=1000)
    disk_size_gb: int = Field(100, ge=20, le=16_384)
    max_unavailable: int = Field(1, ge=1, le=100)
    labels: dict[str, str] = {}

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _label_map(labels, own=True)

    @model_validator(mode="after")
    def _ordered(self) -> "AwsNodePool":
        if not self.min_nodes <= self.desired_nodes <= self.max_nodes:
            raise ValueError("desired_nodes: min_nodes <= desired_nodes <= max_nodes")
        return self

    @property
    def total_gpus(self) -> float:
        return float(self.max_nodes * self.gpus_per_node)


class ClusterSettings(Strict):
    """What every Kubernetes target shares (aws is EKS plus node groups plus this)."""

    namespace: str = Field("gpuserve", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    public_load_balancer: bool = False
    # GCS fault tolerance on an external Redis (KubeRay's HA guide) + replica spreading.
    ha: bool = False
    redis_address: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+:\d{1,5}$", max_length=300)
    # Address the Ray head's dashboard and Serve proxies bind inside their pods. It must
    # be given explicitly: in a pod it is the wildcard address, never a host's.
    pod_bind_address: str = Field(pattern=r"^\d{1,3}(\.\d{1,3}){3}$")
    dcgm_exporter: bool = False
    # The data plane: an image built from splitter/Dockerfile and pushed to a registry
    # the nodes can pull from (README, "The aws target"), and how many pods run it.
    splitter_image: str = Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=300)
    splitter_replicas: int = Field(2, ge=1, le=64)

    @field_validator("pod_bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.IPv4Address(value)  # raises ValueError: "999.1.1.1" is no address
        return value

    @field_validator("redis_address")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
            raise ValueError(f"port of {value} must be 1..65535")
        return value


class KubernetesTarget(ClusterSettings):
    """Any cluster a kubeconfig reaches (GKE, AKS, on-prem, a lab cluster): gpuserve
    deploys into `namespace` and expects GPU nodes to exist already."""

    # A kubeconfig file's path, or the kubeconfig itself (then keep it a secret:
    # `pulumi config set --secret`); unset: the ambient one ($KUBECONFIG, ~/.kube/config).
    kubeconfig: str | None = Field(None, min_length=1, max_length=1 << 20)
    context: str | None = Field(None, min_length=1, max_length=253)
    # KubeRay's operator is assumed installed (it is cluster-wide); true installs it here.
    install_kuberay: bool = False
    # The NVIDIA device plugin DaemonSet on each pool's nodes; false where the cluster
    # already runs one (GKE installs its own; so does the NVIDIA GPU Operator).
    device_plugin: bool = True
    # How the splitter is exposed: a LoadBalancer Service, or ClusterIP (bring your own
    # Ingress or Gateway). Whether a load balancer is internal is the cloud's business:
    # say it with its annotations (e.g. networking.gke.io/load-balancer-type: Internal,
    # service.beta.kubernetes.io/azure-load-balancer-internal: "true").
    service_type: Literal["LoadBalancer", "ClusterIP"] = "LoadBalancer"
    load_balancer_annotations: dict[str, str] = Field({}, max_length=64)
    load_balancer_class: str | None = Field(None, pattern=r"^[a-z0-9.-]+(/[A-Za-z0-9._-]+)?$", max_length=253)
    # The networks a public load balancer admits (Service.spec.loadBalancerSourceRanges).
    load_balancer_source_ranges: list[str] = Field([], max_length=100)

    @field_validator("load_balancer_source_ranges")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=True)  # raises ValueError with the reason
        return value

    @field_validator("load_balancer_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY.match(key):
                raise ValueError(f"{key!r}: an annotation key ([prefix/]name)")
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(f"{key}: annotations under {RESERVED_LABEL_PREFIX} are gpuserve's own; "
                                 "use public_load_balancer")
        return value


class Toleration(Strict):
    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _exists(self) -> "Toleration":
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("value: no value with operator Exists")
        return self


class KubernetesNodePool(Strict):
    """GPU nodes that exist in the cluster already, found by their labels; gpuserve runs
    a KubeRay worker group on them (at most `max_nodes` workers of `gpus_per_node` GPUs)."""

    name: str = Field(pattern=SERVICE_NAME, max_length=31)
    gpu_type: str = Field("gpu", pattern=r"^[a-z0-9-]+$")
    gpus_per_node: int = Field(ge=1, le=16)
    # GPU workers (one per node's worth of GPUs) kept even when no replica needs them,
    # and the most the worker group may grow to, rollout surges included.
    min_nodes: int = Field(0, ge=0, le=1000)
    max_nodes: int = Field(ge=1, le=1000)
    # Labels of the pool's nodes (the worker pods' nodeSelector), e.g.
    # cloud.google.com/gke-accelerator: nvidia-l4. Empty: any node with free GPUs.
    node_selector: dict[str, str] = Field({}, max_length=20)
    # Taints of the pool's nodes the workers tolerate; the default tolerates the
    # conventional nvidia.com/gpu taint.
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        max_length=20)
    # Each GPU worker pod's CPU and memory (requests = limits).
    worker_cpu: str = Field("4", pattern=QUANTITY)
    worker_memory: str = Field("16Gi", pattern=QUANTITY)

    @field_validator("node_selector")
    @classmethod
    def _selector(cls, labels: dict[str, str]) -> dict[str, str]:
        return _label_map(labels, own=False)

    @model_validator(mode="after")
    def _ordered(self) -> "KubernetesNodePool":
        if self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes: min_nodes <= max_nodes")
        return self

    @property
    def total_gpus(self) -> float:
        return float(self.max_nodes * self.gpus_per_node)


class AwsTarget(ClusterSettings):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # Use an existing EKS cluster (name + kubeconfig) or create one.
    cluster_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
    create_cluster: bool = False
    kubeconfig: str | None = None
    kubernetes_version: str = Field("1.33", pattern=r"^1\.\d{2}$")
    # Subnets of the node groups (and of the cluster when created): private ones.
    subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(min_length=1)
    # An ACM certificate: with it the load balancer serves HTTPS on 443 only (no port 80).
    tls_certificate_arn: str | None = Field(
        None, pattern=r"^arn:aws(-cn|-us-gov)?:acm:[a-z]{2}(-[a-z]+)+-\d:\d{12}:certificate/[0-9a-f-]{36}$")
    # The EKS API endpoint gpuserve creates is private (reached from inside the VPC) unless
    # networks are listed here; then it is public to those networks only.
    api_public_cidrs: list[str] = Field([], max_length=40)

    @field_validator("api_public_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            network = ipaddress.ip_network(cidr, strict=True)  # raises ValueError with the reason
            if network.prefixlen == 0:
                raise ValueError(f"{cidr} opens the API endpoint to the whole internet; list your own networks")
        return value


class _Stack(Strict):
    # What the stack is for. `prod` turns on the policy pack's prod-only checks (and so
    # does a stack named prod, production or prod-*), whatever the stack is called.
    environment: Literal["dev", "test", "staging", "prod"] | None = None
    rollout: RolloutStrategy = RolloutStrategy()
    # None yet is fine: the runtime, pools and load balancer come up, ready for services.
    services: list[ServiceConfig] = []


class LocalStack(_Stack):
    target: Literal["local"] = "local"
    local: LocalCluster = LocalCluster()
    node_pools: list[LocalNodePool] = Field(min_length=1)


class KubernetesStack(_Stack):
    target: Literal["kubernetes"]
    kubernetes: KubernetesTarget
    node_pools: list[KubernetesNodePool] = Field(min_length=1)

    @property
    def cluster(self) -> KubernetesTarget:
        return self.kubernetes


class AwsStack(_Stack):
    target: Literal["aws"]
    aws: AwsTarget
    node_pools: list[AwsNodePool] = Field(min_length=1)

    @property
    def cluster(self) -> AwsTarget:
        return self.aws


# The two targets that run on Kubernetes (what their renderers take).
ClusterStack = Union[KubernetesStack, AwsStack]
StackConfig = Annotated[Union[LocalStack, KubernetesStack, AwsStack], Field(discriminator="target")]
_ADAPTER: TypeAdapter = TypeAdapter(StackConfig)


def load_stack_config(raw: dict[str, Any], stack: str) -> LocalStack | KubernetesStack | AwsStack:
    """Validate the `gpuserve:` namespace (keys without the prefix); raise ConfigError."""
    document = dict(raw)
    document.setdefault("target", "local")
    odd = check_values(document)
    if odd:
        raise ConfigError(stack, odd)
    _merge_rollout_defaults(document)
    try:
        # Strict: a boolean is no number and text is no number; JSON mode, because that
        # is what the values are (Pulumi hands structured config over as JSON).
        config = _ADAPTER.validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        target = document.get("target")
        root = {"kubernetes": KubernetesStack, "aws": AwsStack}.get(target if isinstance(target, str) else "",
                                                                   LocalStack)
        raise ConfigError(stack, [problem(err, document, root) for err in exc.errors()]) from None
    problems = _cross_checks(config, stack)
    if problems:
        raise ConfigError(stack, problems)
    return config


def config_from_pulumi(values: dict[str, str]) -> dict[str, Any]:
    """Turn Pulumi's flat `gpuserve:key -> string` map into a document.

    Structured values arrive JSON-encoded; plain strings stay strings.
    """
    document: dict[str, Any] = {}
    for key, text in values.items():
        namespace, _, name = key.partition(":")
        if namespace != NAMESPACE:
            continue
        try:
            document[name] = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError:
            document[name] = text
    return document


def _merge_rollout_defaults(document: dict[str, Any]) -> None:
    # A service's `rollout` overrides keys of the stack-wide `rollout`, one level deep
    # for `gates`, so a service can change one threshold and keep the rest.
    defaults = document.get("rollout")
    services = document.get("services")
    if not isinstance(defaults, dict) or not isinstance(services, list):
        return
    for service in services:
        if not isinstance(service, dict):
            continue
        own = service.get("rollout", {})
        if not isinstance(own, dict):
            continue
        merged = {**defaults, **own}
        if isinstance(defaults.get("gates"), dict) and isinstance(own.get("gates"), dict):
            merged["gates"] = {**defaults["gates"], **own["gates"]}
        service["rollout"] = merged


def _cross_checks(config: LocalStack | KubernetesStack | AwsStack, stack: str) -> list[tuple[str, Any, str]]:
    problems: list[tuple[str, Any, str]] = []
    pools = {pool.name: pool for pool in config.node_pools}
    _duplicates(problems, "node_pools", [p.name for p in config.node_pools])
    _duplicates(problems, "services", [s.name for s in config.services])
    for i, service in enumerate(config.services):
        where = f"{NAMESPACE}:services[{i}]"
        pool = pools.get(service.pool)
        if pool is None:
            problems.append((f"{where}.pool", service.pool, f"a defined node pool: {sorted(pools)}"))
            continue
        rollout = service.rollout
        if not rollout.bake_seconds < rollout.step_timeout_seconds < rollout.deadline_minutes * 60:
            problems.append((
                f"{where}.rollout", {"bake_seconds": rollout.bake_seconds,
                                     "step_timeout_seconds": rollout.step_timeout_seconds,
                                     "deadline_minutes": rollout.deadline_minutes},
                "bake_seconds < step_timeout_seconds < deadline_minutes x 60 (a wave must be able to bake "
                "within a step, and a step to end before the deadline)"))
        per_node = getattr(pool, "gpus_per_node", None)
        if per_node is not None and service.gpus_per_replica > per_node:
            problems.append((f"{where}.ray_actor_options.num_gpus", service.gpus_per_replica,
                             f"at most the GPUs of one node of pool '{pool.name}' ({per_node}): a replica "
                             "runs on one node"))
        steady = service.replicas * service.gpus_per_replica
        if steady > pool.total_gpus:
            problems.append((
                f"{where}.num_replicas" if service.num_replicas else f"{where}.autoscaling.max_replicas",
                service.replicas,
                f"replicas x ray_actor_options.num_gpus ({steady:g}) <= GPUs of pool "
                f"'{pool.name}' ({pool.total_gpus:g})",
            ))
        problems += _user_config_problems(service, where)
        code = service.code_path()
        if service.code_dir is not None and not code.is_dir():
            problems.append((f"{where}.code_dir", service.code_dir, "an existing directory (relative to the project)"))
        elif code is None and service.working_dir is None and service.import_path != SHIPPED_APP:
            problems.append((f"{where}.code_dir", None, f"the directory holding {service.import_path.split(':')[0]} "
                             "(or working_dir: a remote zip URI)"))
        artifact = service.artifact_file()
        if artifact is not None and (code is None or code.is_dir()) and not artifact.is_file():
            problems.append((
                f"{where}.artifact" if service.artifact else f"{where}.version",
                service.artifact or service.version,
                f"a model artifact that exists ({artifact} does not)"
                + (f"; shipped versions: {_shipped_versions()}" if service.ships_classifier else ""),
            ))
    for i, pool in enumerate(config.node_pools):
        # Each service fitting alone is not enough: together, at steady state, they must too.
        steady = {s.name: s.replicas * s.gpus_per_replica for s in config.services if s.pool == pool.name}
        if len(steady) > 1 and sum(steady.values()) > pool.total_gpus:
            problems.append((f"{NAMESPACE}:node_pools[{i}]", pool.name,
                             f"a pool whose GPUs ({pool.total_gpus:g}) hold its services' steady replicas together "
                             f"({sum(steady.values()):g}: " + ", ".join(f"{k} {v:g}" for k, v in steady.items())
                             + "); grow the pool or lower num_replicas"))
    if isinstance(config, AwsStack):
        problems += _aws_checks(config, stack)
    if isinstance(config, KubernetesStack):
        problems += _kubernetes_checks(config, stack)
    if isinstance(config, LocalStack):
        if len(config.node_pools) > 1:
            problems.append((f"{NAMESPACE}:node_pools", [p.name for p in config.node_pools],
                             "one node pool on the local target (it is one Ray head)"))
        ports = {
            "public_port": config.local.public_port,
            "http_port": config.local.http_port,
            "dashboard_port": config.local.dashboard_port,
            "gcs_port": config.local.gcs_port,
        }
        nodes = max(pool.nodes for pool in config.node_pools)
        # The head's internal ports, then a block per worker node (runtime/local_nodes.py).
        last = config.local.internal_ports_start + LOCAL_NODE_PORTS_START + LOCAL_NODE_PORTS * nodes
        if nodes and last > 65536:
            problems.append((f"{NAMESPACE}:local.internal_ports_start", config.local.internal_ports_start,
                             f"at most {65536 - (last - config.local.internal_ports_start)}: {nodes} worker "
                             f"nodes take {LOCAL_NODE_PORTS} ports each above the head's 200"))
        internal = range(config.local.internal_ports_start, last)
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen or port in internal:
                problems.append((
                    f"{NAMESPACE}:local.{name}", port,
                    f"a port not used by {seen.get(port, f'internal_ports_start..+{len(internal)}')}",
                ))
            seen[port] = name
    return problems


def _user_config_problems(service: ServiceConfig, where: str) -> list[tuple[str, Any, str]]:
    """user_config against the service's user_config_schema: every violation, by path."""
    if service.user_config_schema is None:
        return []
    import jsonschema

    try:
        validator_class = jsonschema.validators.validator_for(service.user_config_schema)
        validator_class.check_schema(service.user_config_schema)
    except jsonschema.SchemaError as exc:
        return [(f"{where}.user_config_schema", exc.instance, f"a valid JSON Schema ({exc.message})")]
    validator = validator_class(service.user_config_schema)
    problems = []
    for error in sorted(validator.iter_errors(service.user_config or {}), key=lambda e: list(e.absolute_path)):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append((f"{where}.user_config{path}", error.instance,
                         f"{error.message.removeprefix(repr(error.instance) + ' ')} (user_config_schema)"))
    return problems


def _aws_checks(config: AwsStack, stack: str) -> list[tuple[str, Any, str]]:
    problems: list[tuple[str, Any, str]] = []
    aws = config.aws
    where = f"{NAMESPACE}:aws"
    if aws.public_load_balancer and not aws.tls_certificate_arn and stack == "prod":
        problems.append((f"{where}.public_load_balancer", True,
                         "false in prod unless tls_certificate_arn is set (a public endpoint needs TLS)"))
    if aws.kubeconfig and not Path(aws.kubeconfig).expanduser().is_file():
        problems.append((f"{where}.kubeconfig", aws.kubeconfig, "the path of an existing kubeconfig file"))
    if aws.ha and not aws.redis_address:
        problems.append((f"{where}.redis_address", None, "host:port of the external Redis when ha is true"))
    return problems


def _kubernetes_checks(config: KubernetesStack, stack: str) -> list[tuple[str, Any, str]]:
    problems: list[tuple[str, Any, str]] = []
    target = config.kubernetes
    where = f"{NAMESPACE}:kubernetes"
    if target.kubeconfig and not kubeconfig_is_inline(target.kubeconfig) \
            and not Path(target.kubeconfig).expanduser().is_file():
        problems.append((f"{where}.kubeconfig", target.kubeconfig,
                         "the path of an existing kubeconfig file, or a kubeconfig's contents (a secret)"))
    if target.ha and not target.redis_address:
        problems.append((f"{where}.redis_address", None, "host:port of the external Redis when ha is true"))
    exposed = target.service_type == "LoadBalancer"
    if exposed and target.public_load_balancer and not target.load_balancer_source_ranges:
        problems.append((f"{where}.load_balancer_source_ranges", [],
                         "the networks a public load balancer admits (an allowlist of CIDRs)"))
    if exposed and target.public_load_balancer and is_prod_stack(config, stack) and any(
            ipaddress.ip_network(cidr).prefixlen == 0 for cidr in target.load_balancer_source_ranges):
        problems.append((f"{where}.load_balancer_source_ranges", target.load_balancer_source_ranges,
                         "your own networks in prod, not the whole internet (/0)"))
    return problems


def kubeconfig_is_inline(value: str) -> bool:
    """A kubeconfig's contents (YAML or JSON), as opposed to a file's path."""
    return "\n" in value or value.lstrip().startswith(("{", "apiVersion"))


def is_prod_stack(config: LocalStack | KubernetesStack | AwsStack, stack: str) -> bool:
    """The policy pack's rule, early: `environment: prod`, or a stack named like prod."""
    return config.environment == "prod" or stack in ("prod", "production") or stack.startswith("prod-")


def _duplicates(problems: list, key: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append((f"{NAMESPACE}:{key}[{i}].name", name, "a name unique in the list"))


def _shipped_versions() -> list[str]:
    return sorted(p.stem for p in (PROJECT_DIR / SHIPPED_CODE_DIR / "models").glob("*.npz"))


def check_stack_file(path: Path) -> LocalStack | KubernetesStack | AwsStack:
    """Validate a stack file the way the program will, without running Pulumi.

    `make up` and `make preview` call this first, so a bad config stops before the CLI
    starts (a failed Pulumi program would otherwise still rewrite the stack's outputs).
    """
    stack, values = read_stack_file(path)
    ours = {k: v for k, v in values.items() if isinstance(k, str) and k.startswith(f"{NAMESPACE}:")}
    odd = check_values({k.partition(":")[2]: v for k, v in ours.items()})
    if odd:
        raise ConfigError(stack, odd)
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in ours.items()}
    return load_stack_config(config_from_pulumi(encoded), stack)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m components.config stacks/Pulumi.<stack>.yaml", file=sys.stderr)
        sys.exit(2)
    try:
        check_stack_file(Path(sys.argv[1]))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
