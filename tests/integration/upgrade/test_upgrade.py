"""A stack made by gpuserve 0.1.0's toolchain (Pulumi CLI and SDK 3.79 on Python 3.11) keeps
working after the upgrade. 0.2 ships the service's code as a content-addressed package, so
the same version label would now name other code: the preview refuses it and says to bump
the version; `up` with a new label rolls out onto the new data plane (the splitter), and
the stack then previews with no change and destroys cleanly.

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
                   python_cmd=False)
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
    settings["config"] = config_document(ports, 2, [SERVICE], ROLLOUT)  # room for a one-replica surge
    stack_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    pulumi("up", "--yes", "--skip-preview", "--stack", name)


def test_a_stack_made_by_the_previous_release_upgrades_by_rolling_out_a_new_label(tmp_path, legacy_toolchain):
    base = free_port_block()
    ports = {"http_port": base, "dashboard_port": base + 1, "gcs_port": base + 2, "internal_ports_start": base + 5}
    name = "upgraded"
    try:
        legacy_up(tmp_path, name, ports, legacy_toolchain)
    finally:
        # From here on, today's toolchain owns the stack (and its destroy, whatever happens).
        stack = LocalStack(tmp_path, gpus=2, services=[SERVICE], rollout=ROLLOUT, name=name,
                           ports={**ports, "public_port": base + 3})
    try:
        legacy_endpoint = f"http://127.0.0.1:{base}/llm"  # 0.1 served on Serve's own proxy
        served = httpx.post(legacy_endpoint, json={"features": [5.9, 3.0, 4.2, 1.5]}, timeout=30)
        assert served.json()["version"] == "v1"
        refused = stack.preview(check=False)
        assert not refused.ok
        assert "version v1 of llm is immutable, but import_path, artifact changed" in refused.log, refused.report()
        stack.services = [{**SERVICE, "version": "v2"}]
        stack.write_config()
        stack.up()
        answer = httpx.post(stack.endpoint("llm"), json={"features": [5.9, 3.0, 4.2, 1.5]}, timeout=30)
        assert (answer.status_code, answer.json()["version"]) == (200, "v2")
        assert stack.outputs()["serving_versions"] == {"llm": "v2"}
        assert stack.preview().changes == {}
    finally:
        stack.destroy()
