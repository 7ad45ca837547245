"""The splitter binary (splitter/, Go) passes requests and responses through unchanged.

No Ray here: one stdlib HTTP server plays both the Serve REST API (the routing record)
and the Serve proxy (an echo of what it received), so hypothesis can send hundreds of
random requests in seconds. The same passage through real Serve is covered by
tests/integration/test_examples.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import splitter
from runtime.splitter import SplitterSpec

STATE = {"applications": {
    "echo": {"route_prefix": None, "status": "RUNNING", "deployed_app_config": {"deployments": [
        {"name": "Router", "user_config": {"primary": "v1", "canary": "v2", "weights": {"v1": 100},
                                           "route_prefix": "/echo", "request_timeout_s": 5,
                                           "max_body_bytes": 65536}}]}},
    "echo--v1": {"route_prefix": "/_v/echo/v1", "status": "RUNNING", "deployed_app_config": {"deployments": []}},
    "echo--v2": {"route_prefix": "/_v/echo/v2", "status": "RUNNING", "deployed_app_config": {"deployments": []}},
}}


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:
        pass

    def _answer(self) -> None:
        if self.path == "/api/serve/applications/":
            return self._send(200, json.dumps(STATE).encode(), {"content-type": "application/json"})
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {"method": self.command, "path": self.path, "headers": list(self.headers.items())}
        self._send(200, body, {"x-echo": base64.b64encode(json.dumps(seen).encode()).decode(),
                               "content-type": "application/octet-stream"})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    """One splitter instance in front of the echo server; yields (public URL, Instance)."""
    if not splitter.BINARY.exists():
        pytest.fail(f"{splitter.BINARY} is missing: run make test-fast (it builds the splitter)")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    state = tmp_path_factory.mktemp("splitter")
    (state / "token").write_text("t")
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{upstream.server_address[1]}"
    spec = SplitterSpec(listen=f"127.0.0.1:{port}", upstream=base, serve_api=base, token_path=str(state / "token"),
                        state_dir=str(state), instances=1, max_header_bytes=16384)
    started = splitter.start_instance(spec, 0)
    try:
        yield f"http://127.0.0.1:{port}", started
    finally:
        splitter.stop_instance(started, grace_s=2)
        upstream.shutdown()


@pytest.fixture(scope="module")
def front(instance) -> str:
    return instance[0]


SEGMENT = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@%20", min_size=1, max_size=12).map(
    lambda s: re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", s))
QUERY = st.text(alphabet="abc019-._~!$&'()*+,;=:@/?%", max_size=30).map(lambda s: re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", s))
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
HEADERS = st.dictionaries(st.from_regex(r"x-t-[a-z0-9]{1,8}", fullmatch=True), HEADER_VALUE, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       segments=st.lists(SEGMENT, max_size=4), query=QUERY, headers=HEADERS,
       body=st.binary(max_size=4096), pin=st.sampled_from([None, "primary", "v1", "canary"]))
def test_any_request_reaches_the_version_unchanged_and_its_response_comes_back_unchanged(
        front, method, segments, query, headers, body, pin):
    path = "/echo" + "".join("/" + s for s in segments)
    sent = dict(headers)
    if pin:
        sent["x-serve-version"] = pin
    request = httpx.Request(method, front + path + (f"?{query}" if query else ""), headers=sent, content=body)
    with httpx.Client(timeout=10) as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    want = "v2" if pin == "canary" else "v1"
    assert response.headers["x-serve-version"] == want
    assert response.content == body  # the response body, byte for byte
    seen = json.loads(base64.b64decode(response.headers["x-echo"]))
    raw = request.url.raw_path.decode()  # exactly what the client put on the wire
    assert seen["method"] == method
    assert seen["path"] == f"/_v/echo/{want}" + raw.removeprefix("/echo")
    received = {}
    for k, v in seen["headers"]:
        received.setdefault(k.lower(), v)
    for k, v in sent.items():
        assert received.get(k) == v, k


def test_the_splitters_own_errors_are_short_json_that_echo_nothing(front):
    secret = "sekrit-<b>"
    with httpx.Client(timeout=10) as client:
        answers = [
            client.get(front + "/echo", headers={"x-serve-version": secret}),  # unknown pin
            client.post(front + "/echo", content=b"x" * 70000),  # over max_body_bytes
            client.get(front + "/echo", headers={"x-big": secret * 3000}),  # over max_header_bytes
            client.get(front + "/nowhere"),  # no service owns the path
        ]
    assert [a.status_code for a in answers] == [404, 413, 431, 404]
    for answer in answers:
        body = answer.json()
        assert set(body) <= {"error", "detail", "service", "version"} and body["error"]
        assert secret not in answer.text and "Traceback" not in answer.text and 'File "' not in answer.text
        assert not re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", answer.text)


def test_the_routing_table_lives_on_a_reserved_path_so_every_other_path_is_the_apps(front):
    routes = httpx.get(front + "/-/gpuserve/routes", timeout=10).json()["routes"]
    assert [(r["service"], r["prefix"], r["upstreams"]) for r in routes] == [
        ("echo", "/echo", {"v1": "/_v/echo/v1", "v2": "/_v/echo/v2"})]
    # GET of the service's own prefix reaches the app, not a routing page.
    assert httpx.get(front + "/echo", timeout=10).headers["x-serve-version"] == "v1"


def test_a_weight_change_counts_only_once_every_live_instance_serves_it(instance, tmp_path):
    import socket

    from runtime.errors import RolloutFailed

    live = instance[1].admin
    dead = tmp_path / "splitter-dead.sock"  # what a SIGKILLed instance leaves behind
    with socket.socket(socket.AF_UNIX) as leftover:
        leftover.bind(str(dead))
    assert splitter.confirm_routes([live, str(dead)], "echo", "v1", {"v1": 100}) == 1
    with pytest.raises(RolloutFailed, match="did not apply echo weights"):
        splitter.confirm_routes([live], "echo", "v1", {"v1": 50, "v2": 50}, timeout_s=0.5)

