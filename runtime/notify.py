"""Webhooks for a rollout's events, never in its way.

Events: `start` (a rollout begins or resumes), `wave` (a wave is done), `rollback` (a
rollback begins, with why), `done` (the rollout ended: promoted, rolled back, aborted or
held). Each is a JSON POST to every configured hook (`rollout.notify`), or Slack's
incoming-webhook shape (`{"text": ...}`) for `format: slack`.

Delivery runs on one daemon thread per run, so the rollout never waits for a hook;
events reach each hook in order; a failed POST (connection error, 5xx, 429) is retried
with exponential backoff (tenacity) a few times, then dropped with one line in the log.
When the run ends, `close` gives the queue a bounded few seconds to drain.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import httpx
from tenacity import RetryError, retry, retry_if_exception, stop_after_attempt, wait_exponential

from runtime.spec import Webhook

EVENTS = ("start", "wave", "rollback", "done")
ATTEMPTS = 4
CLOSE_WAIT_S = 5.0


class _Retryable(Exception):
    pass


def payload(hook: Webhook, event: dict) -> dict:
    """PURE. What one hook receives for one event."""
    if hook.format == "slack":
        return {"text": f"[{event['service']}] {event['event']}: {event['message']}"}
    return event


class Notifier:
    """Posts each event to each hook that wants it, in order, off the rollout's thread."""

    def __init__(self, hooks: list[Webhook], log: Callable[[str], None] | None = None,
                 transport: httpx.BaseTransport | None = None, backoff_s: float = 0.5):
        self.hooks = list(hooks)
        self.log = log or (lambda line: print(line, flush=True))
        self._queue: queue.Queue = queue.Queue()
        self._client = httpx.Client(transport=transport, timeout=5.0)
        self._backoff_s = backoff_s
        self._thread = threading.Thread(target=self._deliver_all, name="gpuserve-notify", daemon=True)
        self._thread.start()

    def send(self, event: str, service: str, message: str, **fields) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        body = {"event": event, "service": service, "message": message, "at": round(time.time(), 3), **fields}
        for hook in self.hooks:
            if not hook.events or event in hook.events:
                self._queue.put((hook, body))

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Give what is queued up to `wait_s` to go out; the rest is dropped, said once."""
        self._queue.put(None)
        self._thread.join(wait_s)
        left = self._queue.qsize()
        if self._thread.is_alive() and left:
            self.log(f"notify: {left} webhook events not delivered within {wait_s:g}s; dropped")
        if not self._thread.is_alive():
            self._client.close()

    def _deliver_all(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hook, body = item
            try:
                self._post(hook, body)
            except (RetryError, httpx.HTTPError, _Retryable) as exc:
                cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
                self.log(f"notify: {body['event']} event to {hook.redacted()} dropped after {ATTEMPTS} attempts: "
                         f"{type(cause).__name__}: {cause}")

    def _post(self, hook: Webhook, body: dict) -> None:
        @retry(stop=stop_after_attempt(ATTEMPTS), wait=wait_exponential(multiplier=self._backoff_s, max=8),
               retry=retry_if_exception(lambda e: isinstance(e, (httpx.TransportError, _Retryable))), reraise=False)
        def once() -> None:
            response = self._client.post(hook.url, json=payload(hook, body))
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                # A 4xx will not change on retry: the hook's URL or payload is wrong.
                self.log(f"notify: {hook.redacted()} refused the {body['event']} event: HTTP {response.status_code}")
        once()


def notifier_for(hooks: list[Webhook], log: Callable[[str], None] | None = None) -> Notifier | None:
    return Notifier(hooks, log) if hooks else None
