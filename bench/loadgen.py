"""Load from a separate process, on loopback, until SIGTERM; every request is one JSON line:
{"t": start (epoch s), "ms": latency, "status": 200 | 503 | ... | "exception:<Name>", "version": ...}

    python -m bench.loadgen URL CLIENTS OUT.jsonl             closed loop: CLIENTS clients, each
                                                              sending its next request on an answer
    python -m bench.loadgen URL WORKERS OUT.jsonl --rate R    open loop: R requests/s on a fixed
                                                              schedule, whatever the answers

Open loop is how saturation is offered: a closed loop slows down with the server and never
overloads it. Each open-loop request is timed from its scheduled start, so a request that
waited for a free worker counts its wait (no coordinated omission); WORKERS bounds the
requests in flight.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading
import time

import httpx

BODY = {"features": [5.9, 3.0, 4.2, 1.5]}


def send(http: httpx.Client, url: str, start: float) -> dict:
    try:
        response = http.post(url, json=BODY)
        status: int | str = response.status_code
        version = response.headers.get("x-serve-version")
        if version is None and status == 200:
            version = response.json().get("version")
    except httpx.HTTPError as exc:
        status, version = f"exception:{type(exc).__name__}", None
    return {"t": round(start, 4), "ms": round((time.time() - start) * 1000, 2), "status": status, "version": version}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("clients", type=int)
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    out = open(args.out, "w", buffering=1)
    slots = itertools.count()
    began = time.time()

    def closed() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                record = send(http, args.url, time.time())
                with lock:
                    out.write(json.dumps(record) + "\n")

    def opened() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                with lock:
                    due = began + next(slots) / args.rate
                if stop.wait(max(0.0, due - time.time())):
                    return
                record = send(http, args.url, due)
                with lock:
                    out.write(json.dumps(record) + "\n")

    threads = [threading.Thread(target=opened if args.rate else closed, daemon=True) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(0.2)
    for thread in threads:
        thread.join(timeout=35)
    out.close()


if __name__ == "__main__":
    main()
