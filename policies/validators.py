"""One validator per policy: plain functions of resource props and policy config that
return violation messages. No pulumi_policy types here, so each is easy to test.

Each message states the rule, the value seen and the fix. Thirteen small functions, one
per policy, kept in one file (a little over ~300 lines) so the rules read as one list.
"""

from __future__ import annotations

import re

from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlparse

from runtime import plan
from runtime.constants import DASHBOARD_PORT, ENVIRONMENT_LABEL
from runtime.k8s_forward import SCHEME as FORWARD_SCHEME

ROLLOUT = "pulumi-python:dynamic/gpuserve:ModelRollout"
POOL = "gpuserve:gpu_node_pool:GpuNodePool"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
RAY_CLUSTER = "kubernetes:ray.io/v1:RayCluster"
K8S_SERVICE = "kubernetes:core/v1:Service"
SCHEME = "service.beta.kubernetes.io/aws-load-balancer-scheme"
SSL_CERT = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
PUBLIC = "gpuserve.io/public"
GPU_TAINT_KEY = "nvidia.com/gpu"
SENSITIVE = ("token", "password", "passwd", "secret", "stringdata", "apikey", "api_key", "api-key", "credential",
             "passphrase", "private_key", "access_key")
# Secrets recognised by what they look like, whatever the key that holds them is called.
SECRET_VALUES = (
    ("credentials in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a JSON Web Token", re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}")),
    ("a bearer token", re.compile(r"\bBearer\s+[\w.~+/=-]{16,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("an API key (sk-)", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    # ... but not a flag naming where the secret is (-token-file=/var/run/..., --password-path).
    ("a secret on a command line", re.compile(
        r"--?[\w-]*(password|passwd|token|secret|api[-_]?key|credential)(?![\w-]*[-_](file|path|dir)[= ])"
        r"[\w-]*[= ]\S+", re.IGNORECASE)),
)


class Secret(str):
    """A string that reached the resource as a Pulumi secret (see policies/__main__.py)."""


def mark_secret(value):
    """Every string inside a secret is one: a whole secret map (a Secret's `data`, made
    with Output.secret({...})) marks its values too."""
    if isinstance(value, str):
        return Secret(value)
    if isinstance(value, dict):
        return {key: mark_secret(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mark_secret(item) for item in value]
    return value


# pulumi_policy marks a value that is unknown during preview with one of these strings.
UNKNOWN_VALUES = frozenset({
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7", "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
    "030794c1-ac77-496b-92df-f27374a8bd58", "e48ece36-62e2-4504-bad9-02848725956a",
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
})


def plain(value: Any) -> Any:
    """Copy pulumi_policy's read-only proxies into plain dicts and lists.

    A value unknown during preview becomes None: each validator judges what is known, and
    the same policy runs again at update, when everything is. (pulumi_policy's proxies raise
    on reading an unknown, which would turn a whole policy into a "can't run" advisory.)
    """
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return None if value in UNKNOWN_VALUES else value
    if isinstance(value, (Mapping, Sequence)) and not isinstance(value, bytes):
        # A proxy hands out its unchecked contents under "__target".
        raw = value["__target"] if type(value).__name__ in ("_DictProxy", "_ListProxy") else value
        if isinstance(raw, Mapping):
            return {k: plain(raw[k]) for k in raw}
        return [plain(item) for item in raw]
    return value


def get(props: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First present key among spellings (inputs arrive camelCase from most SDKs)."""
    for name in names:
        if isinstance(props, Mapping) and props.get(name) is not None:
            return props[name]
    return default


def stack_of(urn: str) -> str:
    # urn:pulumi:<stack>::<project>::<type>::<name>
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


# A stack is prod when the pack's prodStacks names it, or when its name says so: `prod`,
# `production`, `prod-eu`, `production_us`... (a stack named "prod-eu" must not skip the
# prod-only checks because nobody listed it).
PROD_NAME = re.compile(r"^prod(uction)?([-_.].*)?$", re.IGNORECASE)


def is_prod(urn: str, config: Mapping[str, Any], props: Mapping[str, Any] | None = None) -> bool:
    """Prod when the stack's config says so (`gpuserve:environment: prod`, carried in a
    rollout's spec and on the objects it renders), or, to be safe, when the pack's
    prodStacks or the stack's name says so. Each can only add checks, never remove them."""
    props = props or {}
    declared = ((props.get("spec") or {}).get("environment") if isinstance(props.get("spec"), Mapping) else None) \
        or ((props.get("metadata") or {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
    stack = stack_of(urn)
    return declared == "prod" or stack in config.get("prodStacks", ["prod"]) or bool(PROD_NAME.match(stack))


def surge_replicas(n: int, percent: int) -> int:
    """The planner's surge (runtime/plan.py), for any percent a resource may carry: one
    outside 1..100 is judged by `rollout-surge-bounds`, and counts here as the nearest bound."""
    return plan.surge_replicas(max(n, 1), min(max(percent, 1), 100))


def replicas(spec: Mapping[str, Any]) -> int:
    scaling = spec.get("scaling") or {}
    return int(scaling.get("num_replicas") or scaling.get("max_replicas") or 1)


def rollout_peak_gpus(spec: Mapping[str, Any]) -> float:
    n = replicas(spec)
    p = int((spec.get("rollout") or {}).get("max_surge_percent", 25))
    return plan.peak_replicas(max(n, 1), min(max(p, 1), 100)) * float((spec.get("version") or {}).get("num_gpus", 1))


def steady_gpus(spec: Mapping[str, Any]) -> float:
    return replicas(spec) * float((spec.get("version") or {}).get("num_gpus", 1))


# -- 1 ---------------------------------------------------------------------------------
def gpu_node_pool_tainted(props: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    key = (config or {}).get("taintKey", GPU_TAINT_KEY)
    taints = get(props, "taints", default=[]) or []
    ok = any(t.get("key") == key and t.get("effect") in ("NO_SCHEDULE", "NoSchedule") for t in taints)
    if ok:
        return []
    seen = [f"{t.get('key')}={t.get('value')}:{t.get('effect')}" for t in taints] or "none"
    return [f"GPU node groups must carry the taint {key}=true:NoSchedule so only GPU workloads "
            f"land there; taints seen: {seen}. Add it to the node group's taints."]


# -- 2 ---------------------------------------------------------------------------------
def gpu_instance_allowlist(props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    allowed = list(config.get("allowedInstanceTypes") or [])
    types = get(props, "instanceTypes", "instance_types", default=[]) or []
    bad = [t for t in types if t not in allowed]
    if not bad:
        return []
    return [f"GPU instance types must come from the allowlist {allowed}; seen {bad}. "
            f"Choose an allowed type or extend allowedInstanceTypes in the policy config."]


# -- 3 ---------------------------------------------------------------------------------
def gpu_budget(pools: Iterable[Mapping[str, Any]], rollouts: Iterable[Mapping[str, Any]],
               config: Mapping[str, Any]) -> list[str]:
    budget = float(config.get("maxGpus", 64))
    pools = list(pools)
    capacity = sum(float(p.get("total_gpus", 0)) for p in pools)
    # Worst moment: every service steady, plus the largest single rollout's surge.
    specs = [r.get("spec") or {} for r in rollouts]
    steady = sum(steady_gpus(s) for s in specs)
    surge = max((rollout_peak_gpus(s) - steady_gpus(s) for s in specs), default=0.0)
    worst = max(capacity, steady + surge)
    if worst <= budget:
        return []
    return [f"total GPUs must stay within the budget of {budget:g}; node pools can scale to {capacity:g} GPUs "
            f"and services need {steady:g} steady + {surge:g} for a rollout surge. Lower max_nodes, replicas "
            f"or max_surge_percent, or raise maxGpus in the policy config."]


# -- 4 ---------------------------------------------------------------------------------
def rollout_surge_fits_capacity(spec: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    """Judged from the capacity facts the program puts in the rollout's spec: the pool's
    GPUs and what the pool's other services hold at steady state."""
    capacity = spec.get("capacity") or {}
    if "pool_gpus" not in capacity or capacity["pool_gpus"] is None:
        return []  # made without capacity facts (not by gpuserve's program): nothing to judge by
    g = float((spec.get("version") or {}).get("num_gpus", 1))
    per_node = capacity.get("gpus_per_node")
    if per_node is not None and g > float(per_node):
        return [f"a replica of {spec.get('service')} needs {g:g} GPUs but a node of pool '{spec.get('pool')}' has "
                f"{float(per_node):g}: a replica runs on one node, so it would never be placed. Lower "
                f"ray_actor_options.num_gpus or use a pool with larger nodes."]
    if float(capacity["pool_gpus"]) <= 0:
        return [f"a rollout of {spec.get('service')} must fit its node pool '{spec.get('pool')}', which declares "
                f"{capacity['pool_gpus']} GPUs: a pool with no GPUs holds no replica. Declare the pool's GPUs."]
    others = float(capacity.get("others_steady_gpus") or 0)
    # headroomGpus keeps GPUs free for anything else on the pool (default none).
    have = float(capacity["pool_gpus"]) - float((config or {}).get("headroomGpus", 0))
    peak = rollout_peak_gpus(spec)
    if peak + others <= have:
        return []
    n = replicas(spec)
    p = int((spec.get("rollout") or {}).get("max_surge_percent", 25))
    return [f"a rollout of {spec.get('service')} must fit its node pool '{spec.get('pool')}': peak "
            f"(N + ceil(p% * N)) x gpus_per_replica = ({n} + {surge_replicas(n, p)}) x {g:g} = {peak:g} GPUs"
            + (f" plus {others:g} for other services" if others else "")
            + f" > {have:g} GPUs in the pool. Lower max_surge_percent or replicas, or grow the pool."]


# -- 5 ---------------------------------------------------------------------------------
def rollout_surge_bounds(spec: Mapping[str, Any], prod: bool, config: Mapping[str, Any]) -> list[str]:
    p = int((spec.get("rollout") or {}).get("max_surge_percent", 25))
    low = int(config.get("minSurgePercent", 1))
    high = int(config.get("maxSurgePercentProd" if prod else "maxSurgePercent", 50 if prod else 100))
    if low <= p <= high:
        return []
    where = "in prod " if prod else ""
    return [f"max_surge_percent of {spec.get('service')} must lie {where}within {low}..{high}; seen {p}. "
            f"Set rollout.max_surge_percent to at most {high}."]


# -- 6 ---------------------------------------------------------------------------------
def rollout_has_gates(spec: Mapping[str, Any], prod: bool, config: Mapping[str, Any]) -> list[str]:
    rollout = spec.get("rollout") or {}
    gates = rollout.get("gates") or {}
    service = spec.get("service")
    messages = []
    if not rollout.get("deadline_minutes"):
        messages.append(f"rollouts of {service} must have a deadline; seen {rollout.get('deadline_minutes')}. "
                        "Set rollout.deadline_minutes.")
    if prod and not gates.get("enabled", True):
        messages.append(f"prod rollouts of {service} must keep health gates; seen gates.enabled false. "
                        "Remove it or set it to true.")
    if prod and float(rollout.get("bake_seconds", 0)) < float(config.get("minBakeSecondsProd", 1)):
        messages.append(f"prod rollouts of {service} must bake at least {config.get('minBakeSecondsProd', 1)}s "
                        f"per wave; seen {rollout.get('bake_seconds')}. Raise rollout.bake_seconds.")
    if prod and gates.get("enabled", True):
        messages += _gate_floors(service, gates, config)
    return messages


# Gates that are "enabled" but can never fail are no gates: prod sets floors (and ceilings)
# on what they accept. (field, config key, default, at least / at most, the spec's default)
PROD_GATE_FLOORS = (
    ("min_success_rate", "minSuccessRateProd", 0.95, "at least", 0.99),
    ("min_probes", "minProbesProd", 10, "at least", 20),
    ("min_samples", "minSamplesProd", 10, "at least", 20),
    ("max_latency_ratio", "maxLatencyRatioProd", 5.0, "at most", 2.0),
    ("latency_p_value", "maxLatencyPValueProd", 0.05, "at most", 0.001),
)


def _gate_floors(service: Any, gates: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    messages = []
    for field, key, default, bound, spec_default in PROD_GATE_FLOORS:
        limit = float(config.get(key, default))
        seen = float(gates.get(field, spec_default))
        if (seen < limit) if bound == "at least" else (seen > limit):
            messages.append(f"prod rollouts of {service} need gates.{field} {bound} {limit:g}; seen {seen:g}. "
                            f"A gate that cannot fail is no gate.")
    return messages


# -- 7 ---------------------------------------------------------------------------------
def prod_min_replicas(spec: Mapping[str, Any], prod: bool, config: Mapping[str, Any]) -> list[str]:
    minimum = int(config.get("minReplicas", 2))
    scaling = spec.get("scaling") or {}
    n = int(scaling.get("num_replicas") or scaling.get("min_replicas") or 0)
    if not prod or n >= minimum:
        return []
    return [f"prod services must run at least {minimum} replicas; {spec.get('service')} runs {n}. "
            f"Raise num_replicas (or autoscaling.min_replicas) to {minimum}."]


# -- 8 ---------------------------------------------------------------------------------
def graceful_shutdown_covers_requests(spec: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    grace = float((spec.get("scaling") or {}).get("graceful_shutdown_timeout_s", 0))
    timeout = float(spec.get("request_timeout_s", 0)) + float((config or {}).get("marginSeconds", 0))
    if grace >= timeout:
        return []
    return [f"graceful_shutdown_timeout_s of {spec.get('service')} must cover its request timeout, so a "
            f"draining replica finishes what it accepted; seen {grace:g}s < request_timeout_s {timeout:g}s. "
            f"Raise graceful_shutdown_timeout_s to at least {timeout:g}."]


# -- 9 ---------------------------------------------------------------------------------
def load_shedding_configured(spec: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    queued = (spec.get("scaling") or {}).get("max_queued_requests")
    cap = int(config.get("maxQueuedRequests", 10_000))
    if queued is not None and 0 < int(queued) <= cap:
        return []
    return [f"max_queued_requests of {spec.get('service')} must be set (1..{cap}) so overload gets 503s, "
            f"not an unbounded queue; seen {queued}. Set max_queued_requests."]


# -- 10 --------------------------------------------------------------------------------
def lb_internal_unless_declared(props: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    spec = get(props, "spec", default={}) or {}
    if spec.get("type") != "LoadBalancer":
        return []
    annotations = (get(props, "metadata", default={}) or {}).get("annotations") or {}
    # Without the annotation, Kubernetes' in-tree AWS provider makes an internet-facing
    # load balancer: only an explicit "internal" is internal. Other clouds say internal
    # with their own annotation; a load balancer with none of them is public.
    scheme = annotations.get(SCHEME, "internet-facing (no scheme annotation)")
    if scheme == "internal" or any(str(annotations.get(key, "")).lower() == value.lower()
                                   for key, value in INTERNAL_ANNOTATIONS.items()):
        return []
    on_aws = any(key.startswith(AWS_LB_PREFIX) for key in annotations)
    target = "aws" if on_aws else "kubernetes"
    messages = []
    if annotations.get(PUBLIC) != "true":
        messages.append(f"load balancers must be internal unless declared public; seen scheme {scheme} without "
                        f"{PUBLIC}: \"true\". Set gpuserve:{target}.public_load_balancer: true or keep it internal"
                        + ("." if on_aws else " (your cloud's internal annotation in load_balancer_annotations, "
                           "or service_type: ClusterIP)."))
    if on_aws:
        if (config or {}).get("requireTls", True) and not annotations.get(SSL_CERT):
            messages.append("a public load balancer must terminate TLS; seen no "
                            f"{SSL_CERT} annotation. Set gpuserve:aws.tls_certificate_arn.")
    else:
        # Outside AWS gpuserve cannot tell whether the cloud terminates TLS; what it can
        # require everywhere is that a public endpoint admits only the networks listed.
        ranges = spec.get("loadBalancerSourceRanges") or []
        if not ranges:
            messages.append("a public load balancer must admit only listed networks; seen no "
                            "spec.loadBalancerSourceRanges. Set gpuserve:kubernetes.load_balancer_source_ranges.")
    return messages


AWS_LB_PREFIX = "service.beta.kubernetes.io/aws-load-balancer-"
# What makes a LoadBalancer Service internal on the clouds that say so by annotation.
INTERNAL_ANNOTATIONS = {
    "networking.gke.io/load-balancer-type": "Internal",
    "cloud.google.com/load-balancer-type": "Internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
    "service.beta.kubernetes.io/oci-load-balancer-internal": "true",
}


# -- 11 --------------------------------------------------------------------------------
def dashboard_not_public_service(props: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    port = int((config or {}).get("dashboardPort", DASHBOARD_PORT))
    spec = get(props, "spec", default={}) or {}
    # Whatever the annotations say: an "internal" load balancer still puts the dashboard
    # (which runs jobs, i.e. code) on a network, and a missing scheme means public.
    kind = spec.get("type")
    exposed = [p for p in spec.get("ports") or []
               if port in (p.get("port"), p.get("targetPort")) or p.get("targetPort") == "dashboard"]
    if kind in EXPOSING_SERVICE_TYPES and exposed:
        return [f"the Ray dashboard (port {port}) must never be exposed by a {kind} Service; seen ports "
                f"{exposed}. Remove them; reach the dashboard through the Kubernetes API (port-forward)."]
    return []


EXPOSING_SERVICE_TYPES = ("LoadBalancer", "NodePort")


def ray_head_not_exposed(props: Mapping[str, Any]) -> list[str]:
    """KubeRay makes the head's Service (dashboard, GCS, client port) from headGroupSpec:
    a LoadBalancer or NodePort one exposes them all."""
    head = (get(props, "spec", default={}) or {}).get("headGroupSpec") or {}
    kinds = [head.get("serviceType"), ((head.get("headService") or {}).get("spec") or {}).get("type")]
    bad = [k for k in kinds if k in EXPOSING_SERVICE_TYPES]
    if not bad:
        return []
    return [f"a RayCluster's head Service must stay ClusterIP: it carries the dashboard ({DASHBOARD_PORT}), "
            f"the GCS and the client port; seen headGroupSpec service type {bad[0]}. Set serviceType: ClusterIP."]


def dashboard_not_public_rollout(props: Mapping[str, Any]) -> list[str]:
    """The provider carries the dashboard token: from the operator's machine that is
    loopback (local) or a port-forward through the API server's TLS (Kubernetes), never
    plain HTTP to another host, in-cluster names included."""
    url = str(get(props, "dashboard_url", default="") or "")
    if url.startswith(f"{FORWARD_SCHEME}://"):
        return []
    host = urlparse(url).hostname or ""
    if not host or host in ("127.0.0.1", "localhost", "::1"):
        return []
    return [f"the Ray dashboard must be reached on loopback or through the Kubernetes API's port-forward, "
            f"never in plain HTTP across a network; seen {url}. On a Kubernetes target use "
            f"{FORWARD_SCHEME}://<namespace>/<raycluster>:{DASHBOARD_PORT}."]


# -- 12 --------------------------------------------------------------------------------
def ha_in_prod(props: Mapping[str, Any], prod: bool) -> list[str]:
    spec = get(props, "spec", default={}) or {}
    redis = (spec.get("gcsFaultToleranceOptions") or {}).get("redisAddress")
    if not prod or redis:
        return []
    return ["prod RayClusters must have GCS fault tolerance on an external Redis; seen no "
            "gcsFaultToleranceOptions.redisAddress. Set gpuserve:aws.ha: true and redis_address."]


# -- 13 --------------------------------------------------------------------------------
def secrets_are_secret(resource_type: str, props: Mapping[str, Any],
                       config: Mapping[str, Any] | None = None) -> list[str]:
    words = tuple(w.lower() for w in (config or {}).get("sensitiveKeys", SENSITIVE))
    leaks = sorted(set(_plaintext_secrets(props, "", words)))
    if not leaks:
        return []
    return [f"tokens and passwords must reach {resource_type} only as Pulumi secrets; plaintext at "
            f"{', '.join(leaks)}. Wrap them with pulumi.Output.secret() or `pulumi config set --secret`."]


def _plaintext_secrets(value: Any, path: str, words: tuple[str, ...] = SENSITIVE) -> Iterable[str]:
    """Paths of plaintext secrets: under a key named like one, in an env entry named like
    one ({name, value}), after a command-line flag named like one, or a string that looks
    like one (SECRET_VALUES) wherever it is."""
    def sensitive(name: Any) -> bool:
        lowered = str(name).lower()
        return any(word in lowered for word in words) and not lowered.endswith(("name", "path", "ref", "secretname"))

    if isinstance(value, Mapping):
        if sensitive(value.get("name", "")) and isinstance(value.get("value"), str) \
                and not isinstance(value["value"], Secret) and value["value"]:
            yield f"{path}.value ({value['name']})"  # a container's env entry
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if sensitive(key):
                if _has_plain_string(item):
                    yield child
                continue
            yield from _plaintext_secrets(item, child, words)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            flag = value[i - 1] if i else None
            if isinstance(flag, str) and flag.startswith("-") and "=" not in flag and sensitive(flag) \
                    and isinstance(item, str) and not isinstance(item, Secret) and item:
                yield f"{path}[{i}] (after {flag})"
                continue
            yield from _plaintext_secrets(item, f"{path}[{i}]", words)
    elif isinstance(value, str) and not isinstance(value, Secret) and value not in UNKNOWN_VALUES:
        for what, pattern in SECRET_VALUES:
            if pattern.search(value):
                yield f"{path} ({what})"
                break


def _has_plain_string(value: Any) -> bool:
    if isinstance(value, Secret):
        return False
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, Mapping):
        if "valueFrom" in value or "secretKeyRef" in value or "secretName" in value:
            # A reference to a Kubernetes Secret (an env source, a volume), not the value.
            return False
        return any(_has_plain_string(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_plain_string(v) for v in value)
    return False
