"""A service's code, content-addressed and shipped the way Ray ships a job's working_dir.

`digest(code_dir)` hashes the files (path and bytes, sorted), so the same tree always has
the same name; `package_uri` is `gcs://_ray_pkg_<hash>.zip`. `ensure_uploaded` sends the
zip through the cluster's package API (the dashboard's `/api/packages/gcs/<name>`, which
Ray's job SDK uses) unless the cluster has it already. Replicas then download it as their
working_dir: nothing relies on them sharing this machine's disk or PYTHONPATH.

`artifact_digest` names an artifact: a local file by its bytes, a remote URI by its text.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import httpx

from runtime.errors import RolloutFailed

# Never part of a service's code: caches, VCS metadata, virtualenvs, our own tool dirs.
EXCLUDED_DIRS = {"__pycache__", ".git", ".hg", ".venv", ".tools", ".state", ".pytest_cache",
                 ".mypy_cache", "node_modules"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
MAX_PACKAGE_BYTES = 512 << 20  # Ray's own limit on a GCS-stored package
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so the same files make the same zip bytes


def files_of(code_dir: Path) -> list[Path]:
    """Every file of the package, in path order. os.walk, pruned at excluded dirs: rglob
    walked into __pycache__ and friends only to drop them, 2 ms for a 5-file app, paid at
    every preview for every service (symlinked dirs are followed, as rglob did)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(code_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith(".venv")]
        top = dirpath == str(code_dir)
        found.extend(Path(dirpath, name) for name in filenames
                     if not name.endswith(EXCLUDED_SUFFIXES) and not (top and name in EXCLUDED_DIRS)
                     and os.path.isfile(os.path.join(dirpath, name)))
    return sorted(found)


def _name(path: Path, root: Path, parent: bool) -> str:
    """A file's name inside the package: relative to the dir, or to its parent for a
    py_module (whose zip holds the package directory itself)."""
    return path.relative_to(root.parent if parent else root).as_posix()


def digest(code_dir: str | Path, include_parent_dir: bool = False) -> str:
    """sha256 over every file's relative path and bytes. Pure apart from reading files."""
    root = Path(code_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"code_dir {root} is not a directory")
    h = hashlib.sha256()
    for path in files_of(root):
        h.update(_name(path, root, include_parent_dir).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def artifact_digest(artifact: str | None) -> str:
    if not artifact:
        return hashlib.sha256(b"").hexdigest()
    path = Path(artifact)
    if "://" not in artifact and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(artifact.encode()).hexdigest()


def package_uri(code_hash: str) -> str:
    return f"gcs://_ray_pkg_{code_hash[:32]}.zip"


def zip_bytes(code_dir: str | Path, include_parent_dir: bool = False) -> bytes:
    root = Path(code_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_of(root):
            info = zipfile.ZipInfo(_name(path, root, include_parent_dir), ZIP_DATE)
            info.external_attr = (path.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    if len(data) > MAX_PACKAGE_BYTES:
        raise RolloutFailed(f"code_dir {root} zips to {len(data) >> 20} MiB, over Ray's "
                            f"{MAX_PACKAGE_BYTES >> 20} MiB package limit; ship large files as the artifact")
    return data


def ensure_uploaded(http: httpx.Client, code_dir: str | Path, code_hash: str,
                    include_parent_dir: bool = False) -> str:
    """Upload the package unless the cluster has it; returns its URI. The GET also pins
    the package for a while, so Ray's GC cannot drop it before Serve references it."""
    uri = package_uri(code_hash)
    name = uri.removeprefix("gcs://")
    found = http.get(f"/api/packages/gcs/{name}")
    if found.status_code == 200:
        return uri
    if found.status_code != 404:
        raise RolloutFailed(f"cluster package API answered {found.status_code} for {name}: {found.text[:200]}")
    actual = digest(code_dir, include_parent_dir)
    if actual != code_hash:
        raise RolloutFailed(f"code_dir {code_dir} changed since preview (hash {actual[:12]}, planned "
                            f"{code_hash[:12]}); run `pulumi up` again")
    put = http.put(f"/api/packages/gcs/{name}", content=zip_bytes(code_dir, include_parent_dir), timeout=300)
    if put.status_code != 200:
        raise RolloutFailed(f"uploading {name} failed with HTTP {put.status_code}: {put.text.strip().splitlines()[-1:]}")
    return uri


def ensure_module_uploaded(http: httpx.Client, module_dir: str | Path) -> str:
    """Upload a Python package directory (e.g. gpuserve's own `traffic`) as a py_module."""
    return ensure_uploaded(http, module_dir, digest(module_dir, include_parent_dir=True), include_parent_dir=True)
