"""Reading the splitter's answers (analysis.SampleSource): incrementally, over kept-alive
clients, and never losing or doubling an answer. The fake admin socket answers as
splitter/metrics.go's `Since` does: `t >= since_ms`, in the order recorded."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.analysis import SampleSource


class FakeSplitter:
    def __init__(self, path: str):
        self.path, self.pid, self.ring, self.asked = path, 1000, [], []
        this = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                since = int(parse_qs(urlparse(self.path).query)["since_ms"][0])
                this.asked.append(since)
                body = json.dumps({"pid": this.pid, "samples": [s for s in this.ring if s["t"] >= since]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self):
                return "uds"

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, t: int, version: str = "v1", service: str = "svc", status: int = 200):
        self.ring.append({"t": t, "s": service, "v": version, "c": status, "ms": 10.0})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def splitter(tmp_path):
    fake = FakeSplitter(str(tmp_path / "admin.sock"))
    yield fake
    fake.close()


def test_later_calls_fetch_only_what_is_new_and_keep_the_window(splitter):
    for t in (100, 200, 300):
        splitter.answer(t)
    source = SampleSource([splitter.path], "svc")
    try:
        assert [s["t"] for s in source(150)] == [200, 300]
        splitter.answer(400)
        assert [s["t"] for s in source(150)] == [200, 300, 400]
        assert splitter.asked == [150, 300]  # the second read asked from the newest answer on
        assert [s["t"] for s in source(350)] == [400]
    finally:
        source.close()


def test_answers_in_the_same_millisecond_are_neither_lost_nor_doubled(splitter):
    splitter.answer(100, "v1")
    splitter.answer(100, "v2")
    source = SampleSource([splitter.path], "svc")
    try:
        assert len(source(0)) == 2
        splitter.answer(100, "v3")  # recorded later, within the same millisecond
        assert [s["v"] for s in source(0)] == ["v1", "v2", "v3"]
        assert [s["v"] for s in source(0)] == ["v1", "v2", "v3"]
    finally:
        source.close()


def test_other_services_answers_are_left_out_but_counted_at_the_cursor(splitter):
    splitter.answer(100, service="other")
    splitter.answer(100)
    source = SampleSource([splitter.path], "svc")
    try:
        assert len(source(0)) == 1
        splitter.answer(100, service="other")
        splitter.answer(100)
        assert len(source(0)) == 2
    finally:
        source.close()


def test_an_older_start_than_kept_reads_everything_again(splitter):
    for t in (100, 200):
        splitter.answer(t)
    source = SampleSource([splitter.path], "svc")
    try:
        assert len(source(150)) == 1
        assert [s["t"] for s in source(50)] == [100, 200]
    finally:
        source.close()


def test_a_restarted_instance_is_read_afresh(splitter):
    splitter.answer(100)
    source = SampleSource([splitter.path], "svc")
    try:
        assert len(source(0)) == 1
        splitter.pid, splitter.ring = 2000, []
        splitter.answer(50)  # the new process's ring; its clock need not be later
        assert [s["t"] for s in source(0)] == [50]
    finally:
        source.close()


def test_a_dead_instance_serves_nothing(tmp_path, splitter):
    splitter.answer(100)
    source = SampleSource([str(tmp_path / "gone.sock"), splitter.path], "svc")
    try:
        assert len(source(0)) == 1
    finally:
        source.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()), min_size=1, max_size=30))
def test_incremental_reads_equal_a_fresh_read(tmp_path_factory, steps):
    """Whatever arrives between reads (several per millisecond, other services), each read
    returns exactly what one fresh read of the same window would."""
    fake = FakeSplitter(str(tmp_path_factory.mktemp("s") / "admin.sock"))
    source = SampleSource([fake.path], "svc")
    try:
        now, since = 0, 0
        for advance, count, other in steps:
            now += advance
            for k in range(count):
                fake.answer(now, version=f"v{len(fake.ring)}", service="other" if other and k == 0 else "svc")
            since = max(since, now - 5)
            fresh = [s for s in fake.ring if s["t"] >= since and s["s"] == "svc"]
            assert source(since) == fresh
    finally:
        source.close()
        fake.close()
