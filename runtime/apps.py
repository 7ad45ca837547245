"""Render Serve application configs for a service. Pure: dicts in, dicts out.

Each version is its own app `<service>--<version>` on a hidden route prefix
`/_v/<service>/<version>` of the Serve proxy. The routing record, an app named after the
service with no route prefix, carries the table in its Router deployment's user_config:
primary, canary, weights, the public route prefix. The splitter (splitter/, Go) reads it
from Serve and serves the public prefix; Serve stays the one source of truth.
"""

from __future__ import annotations

from runtime.spec import ScalingSpec, ServiceSpec, VersionSpec
from traffic.protocol import ROUTER_DEPLOYMENT, ROUTER_IMPORT_PATH, version_app_name  # noqa: F401 - re-exported

MODEL_DEPLOYMENT = "Model"  # the scaled deployment's name unless the service names another
# Which deployment of a version app the rollout scales, recorded in the app itself so
# that the live state can be read without the spec.
SCALED_DEPLOYMENT_ENV = "GPUSERVE_DEPLOYMENT"


def hidden_prefix(service: str, version: str) -> str:
    """Where a version app listens on the Serve proxy; only the splitter sends there."""
    return f"/_v/{service}/{version}"


def service_of(app_name: str) -> str:
    return app_name.split("--", 1)[0]


def version_of(app_name: str) -> str | None:
    return app_name.split("--", 1)[1] if "--" in app_name else None


def version_app(service: str, version: VersionSpec, scaling: ScalingSpec, replicas: int,
                code_uri: str | None = None) -> dict:
    """The app config for one version at `replicas` replicas (autoscaling: bounds scaled
    so that max equals `replicas`, which is what the planner budgets for). `code_uri` is
    the uploaded package of the version's code_dir (runtime/packaging.py)."""
    scaled: dict = {
        **_serve_ints(version.deployments.get(version.deployment, {})),
        "name": version.deployment,
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "max_queued_requests": scaling.max_queued_requests,
        "graceful_shutdown_timeout_s": scaling.graceful_shutdown_timeout_s,
        "health_check_period_s": scaling.health_check_period_s,
        "health_check_timeout_s": scaling.health_check_timeout_s,
        "ray_actor_options": {"num_gpus": version.num_gpus, "num_cpus": version.num_cpus},
    }
    if scaling.autoscaling:
        scaled["autoscaling_config"] = autoscaling_bounds(scaling, replicas)
    else:
        scaled["num_replicas"] = replicas
    if scaling.user_config is not None:
        scaled["user_config"] = scaling.user_config
    others = [{**_serve_ints(options), "name": name} for name, options in sorted(version.deployments.items())
              if name != version.deployment]
    env_vars = {**version.env_vars, "GPUSERVE_SERVICE": service, "GPUSERVE_VERSION": version.version,
                SCALED_DEPLOYMENT_ENV: version.deployment}
    if version.artifact:
        env_vars["GPUSERVE_ARTIFACT"] = version.artifact
    app = {
        "name": version_app_name(service, version.version),
        "route_prefix": hidden_prefix(service, version.version),
        "import_path": version.import_path,
        "runtime_env": runtime_env(version, code_uri, env_vars),
        "deployments": [scaled, *others],
    }
    if version.args is not None:
        app["args"] = version.args
    return app


# Serve's integer options: Pulumi's wire format carries every number as a float, and Serve
# refuses `num_replicas: 1.0`.
_INT_OPTIONS = ("num_replicas", "max_ongoing_requests", "max_queued_requests")


def _serve_ints(options: dict) -> dict:
    return {k: int(v) if k in _INT_OPTIONS and isinstance(v, float) and v.is_integer() else v
            for k, v in options.items()}


def runtime_env(version: VersionSpec, code_uri: str | None, env_vars: dict[str, str]) -> dict:
    env: dict = {"env_vars": env_vars}
    remote = version.working_dir
    if code_uri:
        env["working_dir"] = code_uri
        if remote:
            env["py_modules"] = [remote]
    elif remote:
        env["working_dir"] = remote
    if version.pip:
        env["pip"] = list(version.pip)
    return env


def autoscaling_bounds(scaling: ScalingSpec, replicas: int) -> dict:
    """Scale min/max by the same share as `replicas` / N, as Anyscale does: a canary at
    25% of capacity gets 25% of both bounds, never below one replica."""
    n = scaling.replicas
    share = replicas / n
    upper = max(1, replicas)
    lower = max(1, min(upper, round((scaling.min_replicas or 1) * share)))
    return {
        "min_replicas": lower,
        "max_replicas": upper,
        "initial_replicas": upper,
        "target_ongoing_requests": scaling.target_ongoing_requests or 2.0,
    }


def router_app(spec: ServiceSpec, primary: str, canary: str | None, weights: dict[str, float]) -> dict:
    """The routing record: no route prefix, no traffic; its user_config is the table."""
    return {
        "name": spec.service,
        "route_prefix": None,
        "import_path": ROUTER_IMPORT_PATH,
        "deployments": [
            {
                "name": ROUTER_DEPLOYMENT,
                "num_replicas": 1,
                "ray_actor_options": {"num_cpus": 0},
                # user_config is applied in place (reconfigure): a weight change restarts nothing.
                "user_config": {
                    "primary": primary,
                    "canary": canary,
                    "weights": {v: w for v, w in sorted(weights.items()) if w > 0},
                    "route_prefix": spec.route_prefix,
                    "request_timeout_s": spec.request_timeout_s,
                    "max_body_bytes": spec.max_body_bytes,
                    "retry_budget_percent": spec.retry_budget_percent,
                    "retry_min_per_second": spec.retry_min_per_second,
                    "retry_methods": list(spec.retry_methods),
                },
            }
        ],
    }


def router_weights(app_config: dict | None) -> tuple[str | None, str | None, dict[str, float]]:
    """Read (primary, canary, weights) back from a live routing record."""
    if not app_config:
        return None, None, {}
    for deployment in app_config.get("deployments", []):
        if deployment.get("name") == ROUTER_DEPLOYMENT:
            user = deployment.get("user_config") or {}
            weights = {v: float(w) for v, w in (user.get("weights") or {}).items()}
            return user.get("primary"), user.get("canary"), weights
    return None, None, {}


def scaled_deployment(app_config: dict) -> str:
    env = (app_config.get("runtime_env") or {}).get("env_vars") or {}
    return env.get(SCALED_DEPLOYMENT_ENV, MODEL_DEPLOYMENT)


def app_replicas(app_config: dict) -> int:
    """Declared replicas of a version app config (autoscaling: its max)."""
    name = scaled_deployment(app_config)
    for deployment in app_config.get("deployments", []):
        if deployment.get("name") == name:
            if "num_replicas" in deployment:
                return int(deployment["num_replicas"])
            return int(deployment.get("autoscaling_config", {}).get("max_replicas", 0))
    return 0


def with_hidden_prefix(service: str, name: str, config: dict) -> dict:
    """A version app of `service` as the splitter needs it: on its hidden prefix. Apps
    deployed by 0.1.0 had none; they get one at the next write, replicas untouched."""
    version = version_of(name)
    if service_of(name) != service or version is None or config.get("route_prefix"):
        return config
    return {**config, "route_prefix": hidden_prefix(service, version)}
