"""The ModelRollout provider's pure parts: what changed, what preview prints, the drift it
notices, and the versions it refuses to mutate."""

from __future__ import annotations

import pytest

from components import rollout
from runtime import apps
from runtime.decisions import decide
from runtime.serve_api import AppState, DeploymentState, ReplicaState, ServeState
from runtime.spec import ServiceSpec

N = 4


def spec(version: str = "v1", **changes) -> dict:
    document = {
        "service": "llm", "route_prefix": "/llm", "http_url": "http://127.0.0.1:1",
        "version": {"version": version, "import_path": "m:app", "artifact": f"{version}.npz"},
        "scaling": {"num_replicas": N},
        "rollout": {"max_surge_percent": 25},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        document[section] = {**document[section], name: value}
    return ServiceSpec.model_validate(document).model_dump()


def props(spec_: dict, primary="v1", canary=None, weights=None, replicas=None) -> dict:
    return {"spec": spec_, "http_url": "http://127.0.0.1:1", "primary_version": primary, "canary_version": canary,
            "weights": weights or {primary: 100.0}, "replicas": replicas or {primary: N}}


# ------------------------------------------------------------------ describe_change
@pytest.mark.parametrize("changes,kind,fields", [
    ({}, "none", []),
    ({"version__version": "v2"}, "heavy", ["version.version"]),
    ({"version__num_gpus": 0.5}, "heavy", ["version.num_gpus"]),
    ({"scaling__max_queued_requests": 9}, "light", ["scaling.max_queued_requests"]),
    ({"rollout__bake_seconds": 3}, "strategy", ["rollout.bake_seconds"]),
])
def test_describe_change_sorts_a_change_into_heavy_light_or_strategy(changes, kind, fields):
    assert rollout.describe_change({"spec": spec()}, {"spec": spec(**changes)}) == (kind, fields)


# --------------------------------------------------------------------- preview lines
def preview(olds: dict, news_spec: dict) -> str:
    return rollout.preview_lines(olds, {"spec": news_spec, "http_url": "http://127.0.0.1:1"})


def test_a_forward_rollout_previews_its_wave_table():
    text = preview(props(spec("v1")), spec("v2"))
    assert "[llm] rollout v1 -> v2: 4 waves, surge 1 of N=4, peak 5 GPUs" in text
    assert "deploy-canary" in text and "changed: version.version, version.artifact" in text


def test_reverting_a_held_canary_previews_the_rollback_not_a_rollout():
    olds = props(spec("v2", rollout__canary_percent=50), canary="v2", weights={"v1": 50.0, "v2": 50.0},
                 replicas={"v1": 2, "v2": 2})
    text = preview(olds, spec("v1"))
    assert "rolling back v2 -> v1: stale canary v2: reverted to the primary" in text
    assert "rollout v1 -> v1" not in text and "remove-canary" in text


def test_reverting_mid_wave_previews_the_same_moves_up_will_decide():
    olds = props(spec("v2"), canary="v2", weights={"v1": 75.0, "v2": 25.0}, replicas={"v1": 3, "v2": 2})
    text = preview(olds, spec("v1"))
    live = rollout.recorded_live(olds)
    for move in decide(live, ServiceSpec.model_validate(spec("v1"))):
        assert move.describe("llm") in text


def test_a_lightweight_change_previews_in_place():
    text = preview(props(spec()), spec(scaling__max_queued_requests=9))
    assert text == "[llm] lightweight change applied in place, no replica restarts: scaling.max_queued_requests"


def test_a_strategy_change_previews_as_taking_effect_next_time():
    assert "takes effect on the next rollout" in preview(props(spec()), spec(rollout__bake_seconds=3))


def test_state_without_live_outputs_previews_from_the_declared_version():
    olds = {"spec": spec("v1"), "http_url": "http://127.0.0.1:1"}
    assert "rollout v1 -> v2" in preview(olds, spec("v2"))


# ------------------------------------------------------------------------ drift
def serve_state(service_spec: dict, primary: str, canary: str | None = None, traffic: float = 0.0,
                canary_status: str = "RUNNING") -> ServeState:
    model = ServiceSpec.model_validate(service_spec)
    weights = {primary: 100 - traffic, **({canary: traffic} if canary else {})}
    state_apps = {}
    for version, status in [(primary, "RUNNING")] + ([(canary, canary_status)] if canary else []):
        config = apps.version_app(model.service, model.version.model_copy(update={"version": version}),
                                  model.scaling, N)
        replicas = tuple(ReplicaState(f"{version}-{i}", "RUNNING") for i in range(N))
        deployment = DeploymentState(apps.MODEL_DEPLOYMENT, "HEALTHY", "", N, replicas)
        state_apps[config["name"]] = AppState(config["name"], status, "", config, {deployment.name: deployment})
    router = apps.router_app(model, primary, canary, weights)
    state_apps[router["name"]] = AppState(router["name"], "RUNNING", "", router, {})
    return ServeState(True, {}, None, state_apps)


@pytest.mark.parametrize("live,want,reason", [
    (dict(primary="v1"), spec("v1"), None),
    (dict(primary="v0"), spec("v1"), "live primary is v0, not v1"),
    (dict(primary="v1", canary="v2", traffic=25.0), spec("v1"), "stale canary v2 is live"),
    (dict(primary="v1", canary="v2", traffic=25.0), spec("v2"), "canary v2 was left at 25% by an interrupted run"),
    (dict(primary="v1", canary="v2", traffic=25.0), spec("v2", rollout__canary_percent=25), None),
    (dict(primary="v1", canary="v2", traffic=25.0, canary_status="DEPLOY_FAILED"), spec("v2", rollout__canary_percent=25),
     "held canary v2 reports a failed Serve status"),
])
def test_drift_names_what_the_live_cluster_shows_that_state_does_not(live, want, reason):
    state = serve_state(want, **live)
    assert rollout.drift(state, ServiceSpec.model_validate(want)) == reason


def test_a_version_app_the_router_does_not_name_is_drift():
    want = spec("v1")
    state = serve_state(want, primary="v1")
    orphan = serve_state(spec("v2"), primary="v2").apps["llm--v2"]
    state.apps["llm--v2"] = orphan
    assert rollout.drift(state, ServiceSpec.model_validate(want)) == "versions that receive no traffic hold replicas: v2"


def test_a_service_with_no_apps_is_drift():
    assert rollout.drift(ServeState(True, {}, None, {}), ServiceSpec.model_validate(spec())) == \
        "the service has no apps on the cluster"


def with_operator(state: ServeState, command: str, version: str, digest: str | None = None) -> ServeState:
    from runtime import record

    router = state.apps["llm"]
    order = record.OperatorCommand(command, version, 1_800_000_000.0, "ops@desk", digest)
    state.apps["llm"] = AppState("llm", router.status, "", record.with_operator(router.config, order), {})
    return state


def test_an_operators_standing_abort_is_drift_that_names_the_config_to_change():
    want = spec("v2")
    digest = ServiceSpec.model_validate(want).digest()
    state = with_operator(serve_state(want, primary="v1"), "abort", "v2", digest)
    reason = rollout.drift(state, ServiceSpec.model_validate(want))
    assert reason.startswith("v2 was aborted by operator ops@desk") and "set the service's version back to v1" in reason
    # Another config of v2 is not what was aborted: a plain drift, which `up` rolls out.
    other = spec("v2", rollout__bake_seconds=7)
    assert rollout.drift(state, ServiceSpec.model_validate(other)) == "live primary is v1, not v2"


def test_a_promoted_hold_is_a_note_on_the_config_not_a_change():
    from runtime.live import observe

    want = spec("v2", rollout__canary_percent=25)
    state = with_operator(serve_state(want, primary="v2"), "promote", "v2")
    model = ServiceSpec.model_validate(want)
    assert rollout.drift(state, model) is None  # nothing for `up` to move
    note = rollout.operator_note(observe(state, "llm"), model)
    assert "v2 was promoted by operator ops@desk" in note and "canary_percent 25" in note
    assert rollout.operator_note(observe(state, "llm"), ServiceSpec.model_validate(spec("v2"))) is None


def test_preview_after_a_failed_up_shows_the_refusal_the_live_abort_causes():
    olds = props(spec("v1"))
    olds["operator"] = {"command": "abort", "version": "v2", "at": 1_800_000_000.0, "by": "ops@desk"}
    text = preview(olds, spec("v2"))
    assert "v2 was aborted by operator ops@desk" in text and "gpuserve retry llm" in text


# -------------------------------------------------------------------- immutability
@pytest.fixture
def provider(monkeypatch):
    monkeypatch.setattr(rollout, "arm", lambda: None)  # no engine to watch in a test
    return rollout.ModelRolloutProvider()


@pytest.mark.parametrize("field,value", [("artifact", "other.npz"), ("import_path", "m:other"),
                                         ("num_gpus", 0.5), ("env_vars", {"A": "1"})])
def test_changing_a_build_without_a_new_version_string_is_refused(provider, field, value):
    result = provider.check({"spec": spec("v1")}, {"spec": spec("v1", **{f"version__{field}": value})})
    (failure,) = result.failures
    assert failure.property == "version"
    assert f"version v1 of llm is immutable, but {field} changed" in failure.reason


def hashed(version: str, code: str, artifact: str = "a" * 64) -> dict:
    return spec(version, version__code_hash=code * 64, version__artifact_hash=artifact)


def test_a_known_label_with_other_code_is_refused_naming_both_hashes(provider):
    result = provider.check({"spec": hashed("v2", "1")}, {"spec": hashed("v2", "2")})
    (failure,) = result.failures
    assert failure.reason.startswith("version v2 of llm already names code 111111111111 + artifact aaaaaaaaaaaa; "
                                     "this deploy has code 222222222222 + artifact aaaaaaaaaaaa. Bump the version")
    assert "x-serve-version: v2 must always reach the same code" in failure.reason


def test_every_label_ever_deployed_keeps_its_build_not_only_the_current_one(provider):
    first = provider.check({}, {"spec": hashed("v1", "1")}).inputs
    second = provider.check(first, {"spec": hashed("v2", "2")}).inputs
    assert set(second["identities"]) == {"v1", "v2"}
    # Back to v1 with v2's code: refused, although v1 is no longer the live version.
    (failure,) = provider.check(second, {"spec": hashed("v1", "2")}).failures
    assert "version v1 of llm already names code 111111111111" in failure.reason
    # The same build under a new label is fine: a label names one build, not the reverse.
    assert provider.check(second, {"spec": hashed("v3", "1")}).failures == []


def test_state_written_before_labels_had_hashes_is_adopted_not_refused(provider):
    legacy = {"spec": {**spec("v1"), "version": {k: v for k, v in spec("v1")["version"].items()
                                                 if k not in ("code_hash", "artifact_hash", "code_dir", "pip",
                                                              "deployment", "deployments", "args")}}}
    assert provider.check(legacy, {"spec": hashed("v1", "1")}).failures == []


def test_a_new_version_string_or_a_lightweight_change_passes_the_check(provider):
    assert provider.check({"spec": spec("v1")}, {"spec": spec("v2", version__artifact="x.npz")}).failures == []
    assert provider.check({"spec": spec("v1")}, {"spec": spec(scaling__max_ongoing_requests=3)}).failures == []
