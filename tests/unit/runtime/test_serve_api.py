"""The Serve REST client: transient answers are asked again, with backoff, inside a time
budget; anything else fails at once; the config lock never waits forever."""

from __future__ import annotations

import os

import filelock
import httpx
import pytest

from runtime import serve_api
from runtime.errors import ServeApiError
from runtime.serve_api import ServeClient, cluster_lock, surge_lease

EMPTY = {"controller_info": {}, "applications": {}}


def dashboard(statuses: list[int]):
    """A dashboard answering `statuses` in turn (then 200 with an empty Serve)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        status = statuses[len(calls) - 1] if len(calls) <= len(statuses) else 200
        return httpx.Response(status, json=EMPTY if status == 200 else {"error": "busy"})

    return httpx.MockTransport(handle), calls


@pytest.mark.parametrize("transient", [429, 500, 502, 503, 504])
def test_a_transient_answer_is_retried_until_it_succeeds(transient):
    transport, calls = dashboard([transient, transient])
    with ServeClient("http://dash:8265", "t", transport=transport) as client:
        assert client.state().apps == {}
    assert calls == ["GET", "GET", "GET"]


@pytest.mark.parametrize("final", [400, 401, 404])
def test_a_final_answer_fails_at_once_with_the_dashboards_words(final):
    transport, calls = dashboard([final])
    with ServeClient("http://dash:8265", "t", transport=transport) as client, \
            pytest.raises(ServeApiError, match=rf"GET http://dash:8265/api/serve/applications/ returned {final}"):
        client.state()
    assert calls == ["GET"]


def test_a_lock_held_too_long_names_its_holder_instead_of_waiting_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_api.tempfile, "gettempdir", lambda: str(tmp_path))
    with cluster_lock("http://dash:8265"):
        (holder,) = tmp_path.glob("*.holder")
        assert holder.read_text() == f"pid {os.getpid()}"
        (path,) = tmp_path.glob("*.lock")
        # Another process's attempt: filelock is per-instance reentrant, so use a new one.
        other = filelock.FileLock(path, is_singleton=False)
        with pytest.raises(filelock.Timeout):
            other.acquire(timeout=0.1)
    with pytest.raises(ServeApiError, match=rf"still held after 0.1s, by pid {os.getpid()}"):
        with filelock.FileLock(path, is_singleton=False):
            with cluster_lock("http://dash:8265", timeout_s=0.1):
                pass


def test_a_second_surging_rollout_in_a_pool_waits_for_the_first_and_says_for_whom(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_api.tempfile, "gettempdir", lambda: str(tmp_path))
    waited = []
    with surge_lease("http://dash:8265", "gpu", "llm", timeout_s=1):
        with pytest.raises(ServeApiError, match=r"clf: the rollout of llm \(pid \d+\) in pool 'gpu' still holds"):
            with surge_lease("http://dash:8265", "gpu", "clf", timeout_s=0.1, on_wait=waited.append):
                pass
        with surge_lease("http://dash:8265", "other-pool", "clf", timeout_s=0.1):
            pass  # another pool's surge is not this one's business
    assert waited == [f"llm (pid {os.getpid()})"]
    with surge_lease("http://dash:8265", "gpu", "clf", timeout_s=0.1):
        pass  # free again once the first rollout ended
