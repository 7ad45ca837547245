"""The rollout provider's Kubernetes path to a RayCluster's dashboard: the real kubernetes
client, authenticated by a kubeconfig, asks an API server for the head pod and opens a
port-forward websocket (the v4.channel.k8s.io protocol) through which plain HTTP reaches
the dashboard. The API server here is a stand-in on loopback that speaks that protocol
and plays the kubelet by piping the stream to a local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import serve

from runtime.k8s_forward import DashboardRef, ForwardError, dashboard, head_pod
from runtime.serve_api import ServeClient

# A port-forward thread that dies with a traceback would print it into `pulumi up`.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

API_TOKEN = "kube-api-token"
DASHBOARD_TOKEN = "dashboard-token"
REF = "k8s-portforward://serving/gpuserve-gpu:8265"


class Dashboard(BaseHTTPRequestHandler):
    """The head's dashboard: answers Serve's application list when the token is right."""

    def do_GET(self):  # noqa: N802 - http.server's name
        ok = self.headers.get("Authorization") == f"Bearer {DASHBOARD_TOKEN}"
        body = json.dumps({"applications": {}, "proxy_location": "EveryNode"} if ok else {"error": "no"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def pod(name: str, phase: str, created: str, deleting: bool = False) -> dict:
    return {"metadata": {"name": name, "namespace": "serving", "creationTimestamp": created,
                         "labels": {"ray.io/cluster": "gpuserve-gpu", "ray.io/node-type": "head"},
                         **({"deletionTimestamp": created} if deleting else {})},
            "status": {"phase": phase}}


class FakeApiServer:
    """GET pods (by label selector) and the pod portforward websocket, behind a bearer token."""

    def __init__(self, dashboard_port: int, pods: list[dict]):
        self.dashboard_port, self.pods = dashboard_port, pods
        self.seen: list[tuple[str, str, str | None]] = []  # (kind, detail, authorization)
        self.server = serve(self._forward, "127.0.0.1", 0, process_request=self._request,
                            subprotocols=["v4.channel.k8s.io"], compression=None,
                            # The client answers a server's close frame but leaves its socket to
                            # the garbage collector: do not wait for it at shutdown.
                            close_timeout=0.5)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _request(self, connection, request):
        auth = request.headers.get("Authorization")
        path = urlsplit(request.path)
        if path.path.endswith("/portforward"):
            self.seen.append(("portforward", path.path, auth))
            return None if auth == f"Bearer {API_TOKEN}" else connection.respond(401, "unauthorized\n")
        self.seen.append(("list", parse_qs(path.query).get("labelSelector", [""])[0], auth))
        if auth != f"Bearer {API_TOKEN}":
            return connection.respond(401, "unauthorized\n")
        body = json.dumps({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods}).encode()
        return Response(200, "OK", Headers([("Content-Type", "application/json"), ("Connection", "close"),
                                            ("Content-Length", str(len(body)))]), body)

    def _forward(self, ws):
        """The kubelet's half: channel 0 carries data, channel 1 errors, each opened by a
        frame holding the port number (little-endian)."""
        port = int(parse_qs(urlsplit(ws.request.path).query)["ports"][0])
        ws.send(bytes([0, port & 0xFF, port >> 8]))
        ws.send(bytes([1, port & 0xFF, port >> 8]))
        with socket.create_connection(("127.0.0.1", self.dashboard_port)) as target:
            def upstream():
                while data := target.recv(65536):
                    ws.send(b"\x00" + data)
                ws.close()
            threading.Thread(target=upstream, daemon=True).start()
            for frame in ws:
                if frame[0] == 0:
                    target.sendall(frame[1:])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def dashboard_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def kubeconfig(server: str, token: str = API_TOKEN) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "serving"}}],
    })


def test_the_dashboard_is_reached_through_the_api_servers_port_forward_to_the_running_head(dashboard_server):
    pods = [pod("head-old", "Running", "2026-11-01T00:00:00Z", deleting=True),
            pod("head-new", "Running", "2026-11-02T00:00:00Z"),
            pod("head-next", "Pending", "2026-11-03T00:00:00Z")]
    with FakeApiServer(dashboard_server.server_address[1], pods) as api:
        with dashboard(REF, kubeconfig(api.url)) as url:
            assert url.startswith("http://127.0.0.1:")
            with ServeClient(url, DASHBOARD_TOKEN) as client:
                # Two requests over fresh connections: one port-forward stream each.
                for _ in range(2):
                    client.http.headers["Connection"] = "close"
                    assert client.http.get("/api/serve/applications/").json()["proxy_location"] == "EveryNode"
    forwards = [s for s in api.seen if s[0] == "portforward"]
    assert [f[1] for f in forwards] == ["/api/v1/namespaces/serving/pods/head-new/portforward"] * 2
    assert {s[1] for s in api.seen if s[0] == "list"} == {"ray.io/cluster=gpuserve-gpu,ray.io/node-type=head"}
    assert {s[2] for s in api.seen} == {f"Bearer {API_TOKEN}"}


def test_after_the_block_nothing_listens_on_the_forward_port(dashboard_server):
    pods = [pod("head", "Running", "2026-11-02T00:00:00Z")]
    with FakeApiServer(dashboard_server.server_address[1], pods) as api:
        with dashboard(REF, kubeconfig(api.url)) as url:
            httpx.get(url + "/", headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"}, timeout=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/", timeout=2)


def test_no_running_head_says_which_cluster_and_what_it_saw(dashboard_server):
    with FakeApiServer(dashboard_server.server_address[1], [pod("head", "Pending", "2026-11-02T00:00:00Z")]) as api:
        with pytest.raises(ForwardError) as failure:
            with dashboard(REF, kubeconfig(api.url)):
                pass
    message = str(failure.value)
    assert "no running head pod of RayCluster gpuserve-gpu in namespace serving" in message
    assert "head (Pending)" in message and "kubectl -n serving get pods" in message


def test_a_refused_api_token_is_an_error_before_any_traffic(dashboard_server):
    with FakeApiServer(dashboard_server.server_address[1], [pod("head", "Running", "2026-11-02T00:00:00Z")]) as api:
        with pytest.raises(Exception) as failure:
            with dashboard(REF, kubeconfig(api.url, token="wrong")):
                pass
    assert "401" in str(failure.value) or "Unauthorized" in str(failure.value)


def test_an_unreadable_kubeconfig_names_itself():
    with pytest.raises(ForwardError, match="cannot load the stack's kubeconfig"):
        with dashboard(REF, "clusters: [unclosed"):
            pass


def test_a_local_address_passes_through_untouched():
    with dashboard("http://127.0.0.1:8265") as url:
        assert url == "http://127.0.0.1:8265"


@pytest.mark.parametrize("address", ["k8s-portforward://serving/gpuserve-gpu", "k8s-portforward://Serving/x:1",
                                     "k8s-portforward://serving/x:0", "k8s-portforward://serving/x:65536",
                                     "k8s-portforward://a/b/c:1"])
def test_a_malformed_reference_is_refused_with_the_expected_form(address):
    with pytest.raises(ForwardError, match="<namespace>/<cluster>:<port>"):
        DashboardRef.parse(address)


def test_the_reference_round_trips_and_selects_the_head_by_kuberays_labels():
    ref = DashboardRef.parse(REF)
    assert (ref.namespace, ref.cluster, ref.port, str(ref)) == ("serving", "gpuserve-gpu", 8265, REF)
    assert ref.selector == "ray.io/cluster=gpuserve-gpu,ray.io/node-type=head"


def test_the_newest_running_head_wins_when_a_replacement_overlaps():
    def p(name, phase, day, deleting=False):
        return SimpleNamespace(
            metadata=SimpleNamespace(name=name, creation_timestamp=datetime(2026, 11, day, tzinfo=timezone.utc),
                                     deletion_timestamp=datetime(2026, 11, day, tzinfo=timezone.utc) if deleting else None),
            status=SimpleNamespace(phase=phase))
    pods = SimpleNamespace(list_namespaced_pod=lambda ns, label_selector: SimpleNamespace(
        items=[p("a", "Running", 1), p("b", "Running", 2), p("c", "Running", 3, deleting=True), p("d", "Failed", 4)]))
    assert head_pod(pods, DashboardRef.parse(REF)) == "b"
