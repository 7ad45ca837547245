"""The models of a service, one per concept, shared by the stack config
(components/config.py), the runtime and the policies.

Whether changing a field restarts replicas is declared on the field itself:
- HEAVY: new replicas are needed, so the change rolls out as a new version
  (`VersionSpec`: the build and its actor options);
- LIGHT: Serve applies it in place, no replica restarts (`ScalingSpec`, the route,
  the request timeout);
- STRATEGY: how the next rollout runs (`RolloutStrategy`, `GateConfig`);
- INERT: facts carried for reports and policies; a change alters nothing live.
`classify_change` derives a change's kind from these marks. Nothing here does I/O.
"""

from __future__ import annotations

import re

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HEAVY, LIGHT, STRATEGY, INERT = "heavy", "light", "strategy", "inert"
# Ordered from the strongest: a change is as heavy as its heaviest field.
CHANGE_KINDS = (HEAVY, LIGHT, STRATEGY, INERT)


def change(kind: str, default: Any = ..., **constraints: Any) -> Any:
    """A model field whose change is of `kind`."""
    return Field(default, json_schema_extra={"change": kind}, **constraints)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProbeRequest(_Frozen):
    """The request a gate sends to each version, pinned with `x-serve-version`. Any
    answer below 400 counts as served. Point it at a route of your app that exercises
    the model, e.g. POST /generate with a small body, or at a health route."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: str = Field("/", pattern=r"^/[^\s#]*$", max_length=2048)
    json_body: Any = None  # sent as JSON when set
    body: str | None = Field(None, max_length=1 << 20)  # sent as is when set
    headers: dict[str, str] = {}
    # The statuses that count as served; unset: any answer below 400.
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(None, min_length=1)

    def served(self, status: int) -> bool:
        return status in self.expected_status if self.expected_status else status < 400


# Built-in Prometheus queries over Ray Serve's own metrics (runtime/prometheus.py holds
# their text); a check names one of these, or brings its own `query`.
BUILTIN_QUERIES = ("error-rate", "latency-p95-ms", "latency-p50-ms", "request-rate")
# What a query template may use (jinja2): the service, the judged version and its Serve
# app, the primary's and the canary's, and the window as a PromQL duration ("10s").
QUERY_VARIABLES = ("service", "version", "app", "primary", "primary_app", "canary", "canary_app", "window")


class MetricCheck(_Frozen):
    """One Prometheus check, like Flagger's MetricTemplate with its thresholdRange: the
    query's value for the canary must lie within [min, max]. No value (no traffic yet,
    or nothing scraped) is not a verdict: probes fill in at the end of the bake."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    template: Literal[BUILTIN_QUERIES] | None = None  # type: ignore[valid-type]
    query: str | None = Field(None, min_length=1, max_length=8192)
    min: float | None = None
    max: float | None = None

    @field_validator("query")
    @classmethod
    def _template(cls, query: str | None) -> str | None:
        if query is not None:
            import jinja2
            from jinja2 import meta

            try:
                parsed = jinja2.Environment().parse(query)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"not a valid template: {exc.message} (line {exc.lineno})") from None
            unknown = sorted(meta.find_undeclared_variables(parsed) - set(QUERY_VARIABLES))
            if unknown:
                raise ValueError(f"unknown variable {', '.join(unknown)}; known: {', '.join(QUERY_VARIABLES)}")
        return query

    @model_validator(mode="after")
    def _complete(self) -> "MetricCheck":
        if (self.template is None) == (self.query is None):
            raise ValueError(f"give exactly one of template ({', '.join(BUILTIN_QUERIES)}) or query")
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class PrometheusGate(_Frozen):
    """Gates over a Prometheus-compatible server's view of the traffic (e.g. one scraping
    Ray's metrics pages). Checks run at every evaluation, like the splitter's analysis."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=2048)
    checks: list[MetricCheck] = Field(
        default_factory=lambda: [MetricCheck(name="error-rate", template="error-rate", max=0.01)], min_length=1)
    # The query window; unset: the gate's window_seconds. Prometheus' rate() wants at
    # least two scrapes of fresh values in it: allow for Ray's export interval.
    window_seconds: float | None = Field(None, ge=1.0, le=3600.0)
    timeout_seconds: float = Field(5.0, gt=0.0, le=60.0)
    # Queries that fail (server away, timeouts) this many evaluations in a row stop the
    # rollout: one lost scrape must not roll back a good version, a blind gate must not pass.
    max_query_failures: int = Field(3, ge=1, le=1000)
    headers: dict[str, str] = {}  # e.g. an Authorization header for a hosted Prometheus

    @field_validator("checks")
    @classmethod
    def _unique(cls, checks: list[MetricCheck]) -> list[MetricCheck]:
        names = [c.name for c in checks]
        if len(names) != len(set(names)):
            raise ValueError(f"check names must be unique: {names}")
        return checks


class GateConfig(_Frozen):
    """Health gates evaluated after each wave's bake."""

    probe: ProbeRequest = change(STRATEGY, ProbeRequest())
    enabled: bool = change(STRATEGY, True)
    min_success_rate: float = change(STRATEGY, 0.99, ge=0.0, le=1.0)
    # Canary p95 latency must stay within this multiple of the primary's p95.
    max_latency_ratio: float = change(STRATEGY, 2.0, gt=0.0)
    # Small absolute floor so sub-millisecond noise on a warm primary cannot fail a gate.
    latency_floor_ms: float = change(STRATEGY, 50.0, ge=0.0)
    min_probes: int = change(STRATEGY, 20, ge=1, le=10_000)
    probe_concurrency: int = change(STRATEGY, 4, ge=1, le=64)
    # Real traffic (runtime/analysis.py): judged every `evaluate_every_seconds` through the
    # bake over the last `window_seconds`; probes fill in when the canary had fewer than
    # `min_samples` requests in the window.
    window_seconds: float = change(STRATEGY, 10.0, gt=0.0, le=3600.0)
    evaluate_every_seconds: float = change(STRATEGY, 1.0, gt=0.0, le=60.0)
    min_samples: int = change(STRATEGY, 20, ge=1, le=1_000_000)
    # The canary fails on latency when it is slower than the primary by a one-sided
    # Mann-Whitney U test at this p-value AND its median is slower by more than the slack:
    latency_p_value: float = change(STRATEGY, 0.001, gt=0.0, lt=1.0)
    latency_slack_ms: float = change(STRATEGY, 25.0, ge=0.0)
    # ... and by more than this share of the primary's median (slow, wide services).
    latency_slack_ratio: float = change(STRATEGY, 0.25, ge=0.0, le=10.0)
    gate_client_errors: bool = change(STRATEGY, False)  # count 4xx answers as errors
    # Where real traffic is judged from: the splitter's own samples (where its admin
    # sockets are reachable: the local target), a Prometheus server's queries, or both
    # ("auto": the splitter, plus Prometheus when `prometheus` is set).
    source: Literal["auto", "splitter", "prometheus"] = change(STRATEGY, "auto")
    prometheus: PrometheusGate | None = change(STRATEGY, None)

    @model_validator(mode="after")
    def _source(self) -> "GateConfig":
        if self.source == "prometheus" and self.prometheus is None:
            raise ValueError("source 'prometheus' needs prometheus.url (and checks)")
        return self

    @property
    def uses_splitter(self) -> bool:
        return self.source in ("auto", "splitter")

    @property
    def uses_prometheus(self) -> bool:
        return self.prometheus is not None and self.source in ("auto", "prometheus")


class Webhook(_Frozen):
    """Where a rollout's events go (runtime/notify.py): a JSON POST per event, or Slack's
    incoming-webhook payload with `format: slack`."""

    url: str = Field(max_length=2048)
    format: Literal["json", "slack"] = "json"
    # Only these events (start, wave, rollback, done); all when unset.
    events: list[Literal["start", "wave", "rollback", "done"]] | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ValueError("an http:// or https:// URL")
        return url

    def redacted(self) -> str:
        """The URL without its path and query (a Slack hook's path is its secret)."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}/…"


class RolloutStrategy(_Frozen):
    """How heavyweight changes roll out. Defaults follow Anyscale's published ones."""

    max_surge_percent: int = change(STRATEGY, 25, ge=1, le=100)
    # Explicit canary traffic percentages per wave, e.g. [10, 50, 100]; each is still
    # capped by the canary's ready share of capacity.
    traffic_steps: list[Annotated[int, Field(ge=1, le=100)]] | None = change(STRATEGY, None)
    bake_seconds: float = change(STRATEGY, 30.0, ge=0.0, le=86_400.0)
    deadline_minutes: float = change(STRATEGY, 120.0, gt=0.0, le=7 * 24 * 60.0)
    # Longest wait for replicas to become ready in one step before rolling back.
    step_timeout_seconds: float = change(STRATEGY, 600.0, gt=0.0, le=86_400.0)
    # Hold the canary at this traffic share until the next `pulumi up`; 100 completes, 0 aborts.
    canary_percent: int | None = change(STRATEGY, None, ge=0, le=100)
    gates: GateConfig = change(STRATEGY, GateConfig())
    # Webhooks for the rollout's events; they never hold it up (runtime/notify.py).
    notify: list[Webhook] = change(STRATEGY, [], max_length=10)

    @field_validator("traffic_steps")
    @classmethod
    def _increasing(cls, steps: list[int] | None) -> list[int] | None:
        if steps and any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("strictly increasing percentages, e.g. [10, 50, 100]")
        return steps


class VersionSpec(_Frozen):
    """One immutable build: a change of any heavy field needs new replicas.

    A version label names exactly one build: `code_hash` (the files of `code_dir`) and
    `artifact_hash` (the artifact's bytes, or its URI's text). The rollout refuses the
    same label with other hashes (components/rollout.py)."""

    version: str = change(HEAVY)
    import_path: str = change(HEAVY)
    artifact: str | None = change(HEAVY, None)
    # The code: a local directory, shipped content-addressed through the cluster's
    # package API as the working_dir (runtime/packaging.py) ...
    code_dir: str | None = change(INERT, None)
    code_hash: str | None = change(HEAVY, None)
    artifact_hash: str | None = change(HEAVY, None)
    # ... and/or a remote URI (s3://, gs://, https://...zip): the working_dir when there is
    # no code_dir, else one of py_modules.
    working_dir: str | None = change(HEAVY, None)
    pip: list[str] = change(HEAVY, [])
    env_vars: dict[str, str] = change(HEAVY, {})
    num_gpus: float = change(HEAVY, 1.0)
    num_cpus: float = change(HEAVY, 0.0)
    # The deployment that holds the GPU replicas: the rollout scales this one.
    deployment: str = change(HEAVY, "Model")
    # Options of the app's other deployments (a graph), by the user's names; applied in place.
    deployments: dict[str, dict[str, Any]] = change(LIGHT, {})
    # Serve `args` for a builder function; None for an import path naming an Application.
    args: dict[str, Any] | None = change(HEAVY, None)


class ScalingSpec(_Frozen):
    """What Serve reconfigures in place."""

    num_replicas: int | None = change(LIGHT, None)
    min_replicas: int | None = change(LIGHT, None)
    max_replicas: int | None = change(LIGHT, None)
    target_ongoing_requests: float | None = change(LIGHT, None)
    max_ongoing_requests: int = change(LIGHT, 8)
    max_queued_requests: int = change(LIGHT, 64)
    graceful_shutdown_timeout_s: float = change(LIGHT, 10.0)
    health_check_period_s: float = change(LIGHT, 10.0)
    health_check_timeout_s: float = change(LIGHT, 30.0)
    user_config: dict[str, Any] | None = change(LIGHT, None)

    @property
    def autoscaling(self) -> bool:
        return self.num_replicas is None

    @property
    def replicas(self) -> int:
        """N: the replica count the planner works with (autoscaling: max_replicas)."""
        return self.num_replicas if self.num_replicas is not None else int(self.max_replicas or 1)


class ServiceSpec(_Frozen):
    service: str = change(HEAVY)
    pool: str | None = change(INERT, None)  # the node pool it runs on (for policies and reports)
    environment: str | None = change(INERT, None)  # gpuserve:environment, for the policy pack
    route_prefix: str = change(LIGHT)
    request_timeout_s: float = change(LIGHT, 30.0)
    # The splitter answers 413 above this body size.
    max_body_bytes: int = change(LIGHT, 10 << 20)
    # The splitter's fallback (splitter/fallback.go): a weighted request that fails on the
    # canary before any byte is retried once on the primary, within this budget (extra
    # requests as a share of the service's requests over 10 s, plus retry_min_per_second;
    # a share of 0 turns it off), for these methods (empty: all).
    retry_budget_percent: float = change(LIGHT, 20.0, ge=0.0, le=100.0)
    retry_min_per_second: float = change(LIGHT, 10.0, ge=0.0)
    retry_methods: list[str] = change(LIGHT, [])
    version: VersionSpec
    scaling: ScalingSpec
    rollout: RolloutStrategy = RolloutStrategy()
    http_url: str = change(LIGHT, description="the public (splitter) base URL, for probes")
    # Admin sockets of every local splitter instance: a weight change counts as done
    # when each of them serves it. Empty: check through the public URL instead.
    splitter_admins: list[str] = change(INERT, [])
    # Serve's http_options when this service is the first to start Serve (k8s target);
    # None keeps whatever the running Serve instance has (local target).
    http_options: dict[str, Any] | None = change(INERT, None)
    # Capacity facts for the policy pack ({pool_gpus, others_steady_gpus}); unused here.
    capacity: dict[str, float] | None = change(INERT, None)

    def digest(self) -> str:
        """This service's declared config, in 16 hex digits: what the user wrote, not where
        the cluster happens to be (URLs, sockets) nor what other services take."""
        import hashlib
        import json

        # Where notifications go is not what rolls out: changing it keeps a rollout's identity.
        declared = self.model_dump(mode="json", exclude={"http_url": True, "splitter_admins": True, "capacity": True,
                                                         "http_options": True, "rollout": {"notify"}})
        return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()[:16]


def change_kind(model: type[BaseModel], field: str) -> str:
    """The declared kind of a change of `model.field` (a nested model's own marks win)."""
    extra = model.model_fields[field].json_schema_extra
    if isinstance(extra, dict) and extra.get("change") in CHANGE_KINDS:
        return extra["change"]
    raise TypeError(f"{model.__name__}.{field} declares no change kind")


def fields_of_kind(model: type[BaseModel], kind: str) -> tuple[str, ...]:
    return tuple(name for name in model.model_fields if change_kind(model, name) == kind)


def classify_change(old: dict, new: dict) -> tuple[str, list[str]]:
    """('none' | 'heavy' | 'light' | 'strategy', changed field paths) between two
    ServiceSpec dicts. Paths are `section.field` inside a nested model (`version.artifact`),
    else the field's name. Inert fields are not changes."""
    found: dict[str, list[str]] = {kind: [] for kind in CHANGE_KINDS}
    for name, info in ServiceSpec.model_fields.items():
        nested = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) else None
        if nested is None:
            if old.get(name) != new.get(name):
                found[change_kind(ServiceSpec, name)].append(name)
            continue
        before, after = old.get(name) or {}, new.get(name) or {}
        for field in nested.model_fields:
            if before.get(field) != after.get(field):
                found[change_kind(nested, field)].append(f"{name}.{field}")
    for kind in (HEAVY, LIGHT, STRATEGY):
        if found[kind]:
            stronger_first = [f for k in CHANGE_KINDS[CHANGE_KINDS.index(kind):] if k != INERT for f in found[k]]
            return kind, stronger_first
    return "none", []
