"""How an invalid stack config is reported: one error that lists every problem as
`<key path>: got <value>; allowed: <what>`, the paths as the user wrote them."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from runtime.errors import GpuserveError

NAMESPACE = "gpuserve"


class ConfigError(GpuserveError):
    """Invalid stack config. `problems` holds (key path, value given, what is allowed)."""

    def __init__(self, stack: str, problems: list[tuple[str, Any, str]]):
        self.stack = stack
        self.problems = problems
        lines = [f"  - {path}: got {show(value)}; allowed: {allowed}" for path, value, allowed in problems]
        super().__init__(
            f"invalid stack config for stack '{stack}' ({len(problems)} "
            f"problem{'s' if len(problems) != 1 else ''}); nothing was changed:\n"
            + "\n".join(lines)
            + f"\nFix stacks/Pulumi.{stack}.yaml (or `pulumi config set`) and run again."
        )


def problem(err: dict, document: dict, root: Any) -> tuple[str, Any, str]:
    """One pydantic error as (key path the user wrote, value given, what is allowed).
    `root` is the model the document was validated against (for the known keys)."""
    loc = list(err["loc"])
    if loc and loc[0] in ("local", "kubernetes", "aws") and document.get("target") == loc[0]:
        loc = loc[1:]  # drop the discriminator's tag: it is not a key the user wrote
    path = _key_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return path, err["input"], f"a known key ({_known_keys(root, loc[:-1])})"
    if kind == "missing":
        return path, "nothing", "a value (this key is required)"
    if kind == "union_tag_invalid":
        return f"{NAMESPACE}:target", document.get("target"), "'local', 'kubernetes' or 'aws'"
    allowed = re.sub(r"^(Value error, |Input should be |Assertion failed, )", "", err["msg"])
    named = re.match(r"^(\w+): (.*)$", allowed)
    if kind == "value_error" and named and isinstance(err.get("input"), dict):
        # A model-level rule names the key it is about: report that key's path.
        key, allowed = named.groups()
        return f"{path}.{key}", err["input"].get(key), allowed
    return path, err.get("input"), allowed


def _key_path(loc: list) -> str:
    if not loc:
        return f"{NAMESPACE}:<root>"
    path = f"{NAMESPACE}:{loc[0]}"
    for part in loc[1:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _known_keys(model: Any, loc: list) -> str:
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return "see components/config.py"
        model = _model_of(field.annotation)
    return ", ".join(getattr(model, "model_fields", {})) or "see components/config.py"


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
