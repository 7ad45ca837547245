"""What the operator's controller and the in-cluster Router agree on. Imported by both
sides; imports nothing itself."""

from __future__ import annotations

# Pins a request to `primary`, `canary` or a version; every response names its version in it.
VERSION_HEADER = "x-serve-version"

# The routing record: one Serve app per service, named after it, holding the table that
# the splitter (splitter/table.go) reads. Keep these in step with splitter/*.go.
ROUTER_DEPLOYMENT = "Router"
ROUTER_IMPORT_PATH = "traffic.router:app"
# The splitter's own paths under every public address; all others belong to the apps.
RESERVED_PREFIX = "/-/gpuserve/"


def version_app_name(service: str, version: str) -> str:
    """Each version is its own Serve app, `<service>--<version>`, on a hidden prefix."""
    return f"{service}--{version}"
