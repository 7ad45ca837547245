"""A stack made by gpuserve 0.1.0's toolchain (Pulumi CLI and SDK 3.79 on Python 3.11) keeps
working after the upgrade: the current toolchain previews it with no change, and `up` and
`destroy` go through.

The "before" half runs the old CLI directly, as `make up` did then: the Automation API of
today's SDK speaks flags the 3.79 CLI does not know.
"""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest
import yaml

from tests.integration.harness import (REPO, LocalStack, Toolchain, config_document, free_port_block,
                                       prepare_project, stack_env_vars)

pytestmark = pytest.mark.integration

INSTALL = REPO / "tests" / "integration" / "upgrade" / "install-legacy"
LEGACY = Toolchain(root=REPO / ".tools" / "legacy-v3.79.0", venv=REPO / ".tools" / "legacy-v3.79.0" / "venv",
                   python_cmd=False, supervised=False)
SERVICE = {"name": "llm", "pool": "gpu", "version": "v1", "num_replicas": 1,
           "ray_actor_options": {"num_gpus": 1}, "graceful_shutdown_timeout_s": 1}
ROLLOUT = {"bake_seconds": 0}


@pytest.fixture(scope="module")
def legacy_toolchain() -> Toolchain:
    built = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=1800)
    if built.returncode == 3:  # no Python 3.11 on this machine: 0.1.0 cannot be installed here
        pytest.skip(built.stderr.strip())
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = subprocess.run([str(LEGACY.bin / "pulumi"), "version"], capture_output=True, text=True)
    assert version.stdout.strip() == "v3.79.0"
    return LEGACY


def legacy_up(root, name: str, ports: dict, toolchain: Toolchain) -> None:
    """`pulumi stack init` + `pulumi up` with the old CLI, the stack file written by hand."""
    project = prepare_project(root, toolchain)
    # `make test` exports today's PULUMI_PYTHON_CMD; 3.79's host must not see it (Toolchain.python_cmd).
    inherited = {k: v for k, v in os.environ.items() if k != "PULUMI_PYTHON_CMD"}
    env = {**inherited, **stack_env_vars(root, toolchain), "PULUMI_HOME": str(root / "pulumi-home")}

    def pulumi(*args: str) -> None:
        result = subprocess.run([str(toolchain.bin / "pulumi"), *args, "--non-interactive"], cwd=project,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"old CLI: pulumi {' '.join(args)}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"

    pulumi("stack", "init", name)
    stack_file = project / "stacks" / f"Pulumi.{name}.yaml"
    settings = yaml.safe_load(stack_file.read_text()) if stack_file.exists() else {}
    settings["config"] = config_document(ports, 1, [SERVICE], ROLLOUT)
    stack_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    pulumi("up", "--yes", "--skip-preview", "--stack", name)


def test_a_stack_made_by_the_previous_release_previews_with_no_change_after_the_upgrade(tmp_path, legacy_toolchain):
    base = free_port_block()
    ports = {"http_port": base, "dashboard_port": base + 1, "gcs_port": base + 2, "public_port": base + 3,
             "internal_ports_start": base + 5}
    name = "upgraded"
    stack = None
    try:
        legacy_up(tmp_path, name, ports, legacy_toolchain)
        # From here on, today's toolchain owns the stack (and its destroy, whatever happens).
        stack = LocalStack(tmp_path, gpus=1, services=[SERVICE], rollout=ROLLOUT, name=name, ports=ports)
        served = httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}, timeout=30)
        assert served.json()["version"] == "v1"
        preview = stack.preview()
        assert preview.changes == {}, preview.report()
        assert stack.up().changes == {}
        assert stack.outputs()["serving_versions"] == {"llm": "v1"}
    finally:
        # A failed legacy `up` leaves a half-made stack too: today's toolchain destroys it.
        (stack or LocalStack(tmp_path, gpus=1, services=[SERVICE], rollout=ROLLOUT, name=name, ports=ports)).destroy()
