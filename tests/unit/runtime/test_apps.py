"""Rendered Serve configs are accepted by Ray's own ServeDeploySchema."""

from __future__ import annotations

from runtime import apps
from runtime.serve_api import validate_deploy_config
from runtime.spec import ScalingSpec, ServiceSpec, VersionSpec

VERSION = VersionSpec(version="v2", import_path="app:app", artifact="models/v2.npz", num_gpus=0.5)
SCALING = ScalingSpec(num_replicas=4, max_ongoing_requests=8, max_queued_requests=16, user_config={"temperature": 2})
SPEC = ServiceSpec(service="llm", route_prefix="/llm", version=VERSION, scaling=SCALING, http_url="http://x")


def test_version_and_router_apps_validate_against_serve_deploy_schema():
    config = {
        "http_options": {"host": "127.0.0.1", "port": 18000},
        "applications": [apps.router_app(SPEC, "v1", "v2", {"v1": 75, "v2": 25}),
                         apps.version_app("llm", VERSION, SCALING, 1)],
    }
    assert validate_deploy_config(config) is config


def test_a_version_app_is_named_service_dash_dash_version_on_its_hidden_prefix():
    app = apps.version_app("llm", VERSION, SCALING, 3)
    assert (app["name"], app["route_prefix"], apps.app_replicas(app)) == ("llm--v2", "/_v/llm/v2", 3)


def test_a_user_app_keeps_its_own_deployment_names_and_gets_no_args_unless_given():
    version = VERSION.model_copy(update={"deployment": "TextGen",
                                         "deployments": {"Tokenizer": {"num_replicas": 2}}})
    app = apps.version_app("llm", version, SCALING, 3)
    assert [d["name"] for d in app["deployments"]] == ["TextGen", "Tokenizer"]
    assert app["deployments"][1] == {"num_replicas": 2, "name": "Tokenizer"}
    assert "args" not in app
    # The live state names the scaled deployment, so its replicas are read without the spec.
    assert apps.app_replicas(app) == 3
    assert validate_deploy_config({"applications": [app]})


def test_options_of_other_deployments_survive_pulumis_numbers_as_floats():
    version = VERSION.model_copy(update={"deployments": {"Greeter": {"num_replicas": 1.0,
                                                                     "ray_actor_options": {"num_cpus": 0.0}}}})
    app = apps.version_app("llm", version, SCALING, 2)
    assert app["deployments"][1]["num_replicas"] == 1
    assert validate_deploy_config({"applications": [app]})


def test_the_code_ships_as_the_uploaded_package_and_the_app_learns_who_it_is():
    version = VERSION.model_copy(update={"working_dir": "s3://bucket/extra.zip", "pip": ["numpy==2.1.0"]})
    env = apps.version_app("llm", version, SCALING, 1, code_uri="gcs://_ray_pkg_abc.zip")["runtime_env"]
    assert env["working_dir"] == "gcs://_ray_pkg_abc.zip"
    assert env["py_modules"] == ["s3://bucket/extra.zip"]
    assert env["pip"] == ["numpy==2.1.0"]
    assert {k: env["env_vars"][k] for k in ("GPUSERVE_SERVICE", "GPUSERVE_VERSION", "GPUSERVE_ARTIFACT")} == {
        "GPUSERVE_SERVICE": "llm", "GPUSERVE_VERSION": "v2", "GPUSERVE_ARTIFACT": "models/v2.npz"}
    assert "PYTHONPATH" not in env["env_vars"]


def test_a_remote_uri_alone_is_the_working_dir():
    version = VERSION.model_copy(update={"working_dir": "https://example.com/code.zip"})
    assert apps.version_app("llm", version, SCALING, 1)["runtime_env"]["working_dir"] == "https://example.com/code.zip"


def test_a_version_app_deployed_by_0_1_gets_its_hidden_prefix_at_the_next_write():
    legacy = {"name": "llm--v1", "route_prefix": None, "deployments": []}
    assert apps.with_hidden_prefix("llm", "llm--v1", legacy)["route_prefix"] == "/_v/llm/v1"
    assert apps.with_hidden_prefix("other", "llm--v1", legacy) is legacy


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


def test_the_routing_record_takes_no_traffic_and_carries_the_table_in_place():
    router = apps.router_app(SPEC, "v1", None, {"v1": 100})
    assert router["route_prefix"] is None and "args" not in router
    table = router["deployments"][0]["user_config"]
    assert (table["route_prefix"], table["request_timeout_s"], table["max_body_bytes"]) == (
        "/llm", SPEC.request_timeout_s, 10 << 20)


def test_a_graphs_capacity_is_its_scaled_deployments_replicas_not_every_deployments():
    from runtime.serve_api import AppState, DeploymentState, ReplicaState

    version = VERSION.model_copy(update={"deployment": "Api", "deployments": {"Greeter": {"num_replicas": 1}}})
    config = apps.version_app("llm", version, SCALING, 2)

    def deployment(name: str, n: int) -> DeploymentState:
        return DeploymentState(name, "HEALTHY", "", n, tuple(ReplicaState(f"{name}{i}", "RUNNING") for i in range(n)))

    app = AppState("llm--v2", "RUNNING", "", config, {"Api": deployment("Api", 2), "Greeter": deployment("Greeter", 1)})
    assert (app.running_replicas, sorted(app.replica_ids)) == (2, ["Api0", "Api1"])
    # Before Serve lists the scaled deployment, nothing of it runs, whatever else does.
    assert AppState("llm--v2", "DEPLOYING", "", config, {"Greeter": deployment("Greeter", 1)}).running_replicas == 0


def test_the_legacy_app_unpickles_in_a_process_that_has_only_the_project_on_its_path(tmp_path):
    """Serve pickles a deployment's class when it builds the app and unpickles it in each
    replica: 0.1.0's app must load there with nothing but the project importable."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)}
    pickled = tmp_path / "model.pickle"
    subprocess.run([sys.executable, "-c", "import pickle, sys, runtime.app.model as m; "
                    f"open({str(pickled)!r}, 'wb').write(pickle.dumps(m.TinyModel))"],
                   env=env, cwd=tmp_path, check=True)
    loaded = subprocess.run([sys.executable, "-c", f"import pickle; print(pickle.load(open({str(pickled)!r}, 'rb')))"],
                            env=env, cwd=tmp_path, check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == "<class 'runtime.app.legacy.TinyModel'>"
