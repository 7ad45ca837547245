"""A resource's properties deserialized once per analyzer call, not once per policy.

pulumi_policy 1.21 (`_PolicyAnalyzerServicer.Analyze`) turns the request's protobuf
properties into Python for every policy of the pack, whether or not the policy looks at
that resource type; `AnalyzeStack` does it for every resource once per stack policy. With
13 policies that is 13 conversions of each ModelRollout's spec per preview, and 13 of
every other resource's props: most of the pack's cost per added service
(`bench/preview_scale.py`).

`install()` (the pack's entry point calls it) makes one Analyze or AnalyzeStack call
convert each message once and hand every policy the same value; `plain_once` gives
every validator of that call the same plain copy. Sharing is safe: the SDK hands props
to policies behind read-only proxies, and our validators read `plain` copies and never
write into them. Outside an analyzer call (unit tests calling validators) nothing is
cached.
"""

from __future__ import annotations

import threading
from functools import wraps
from typing import Any, Callable

from google.protobuf import json_format

from policies import validators as v

_call = threading.local()  # the gRPC server runs calls on a pool of threads


def _memo(key: Any, kind: str, compute: Callable[[], Any]) -> Any:
    """compute() once per (key object, kind) within the current call. The cache holds the
    key object itself, so its id cannot be reused by another object meanwhile."""
    cache = getattr(_call, "cache", None)
    if cache is None:
        return compute()
    hit = cache.get((id(key), kind))
    if hit is not None and hit[0] is key:
        return hit[1]
    value = compute()
    cache[(id(key), kind)] = (key, value)
    return value


class _JsonFormat:
    """`json_format` as pulumi_policy's servicer sees it: MessageToDict memoized per call."""

    def __getattr__(self, name: str) -> Any:
        return getattr(json_format, name)

    @staticmethod
    def MessageToDict(message, *args, **kwargs):  # noqa: N802 (protobuf's name)
        if args or kwargs:
            return json_format.MessageToDict(message, *args, **kwargs)
        return _memo(message, "dict", lambda: json_format.MessageToDict(message))


def _one_cache_per_call(method):
    @wraps(method)
    def call(self, request, context):
        _call.cache = {}
        try:
            return method(self, request, context)
        finally:
            _call.cache = None
    return call


def install() -> None:
    """Patch pulumi_policy's servicer (pinned in constraints.txt; a test checks the names
    this relies on still exist)."""
    from pulumi_policy import policy as sdk

    if getattr(sdk, "_gpuserve_once_per_call", False):
        return
    deserialize = sdk.deserialize_properties

    def deserialize_once(props, *args):
        return _memo(props, f"deserialized{args}", lambda: deserialize(props, *args))

    sdk.json_format = _JsonFormat()
    sdk.deserialize_properties = deserialize_once
    servicer = sdk._PolicyAnalyzerServicer  # pylint: disable=protected-access
    servicer.Analyze = _one_cache_per_call(servicer.Analyze)
    servicer.AnalyzeStack = _one_cache_per_call(servicer.AnalyzeStack)
    sdk._gpuserve_once_per_call = True  # pylint: disable=protected-access


def plain_once(props: Any) -> Any:
    """validators.plain(props), computed once per call for the same underlying value."""
    target = props["__target"] if type(props).__name__ in ("_DictProxy", "_ListProxy") else props
    return _memo(target, "plain", lambda: v.plain(props))
