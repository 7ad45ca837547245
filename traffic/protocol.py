"""What the operator's controller and the in-cluster Router agree on. Imported by both
sides; imports nothing itself."""

from __future__ import annotations

# Pins a request to `primary`, `canary` or a version; every response names its version in it.
VERSION_HEADER = "x-serve-version"

# The Router: one Serve app per service, named after it, owning the service's route prefix.
ROUTER_DEPLOYMENT = "Router"
ROUTER_IMPORT_PATH = "traffic.router:build"


def version_app_name(service: str, version: str) -> str:
    """Each version is its own Serve app, `<service>--<version>`, with no route prefix."""
    return f"{service}--{version}"
