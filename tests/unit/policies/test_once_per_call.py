"""The pack's analyzer converts a resource's properties once per call, and judges as before."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import policy as sdk

from policies import once_per_call
from policies.pack import ENFORCEMENT, PACK_NAME, POLICIES

ROLLOUT = "pulumi-python:dynamic/gpuserve:ModelRollout"


def rollout(name: str, replicas: int, surge: int, stack: str = "prod") -> dict:
    return {"type": ROLLOUT, "name": name,
            "urn": f"urn:pulumi:{stack}::gpuserve::{ROLLOUT}::{name}",
            "props": {"spec": {"service": name, "pool": "gpu", "request_timeout_s": 30.0,
                               "version": {"version": "v2", "num_gpus": 1.0},
                               "scaling": {"num_replicas": replicas, "max_queued_requests": 64,
                                           "graceful_shutdown_timeout_s": 30.0},
                               "capacity": {"pool_gpus": 64},
                               "rollout": {"max_surge_percent": surge, "bake_seconds": 30.0,
                                           "deadline_minutes": 120.0, "gates": {"enabled": True}}}}}


def servicer():
    once_per_call.install()
    analyzer = sdk._PolicyAnalyzerServicer(PACK_NAME, "0.0.1", POLICIES, ENFORCEMENT)  # pylint: disable=protected-access
    analyzer.Configure(proto.ConfigureAnalyzerRequest(policyConfig={
        p.name: proto.PolicyConfig(properties=struct_pb2.Struct()) for p in POLICIES}), None)
    return analyzer


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def counting(monkeypatch) -> list:
    seen = []
    original = json_format.MessageToDict

    def count(message, *args, **kwargs):
        seen.append(message)
        return original(message, *args, **kwargs)

    monkeypatch.setattr(json_format, "MessageToDict", count)
    return seen


def analyze(analyzer, resource: dict):
    request = proto.AnalyzeRequest(type=resource["type"], name=resource["name"], urn=resource["urn"],
                                   properties=struct(resource["props"]))
    return request, analyzer.Analyze(request, None)


def test_one_analyze_call_converts_the_properties_once_for_all_thirteen_policies(monkeypatch):
    analyzer = servicer()
    seen = counting(monkeypatch)
    request, _ = analyze(analyzer, rollout("llm", replicas=1, surge=100))
    assert sum(1 for message in seen if message is request.properties) == 1


def test_shared_properties_still_get_each_policys_verdict():
    _, response = analyze(servicer(), rollout("llm", replicas=1, surge=100))
    assert sorted(d.policyName for d in response.diagnostics) == ["prod-min-replicas", "rollout-surge-bounds"]


def test_the_next_call_sees_its_own_resource_not_the_last_one():
    analyzer = servicer()
    analyze(analyzer, rollout("llm", replicas=1, surge=100))
    _, response = analyze(analyzer, rollout("chat", replicas=4, surge=25))
    assert list(response.diagnostics) == []


def test_outside_an_analyzer_call_nothing_is_cached():
    props = {"a": {"b": 1}}
    first = once_per_call.plain_once(props)
    assert first == props and once_per_call.plain_once(props) is not first
