"""Pulumi mocks that record every registered resource and echo inputs as outputs."""

from __future__ import annotations

import pulumi

FAKE_OUTPUTS = {
    "pulumi-python:dynamic/gpuserve:LocalRayHead": lambda inputs: {
        "dashboard_url": f"http://127.0.0.1:{int(inputs['dashboard_port'])}",
        "token_path": "/tmp/token", "pid": 1, "alive": True},
    "pulumi-python:dynamic/gpuserve:LocalServe": lambda inputs: {
        "http_url": f"http://127.0.0.1:{int(inputs['http_port'])}", "healthy": True},
    "pulumi-python:dynamic/gpuserve:LocalSplitter": lambda inputs: {
        "url": f"http://{inputs['listen']}", "admins": ["/tmp/splitter-0.sock", "/tmp/splitter-1.sock"]},
    "pulumi-python:dynamic/gpuserve:ModelRollout": lambda inputs: {
        "primary_version": inputs["spec"]["version"]["version"], "canary_version": None},
}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        outputs.update(FAKE_OUTPUTS.get(args.typ, lambda _: {})(args.inputs))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, suffix: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ.endswith(suffix)]
