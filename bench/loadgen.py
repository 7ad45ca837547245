"""Steady load from a separate process: `clients` concurrent clients on loopback, each
POSTing in a loop until SIGTERM, recording every request as one JSON line:
{"t": start (epoch s), "ms": latency, "status": 200 | 503 | ... | "exception:<Name>", "version": ...}

    python -m bench.loadgen URL CLIENTS OUT.jsonl
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import httpx

BODY = {"features": [5.9, 3.0, 4.2, 1.5]}


def main(url: str, clients: int, out_path: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    out = open(out_path, "w", buffering=1)

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                start = time.time()
                try:
                    response = http.post(url, json=BODY)
                    status: int | str = response.status_code
                    version = response.headers.get("x-serve-version")
                    if version is None and status == 200:
                        version = response.json().get("version")
                except httpx.HTTPError as exc:
                    status, version = f"exception:{type(exc).__name__}", None
                record = {"t": round(start, 4), "ms": round((time.time() - start) * 1000, 2),
                          "status": status, "version": version}
                with lock:
                    out.write(json.dumps(record) + "\n")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(0.2)
    for thread in threads:
        thread.join(timeout=35)
    out.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
