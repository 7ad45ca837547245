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
