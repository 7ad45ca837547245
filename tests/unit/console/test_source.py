"""The console's stack source: its reads of the live splitter instances."""

from __future__ import annotations

from console.source import Rollout, StackSource
from tests.unit.runtime.test_analysis_samples import FakeSplitter


def rollout(admins: list[str]) -> Rollout:
    return Rollout(service="svc", spec={}, history=[], dashboard_url="http://127.0.0.1:1", token=None,
                   token_path=None, kubeconfig=None, props={"splitter_admins": admins})


def test_samples_are_read_incrementally_from_every_splitter_instance(tmp_path):
    fake = FakeSplitter(str(tmp_path / "admin.sock"))
    try:
        fake.answer(100)
        source = StackSource("local", repo=tmp_path)
        assert [s["t"] for s in source.samples(rollout([fake.path]), 50)] == [100]
        fake.answer(200)
        fake.answer(200, service="other")
        assert [s["t"] for s in source.samples(rollout([fake.path]), 50)] == [100, 200]
        assert fake.asked == [50, 100]  # the second read asked only for what was new
    finally:
        fake.close()
