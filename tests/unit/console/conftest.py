"""Fixtures of the console's tests."""

from __future__ import annotations

import pytest

from console import app as console_app
from console.source import Rollout
from tests.unit.console.test_app import SAMPLES, FakeSource, live


@pytest.fixture
def rolling(monkeypatch):
    class Watched(FakeSource):
        def rollouts(self):
            spec = {"pool": "gpu", "capacity": {"pool_gpus": 5},
                    "scaling": {"num_replicas": 4}, "rollout": {"max_surge_percent": 25}}
            return [Rollout(service="llm", spec=spec, history=[], dashboard_url="http://127.0.0.1:1", token="t",
                            token_path=None, kubeconfig=None)]

        def samples(self, rollout, since_ms):
            return SAMPLES

    service = live("v1", "v2", 25.0, {"v1": 3, "v2": 2})
    monkeypatch.setattr(console_app, "source_for", lambda name: Watched(name, {"llm": service}))
