"""Rendered Serve configs are accepted by Ray's own ServeDeploySchema."""

from __future__ import annotations

from runtime import apps
from runtime.serve_api import validate_deploy_config
from runtime.spec import ScalingSpec, ServiceSpec, VersionSpec

VERSION = VersionSpec(version="v2", import_path="runtime.app.model:build", artifact="/m/v2.npz", num_gpus=0.5)
SCALING = ScalingSpec(num_replicas=4, max_ongoing_requests=8, max_queued_requests=16, user_config={"temperature": 2})
SPEC = ServiceSpec(service="llm", route_prefix="/llm", version=VERSION, scaling=SCALING, http_url="http://x")


def test_version_and_router_apps_validate_against_serve_deploy_schema():
    config = {
        "http_options": {"host": "127.0.0.1", "port": 18000},
        "applications": [apps.router_app(SPEC, "v1", "v2", {"v1": 75, "v2": 25}),
                         apps.version_app("llm", VERSION, SCALING, 1)],
    }
    assert validate_deploy_config(config) is config


def test_a_version_app_is_named_service_dash_dash_version_without_a_route():
    app = apps.version_app("llm", VERSION, SCALING, 3)
    assert (app["name"], app["route_prefix"], apps.app_replicas(app)) == ("llm--v2", None, 3)


def test_fractional_gpus_reach_ray_actor_options():
    app = apps.version_app("llm", VERSION, SCALING, 1)
    assert app["deployments"][0]["ray_actor_options"]["num_gpus"] == 0.5


def test_router_weights_round_trip_through_its_config():
    router = apps.router_app(SPEC, "v1", "v2", {"v1": 66.6667, "v2": 33.3333})
    assert apps.router_weights(router) == ("v1", "v2", {"v1": 66.6667, "v2": 33.3333})


def test_autoscaling_bounds_scale_with_the_canary_share():
    scaling = ScalingSpec(min_replicas=2, max_replicas=8, target_ongoing_requests=2)
    assert apps.autoscaling_bounds(scaling, 2) == {
        "min_replicas": 1, "max_replicas": 2, "initial_replicas": 2, "target_ongoing_requests": 2}
    app = apps.version_app("llm", VERSION, scaling, 8)
    assert validate_deploy_config({"applications": [app]})


def test_the_request_timeout_reaches_the_router_in_place_not_through_a_restart():
    router = apps.router_app(SPEC, "v1", None, {"v1": 100})
    assert router["args"] == {"service": "llm"}
    assert router["deployments"][0]["user_config"]["request_timeout_s"] == SPEC.request_timeout_s
