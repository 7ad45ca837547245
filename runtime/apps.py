"""Render Serve application configs for a service. Pure: dicts in, dicts out.

Each version is its own app `<service>--<version>` with no route prefix; the Router
app, named after the service, owns the route prefix and splits traffic by weight.
"""

from __future__ import annotations

from runtime.spec import ScalingSpec, ServiceSpec, VersionSpec
from traffic.protocol import ROUTER_DEPLOYMENT, ROUTER_IMPORT_PATH, version_app_name  # noqa: F401 - re-exported

MODEL_DEPLOYMENT = "Model"


def service_of(app_name: str) -> str:
    return app_name.split("--", 1)[0]


def version_of(app_name: str) -> str | None:
    return app_name.split("--", 1)[1] if "--" in app_name else None


def version_app(service: str, version: VersionSpec, scaling: ScalingSpec, replicas: int) -> dict:
    """The app config for one version at `replicas` replicas (autoscaling: bounds scaled
    so that max equals `replicas`, which is what the planner budgets for)."""
    deployment: dict = {
        "name": MODEL_DEPLOYMENT,
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "max_queued_requests": scaling.max_queued_requests,
        "graceful_shutdown_timeout_s": scaling.graceful_shutdown_timeout_s,
        "health_check_period_s": scaling.health_check_period_s,
        "health_check_timeout_s": scaling.health_check_timeout_s,
        "ray_actor_options": {"num_gpus": version.num_gpus, "num_cpus": version.num_cpus},
    }
    if scaling.autoscaling:
        deployment["autoscaling_config"] = autoscaling_bounds(scaling, replicas)
    else:
        deployment["num_replicas"] = replicas
    if scaling.user_config is not None:
        deployment["user_config"] = scaling.user_config
    env_vars = dict(version.env_vars)
    if version.working_dir:
        env_vars["PYTHONPATH"] = version.working_dir
    return {
        "name": version_app_name(service, version.version),
        "route_prefix": None,
        "import_path": version.import_path,
        "args": {"service": service, "version": version.version, "artifact": version.artifact},
        "runtime_env": {"env_vars": env_vars} if env_vars else {},
        "deployments": [deployment],
    }


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
    return {
        "name": spec.service,
        "route_prefix": spec.route_prefix,
        "import_path": ROUTER_IMPORT_PATH,
        "args": {"service": spec.service},
        "deployments": [
            {
                "name": ROUTER_DEPLOYMENT,
                "num_replicas": 1,
                "max_ongoing_requests": 1000,
                "ray_actor_options": {"num_cpus": 0},
                # Everything the router may change lives here: user_config is applied
                # in place (reconfigure), args would restart the router replica.
                "user_config": {
                    "primary": primary,
                    "canary": canary,
                    "weights": {v: w for v, w in sorted(weights.items()) if w > 0},
                    "request_timeout_s": spec.request_timeout_s,
                },
            }
        ],
    }


def router_weights(app_config: dict | None) -> tuple[str | None, str | None, dict[str, float]]:
    """Read (primary, canary, weights) back from a live router app config."""
    if not app_config:
        return None, None, {}
    for deployment in app_config.get("deployments", []):
        if deployment.get("name") == ROUTER_DEPLOYMENT:
            user = deployment.get("user_config") or {}
            weights = {v: float(w) for v, w in (user.get("weights") or {}).items()}
            return user.get("primary"), user.get("canary"), weights
    return None, None, {}


def app_replicas(app_config: dict) -> int:
    """Declared replicas of a version app config (autoscaling: its max)."""
    for deployment in app_config.get("deployments", []):
        if deployment.get("name") == MODEL_DEPLOYMENT:
            if "num_replicas" in deployment:
                return int(deployment["num_replicas"])
            return int(deployment.get("autoscaling_config", {}).get("max_replicas", 0))
    return 0
