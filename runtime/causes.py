"""The cause of a failed replica, read out of the message Serve keeps for its deployment.
PURE.

Serve records a replica's start failure as a wall of text: a preamble, the actor's name
with its pid, IP and actor id, and the traceback, in which Serve's own frames wrap the
user's ("RuntimeError: Traceback ..."). An operator needs three things from it: the
exception's type, its message and where in *their* code it was raised, e.g.
`ValueError: This file contains pickled data ... (at tiny_model.py:35 in load)`.
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;]*m|\[\d+m")
FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|[A-Z]\w*)): ?(?P<text>.*)$")
# Frames of the interpreter, of installed packages and of Ray itself are not the user's.
NOT_USER_CODE = ("site-packages", "dist-packages", "/lib/python3", "<frozen", "ray/serve/_private")
MAX_TEXT = 300


def replica_cause(message: str, frames: int = 2) -> str | None:
    """`Type: text (at file:line in func <- ...)` for the innermost exception in
    `message`, or None when it holds no traceback."""
    lines = [ANSI.sub("", line) for line in message.splitlines()]
    exception_at = None
    for i, line in enumerate(lines):
        found = EXCEPTION.match(line)
        if found and not found.group("text").startswith("Traceback (most recent call last)"):
            exception_at = i  # the last one is the innermost: Serve's wrapper comes first
    if exception_at is None:
        return None
    found = EXCEPTION.match(lines[exception_at])
    text = " ".join([found.group("text")] + _continuation(lines[exception_at + 1:])).strip()
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 3] + "..."
    where = [f"{_short(m['path'])}:{m['line']} in {m['func']}"
             for m in (FRAME.match(line) for line in lines[:exception_at]) if m and _user_code(m["path"])]
    place = f" (at {' <- '.join(reversed(where[-frames:]))})" if where else ""
    return f"{found.group('type')}: {text}{place}" if text else f"{found.group('type')}{place}"


def _continuation(lines: list[str]) -> list[str]:
    """A multi-line exception message goes on until the next frame or blank line."""
    out = []
    for line in lines:
        if not line.strip() or FRAME.match(line):
            break
        out.append(line.strip())
    return out


def _user_code(path: str) -> bool:
    return not any(marker in path for marker in NOT_USER_CODE)


def _short(path: str) -> str:
    """The file's path inside the shipped code (after Ray's `_ray_pkg_<hash>` directory),
    else its last three parts: enough to find the file, without the host's layout."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith("_ray_pkg_"):
            return "/".join(parts[i + 1:])
    return "/".join(parts[-3:])
