"""The service models declare, field by field, what a change of that field costs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runtime import spec as s


def models() -> list[type[BaseModel]]:
    return [s.ServiceSpec, s.VersionSpec, s.ScalingSpec, s.RolloutStrategy, s.GateConfig]


@pytest.mark.parametrize("model", models(), ids=lambda m: m.__name__)
def test_every_field_declares_its_change_kind_unless_it_is_a_model_of_its_own(model):
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) and model is s.ServiceSpec:
            continue  # version, scaling, rollout: their own fields carry the marks
        assert s.change_kind(model, name) in s.CHANGE_KINDS


def test_a_field_without_a_mark_is_refused():
    class Unmarked(BaseModel):
        x: int = 1

    with pytest.raises(TypeError, match="Unmarked.x declares no change kind"):
        s.change_kind(Unmarked, "x")


def test_the_build_is_heavy_and_scaling_light():
    # Where the code sits on this machine, and the options of the app's other
    # deployments, are not the build: its hashes and everything Serve restarts for are.
    assert set(s.fields_of_kind(s.VersionSpec, s.HEAVY)) == set(s.VersionSpec.model_fields) - {"code_dir", "deployments"}
    assert set(s.fields_of_kind(s.ScalingSpec, s.LIGHT)) == set(s.ScalingSpec.model_fields)


def base() -> dict:
    return {"service": "llm", "route_prefix": "/llm", "pool": "gpu",
            "version": {"version": "v1", "import_path": "m:app", "artifact": "a"},
            "scaling": {"num_replicas": 2}, "rollout": {"bake_seconds": 10}}


@pytest.mark.parametrize("section,field,value,kind", [
    ("version", "env_vars", {"A": "1"}, "heavy"),
    ("scaling", "user_config", {"t": 2}, "light"),
    (None, "request_timeout_s", 5, "light"),
    ("rollout", "gates", {"min_probes": 5}, "strategy"),
    (None, "pool", "other", "none"),  # inert: a reporting fact
])
def test_classify_change_reports_the_strongest_kind(section, field, value, kind):
    new = base()
    (new[section] if section else new)[field] = value
    assert s.classify_change(base(), new)[0] == kind


def test_a_heavy_change_lists_its_heavy_fields_first():
    new = base()
    new["scaling"] = {"num_replicas": 3}
    new["version"] = {**new["version"], "version": "v2"}
    assert s.classify_change(base(), new) == ("heavy", ["version.version", "scaling.num_replicas"])


@pytest.mark.parametrize("check, message", [
    ({"name": "c", "max": 1}, "exactly one of template"),
    ({"name": "c", "template": "error-rate", "query": "up", "max": 1}, "exactly one of template"),
    ({"name": "c", "template": "error-rate"}, "give min, max or both"),
    ({"name": "c", "template": "error-rate", "min": 2, "max": 1}, "min must not exceed max"),
    ({"name": "c", "query": "rate(x{a=\"{{ pod }}\"}[1m])", "max": 1}, "unknown variable pod; known: service"),
    ({"name": "c", "query": "rate(x[{{ window }]", "max": 1}, "not a valid template"),
    ({"name": "c", "template": "p99", "max": 1}, "error-rate"),
])
def test_a_prometheus_check_says_what_is_wrong_with_it(check, message):
    with pytest.raises(ValueError, match=message):
        s.MetricCheck.model_validate(check)


def test_prometheus_gating_needs_a_server_and_defaults_to_the_error_rate_check():
    with pytest.raises(ValueError, match="source 'prometheus' needs prometheus.url"):
        s.GateConfig(source="prometheus")
    gates = s.GateConfig(prometheus={"url": "http://127.0.0.1:9090"})
    assert gates.uses_splitter and gates.uses_prometheus  # "auto": both
    assert [(c.template, c.max) for c in gates.prometheus.checks] == [("error-rate", 0.01)]
    assert not s.GateConfig(source="prometheus", prometheus={"url": "http://p:9090"}).uses_splitter
    assert not s.GateConfig(source="splitter", prometheus={"url": "http://p:9090"}).uses_prometheus


def test_a_probe_counts_its_expected_statuses_as_served():
    assert s.ProbeRequest().served(302) and not s.ProbeRequest().served(404)
    assert s.ProbeRequest(expected_status=[404]).served(404) and not s.ProbeRequest(expected_status=[404]).served(200)
