"""From any bytes to a stack config document, or one ConfigError naming every problem.

A stack file is read strictly, so that what the user meant is what gets validated:
- UTF-8 only; YAML's own syntax errors are reported with their line and column;
- a key given twice is an error (YAML loaders silently keep the last one);
- keys are strings; dates stay the text they were written as (no YAML timestamps);
- nesting deeper than `MAX_DEPTH` is refused before anything recurses over it;
- values are plain data, and numbers finite and within 64 bits (`check_values`, also run
  on the values the Pulumi program receives).
Nothing here raises anything but ConfigError for a bad input.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from components.config_errors import NAMESPACE, ConfigError

MAX_DEPTH = 32
MAX_BYTES = 4 << 20
INT_LIMIT = 1 << 63


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate and non-string keys instead of merging them, and
    leaves dates as text."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.problems: list[tuple[str, Any, str]] = []


# No implicit timestamps: `version: 2024-01-01` is the text "2024-01-01".
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        where = f"line {key_node.start_mark.line + 1}"
        if not isinstance(key, str):
            loader.problems.append((f"key {key!r} ({where})", key, "a string key"))
            continue
        if key in out:
            loader.problems.append((f"key '{key}' ({where})", "a second value", "each key once per mapping"))
            continue
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _depth(node: yaml.Node) -> int:
    """How deeply a composed YAML node nests, without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(current, yaml.MappingNode):
            stack += [(n, depth + 1) for pair in current.value for n in pair]
        elif isinstance(current, yaml.SequenceNode):
            stack += [(n, depth + 1) for n in current.value]
    return deepest


def parse(text: str, stack: str) -> Any:
    """The YAML document in `text`, strictly; ConfigError otherwise."""
    loader = None
    try:
        loader = _StrictLoader(text)  # its reader already refuses unprintable characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _depth(node) > MAX_DEPTH:
            raise ConfigError(stack, [("<file>", f"nesting deeper than {MAX_DEPTH} levels",
                                       "a stack config (it nests a few levels)")])
        document = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
        what = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(stack, [(f"<file> at {where}", what, "valid YAML")]) from None
    except RecursionError:
        raise ConfigError(stack, [("<file>", "nesting too deep to read", "a stack config")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if loader.problems:
        raise ConfigError(stack, loader.problems)
    return document


def read_stack_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(stack name, the `config:` mapping) of a stack file, from whatever bytes it holds."""
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    try:
        if path.is_dir():
            raise ConfigError(stack, [(str(path), "a directory", "a stack file")])
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(stack, [(str(path), "no such file", "a stack file, e.g. stacks/Pulumi.local.yaml")]) from None
    except OSError as exc:
        raise ConfigError(stack, [(str(path), exc.strerror, "a readable stack file")]) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(stack, [("<file>", f"{len(data)} bytes", f"a stack file under {MAX_BYTES >> 20} MiB")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(stack, [("<file>", f"byte 0x{data[exc.start]:02x} at offset {exc.start}",
                                   "UTF-8 text")]) from None
    document = parse(text, stack)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(stack, [("<file>", f"a YAML {type(document).__name__}", "a mapping with a `config:` key")])
    config = document.get("config")
    if config is None:
        return stack, {}
    if not isinstance(config, dict):
        raise ConfigError(stack, [("config", config, "a mapping of `gpuserve:<key>: <value>`")])
    return stack, config


PLAIN = (str, int, float, bool, type(None), list, dict)


def check_values(document: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """Every value no setting can mean: a number not finite or beyond 64 bits, or a YAML
    value that is no plain data (`!!binary`, `!!set`, an explicit `!!timestamp`). Key
    paths as the user wrote them (`gpuserve:services[0].num_replicas`). No recursion."""
    problems = []
    pending: list[tuple[str, Any]] = [(f"{NAMESPACE}:{key}", value) for key, value in document.items()]
    while pending:
        path, value = pending.pop()
        if not isinstance(value, PLAIN):
            problems.append((path, f"a YAML {type(value).__name__}", "plain data: text, a number, true/false, "
                             "a list or a mapping"))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append((path, value, "a finite number"))
        elif isinstance(value, int) and not -INT_LIMIT < value < INT_LIMIT:
            problems.append((path, f"an integer of {len(str(abs(value)))} digits", "a number that fits 64 bits"))
        elif isinstance(value, dict):
            pending += [(f"{path}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return sorted(problems, key=lambda p: p[0])
