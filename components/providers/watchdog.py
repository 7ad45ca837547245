"""Exit a dynamic provider process when the Pulumi engine that started it is gone.

Pulumi starts each Python dynamic provider as `sh pulumi-resource-pulumi-python` ->
`python -m pulumi.dynamic`, in a process group of its own. If `pulumi up` is killed, the
provider is not: it would keep running a rollout nobody watches, racing the next `up`.
So every provider method arms this watchdog; once the launcher's parent (the engine)
changes, the provider exits at once, exactly as if it had been killed with the engine.
Live state is the truth, so the next `pulumi up` resumes from wherever it stopped.
"""

from __future__ import annotations

import os
import threading
import time

_armed = False


def _parent_of(pid: int) -> int | None:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def arm(period_s: float = 0.5) -> None:
    global _armed
    if _armed or not os.path.exists("/proc"):
        return
    launcher = os.getppid()
    engine = _parent_of(launcher)
    if engine in (None, 0, 1):
        return  # not started by an engine we can watch (tests, a debugger)
    _armed = True

    def watch() -> None:
        while True:
            time.sleep(period_s)
            if os.getppid() != launcher or _parent_of(launcher) != engine:
                # No goodbye on stdout: the engine's end of that pipe is gone too.
                os._exit(1)

    threading.Thread(target=watch, name="engine-watchdog", daemon=True).start()
