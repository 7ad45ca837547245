"""A RayCluster's dashboard, reached from the operator's machine through the Kubernetes
API's port-forward, as `kubectl port-forward` does.

The dashboard's in-cluster address (`http://<cluster>-head-svc.<ns>.svc.cluster.local:8265`)
cannot be reached from where `pulumi up` runs, and reaching it by any other route would
carry the dashboard token over plain HTTP across a network. Through the API server the
bytes travel inside its TLS connection, authenticated with the kubeconfig the stack
produces (or the ambient one), and need nothing exposed.

A rollout's dashboard address is then `k8s-portforward://<namespace>/<cluster>:<port>`.
`dashboard(address, kubeconfig)` turns it into an `http://127.0.0.1:<port>` for the length
of one provider call: a loopback listener whose every connection is a new port-forward
stream to the cluster's running head pod (looked up per connection, so a replaced head
is followed). Local addresses (`http://127.0.0.1:...`) pass through unchanged.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from runtime.errors import GpuserveError

SCHEME = "k8s-portforward"
HEAD_LABELS = ("ray.io/cluster", "ray.io/node-type=head")
CHUNK = 64 * 1024


class ForwardError(GpuserveError):
    pass


@dataclass(frozen=True)
class DashboardRef:
    namespace: str
    cluster: str
    port: int

    def __str__(self) -> str:
        return f"{SCHEME}://{self.namespace}/{self.cluster}:{self.port}"

    @classmethod
    def parse(cls, address: str) -> "DashboardRef | None":
        """The reference an address names, or None for an address reached directly."""
        if not address.startswith(f"{SCHEME}://"):
            return None
        match = _REF.fullmatch(address[len(SCHEME) + 3:])
        if not match or not 1 <= int(match["port"]) <= 65535:
            raise ForwardError(f"dashboard address {address!r} is not {SCHEME}://<namespace>/<cluster>:<port> "
                               "(DNS-1123 names, a port 1-65535)")
        return cls(match["namespace"], match["cluster"], int(match["port"]))

    @property
    def selector(self) -> str:
        return f"{HEAD_LABELS[0]}={self.cluster},{HEAD_LABELS[1]}"


_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_REF = re.compile(rf"(?P<namespace>{_LABEL})/(?P<cluster>{_LABEL}(?:\.{_LABEL})*):(?P<port>\d{{1,5}})")


class Pods(Protocol):
    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any: ...


def head_pod(pods: Pods, ref: DashboardRef) -> str:
    """The name of the cluster's running head pod, the newest if a replacement overlaps."""
    found = pods.list_namespaced_pod(ref.namespace, label_selector=ref.selector).items
    running = [p for p in found
               if p.status is not None and p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    if not running:
        seen = ", ".join(f"{p.metadata.name} ({p.status.phase if p.status else 'no status'})" for p in found) or "none"
        raise ForwardError(
            f"no running head pod of RayCluster {ref.cluster} in namespace {ref.namespace} "
            f"(selector {ref.selector}; pods: {seen}). See `kubectl -n {ref.namespace} get pods "
            f"-l {ref.selector}` and the KubeRay operator's log.")
    return max(running, key=lambda p: p.metadata.creation_timestamp).metadata.name


def pump(a: socket.socket, b: Any, stop: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or `stop` is set)."""
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                try:
                    data = key.fileobj.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    return
                try:
                    key.data.sendall(data)
                except OSError:
                    return


class Forward:
    """A listener on 127.0.0.1 whose every connection is piped to a new `dial()` stream.
    Used as a context manager; leaving it closes the listener and every open stream."""

    def __init__(self, dial: Callable[[], Any], where: str):
        self._dial, self.where = dial, where
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._threads: list[threading.Thread] = []
        self._open: set = set()
        self._lock = threading.Lock()
        self.failures: list[str] = []

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()
        return f"http://{host}:{port}"

    def __enter__(self) -> "Forward":
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.5)
        accept = threading.Thread(target=self._accept, name=f"forward {self.where}", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.close()
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _serve(self, conn: socket.socket) -> None:
        remote = None
        try:
            try:
                remote = self._dial()
            except Exception as exc:  # noqa: BLE001 - reported to the caller as a refused connection
                self.failures.append(f"{self.where}: {exc}")
                return
            with self._lock:
                self._open.update((conn, remote))
            pump(conn, remote, self._stop)
        finally:
            with self._lock:
                self._open.discard(conn)
                self._open.discard(remote)
            for s in (conn, remote):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()


def api_client(kubeconfig: str | None):
    """A Kubernetes API client from a kubeconfig's text, or the ambient one (KUBECONFIG or
    ~/.kube/config) when the stack declares none."""
    import yaml
    from kubernetes import config

    try:
        if kubeconfig:
            return config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
        return config.new_client_from_config()
    except Exception as exc:  # noqa: BLE001 - the client raises several types for a bad config
        where = "the stack's kubeconfig" if kubeconfig else "the ambient kubeconfig (KUBECONFIG or ~/.kube/config)"
        raise ForwardError(f"cannot load {where}: {exc}") from exc


def dial_head(core: Any, ref: DashboardRef) -> Callable[[], Any]:
    """A function that opens one port-forward stream to the head pod's dashboard port."""
    from kubernetes.stream import portforward

    def dial():
        pod = head_pod(core, ref)
        forward = portforward(core.connect_get_namespaced_pod_portforward, pod, ref.namespace,
                              ports=str(ref.port))
        stream = forward.socket(ref.port)
        stream.setblocking(True)
        # Closing this end is the whole goodbye: the client's proxy thread then closes the
        # websocket itself (closing its socket from here races that thread's recv()).
        return stream
    return dial


@contextlib.contextmanager
def dashboard(address_: str, kubeconfig: str | None = None,
              dial_for: Callable[[DashboardRef], Callable[[], Any]] | None = None) -> Iterator[str]:
    """The URL to reach `address_` at while the block runs. `dial_for` replaces the
    Kubernetes dialer (tests)."""
    ref = DashboardRef.parse(address_)
    if ref is None:
        yield address_
        return
    if dial_for is not None:
        with Forward(dial_for(ref), str(ref)) as forward:
            yield forward.url
        return
    from kubernetes import client

    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        head_pod(core, ref)  # fail now, with the reason, rather than as a refused connection
        with Forward(dial_head(core, ref), str(ref)) as forward:
            yield forward.url
