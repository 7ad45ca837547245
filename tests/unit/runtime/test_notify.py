"""Webhooks for a rollout's events: every event in order, retried, never in the way."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime.notify import Notifier, payload
from runtime.spec import Webhook
from tests.unit.runtime import test_controller as tc


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records each POSTed body, answering `codes` in
    turn (then 200), after `delay_s`."""

    def __init__(self, codes=(), delay_s: float = 0.0):
        self.bodies, self.codes, self.delay_s = [], list(codes), delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                time.sleep(receiver.delay_s)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = receiver.codes.pop(0) if receiver.codes else 200
                if code == 200:
                    receiver.bodies.append(body)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**options):
        made.append(Receiver(**options))
        return made[-1]
    yield make
    for r in made:
        r.close()


def rollout(serve, hooks, prober=None, log=None):
    wanted = tc.spec("v2")
    wanted = wanted.model_copy(update={"rollout": wanted.rollout.model_copy(update={"notify": hooks})})
    controller = tc.RolloutController(wanted, serve, prober=prober or tc.FakeProber(), log=log or (lambda line: None),
                                      poll_s=1.0)
    try:
        with tc.offline(serve):
            controller.converge()
    finally:
        controller.close()
    return controller


def test_a_receiver_on_loopback_gets_every_event_of_a_rollout_in_order(receiver):
    hook = receiver()
    rollout(tc.serving("v1"), [Webhook(url=hook.url)])
    events = [(b["event"], b.get("wave")) for b in hook.bodies]
    assert events == [("start", None), ("wave", 1), ("wave", 2), ("wave", 3), ("done", None)]
    assert hook.bodies[0]["from"] == "v1" and hook.bodies[0]["to"] == "v2" and hook.bodies[0]["service"] == "llm"
    assert hook.bodies[-1]["outcome"] == "promoted"


def test_a_rolled_back_rollout_says_why_and_a_slack_hook_gets_text(receiver):
    plain, slack = receiver(), receiver()
    hooks = [Webhook(url=plain.url), Webhook(url=slack.url, format="slack", events=["rollback", "done"])]
    with pytest.raises(tc.RolloutFailed):
        rollout(tc.serving("v1"), hooks, prober=tc.FakeProber(fail_at=2))
    assert [b["event"] for b in plain.bodies] == ["start", "wave", "rollback", "done"]
    assert "success rate 71.0%" in plain.bodies[2]["reason"] and plain.bodies[-1]["outcome"] == "rolled back"
    assert [set(b) for b in slack.bodies] == [{"text"}, {"text"}]
    assert slack.bodies[0]["text"].startswith("[llm] rollback: rolling back v2 -> v1")


def test_a_failing_hook_is_retried_with_backoff_and_a_refusing_one_is_not(receiver):
    flaky, refusing = receiver(codes=[503, 503]), receiver(codes=[400])
    lines = []
    notifier = Notifier([Webhook(url=flaky.url), Webhook(url=refusing.url, events=["done"])], log=lines.append,
                        backoff_s=0.01)
    notifier.send("done", "llm", "rollout complete")
    notifier.close()
    assert [b["event"] for b in flaky.bodies] == ["done"]  # the third attempt got through
    assert refusing.bodies == [] and any("refused the done event: HTTP 400" in line for line in lines)


def test_a_dead_hook_neither_blocks_the_rollout_nor_leaks_its_secret_path(receiver):
    dead = receiver()
    url = dead.url
    dead.close()  # nothing listens there any more
    lines = []
    started = time.monotonic()
    rollout(tc.serving("v1"), [Webhook(url=url)], log=lines.append)
    assert time.monotonic() - started < 30
    dropped = [line for line in lines if "dropped" in line]
    assert dropped and all("secret-token" not in line for line in dropped)


def test_sending_returns_at_once_while_a_hook_is_slow(receiver):
    slow = receiver(delay_s=1.0)
    notifier = Notifier([Webhook(url=slow.url)])
    started = time.monotonic()
    for event in ("start", "wave", "done"):
        notifier.send(event, "llm", "m")
    assert time.monotonic() - started < 0.2
    notifier.close(wait_s=10)
    assert [b["event"] for b in slow.bodies] == ["start", "wave", "done"]


def test_the_slack_payload_is_one_line_of_text():
    hook = Webhook(url="https://hooks.slack.com/services/T/B/X", format="slack")
    assert payload(hook, {"event": "done", "service": "llm", "message": "rollout complete"}) == {
        "text": "[llm] done: rollout complete"}
    assert hook.redacted() == "https://hooks.slack.com/…"
