"""Shared test setup. Integration tests are marked `integration` and need the real
Pulumi CLI (scripts/install-pulumi) and Ray; `pytest -m "not integration"` is the fast loop.

Tests read only what the repo holds or builds: tool versions come from scripts/versions.env,
and what setup fetches (the KubeRay CRDs) lives under .tools/."""

from __future__ import annotations

import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def tool_versions() -> dict[str, str]:
    """scripts/versions.env as a dict: the one place that names what setup builds or fetches."""
    versions = {}
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


def kuberay_crd(name: str) -> Path:
    """A KubeRay CRD fetched by scripts/fetch-crds (make setup / make test-fast run it)."""
    path = REPO / ".tools" / "crds" / f"kuberay-{tool_versions()['KUBERAY_VERSION']}" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/fetch-crds (make test-fast runs it)")
    return path
