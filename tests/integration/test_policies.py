"""The policy pack on the real CLI: it passes the shipped local shape and stops a surge
that does not fit the pool at preview time, before any resource exists. Violations are read
from the engine's policy events."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.harness import POLICY_PACK, LocalStack

pytestmark = pytest.mark.integration

SERVICE = {"name": "llm", "pool": "gpu", "version": "v1", "ray_actor_options": {"num_gpus": 1},
           "graceful_shutdown_timeout_s": 5, "request_timeout_s": 5, "max_queued_requests": 32}


def test_the_shipped_local_shape_passes_the_pack(tmp_path):
    stack = LocalStack(tmp_path, gpus=4, services=[{**SERVICE, "num_replicas": 2}],
                       rollout={"max_surge_percent": 50})
    result = stack.preview(check=False, policy_packs=[POLICY_PACK])
    assert result.ok, result.report()
    assert result.policy_violations == []
    # The pack did run: the CLI names it among the packs it loaded (no event carries that).
    assert "gpuserve@v0.1.0" in result.output


@pytest.fixture
def violating(tmp_path):
    # N=4 at 1 GPU with p=25 peaks at 5 GPUs on a 4-GPU pool: valid config, unsafe rollout.
    stack = LocalStack(tmp_path, gpus=4, services=[{**SERVICE, "num_replicas": 4}],
                       rollout={"max_surge_percent": 25})
    yield stack
    # Should a change let the pack through, the Ray head it starts must not outlive the test.
    stack.destroy()


def test_a_surge_that_does_not_fit_fails_the_preview_before_anything_exists(violating):
    stack = violating
    result = stack.preview(check=False, policy_packs=[POLICY_PACK])
    assert not result.ok
    (violation,) = result.policy_violations
    assert (violation.policy_name, violation.enforcement_level) == ("rollout-surge-fits-capacity", "mandatory")
    assert ("a rollout of llm must fit its node pool 'gpu': peak (N + ceil(p% * N)) x gpus_per_replica = "
            "(4 + 1) x 1 = 5 GPUs > 4 GPUs in the pool.") in violation.message
    # `make up` runs `pulumi up` with its preview, and the preview is where the pack stops
    # everything. The Automation API's up always skips the preview, so this one runs the CLI
    # as the Makefile does.
    up = subprocess.run([str(stack.toolchain.bin / "pulumi"), "up", "--yes", "--non-interactive", "--stack",
                         stack.name, "--policy-pack", POLICY_PACK], cwd=stack.project, env=stack.env,
                        capture_output=True, text=True, timeout=600)
    assert up.returncode != 0 and "rollout-surge-fits-capacity" in up.stdout, up.stdout[-3000:]
    assert [r for r in stack.resources() if r["type"] != "pulumi:pulumi:Stack"] == []
    assert stack.ray_head() is None


def test_policy_config_can_lower_a_policy_to_advisory(violating, tmp_path):
    stack = violating
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"rollout-surge-fits-capacity": "advisory"}))
    result = stack.preview(check=False, policy_packs=[POLICY_PACK], policy_pack_configs=[str(config)])
    assert result.ok, result.report()
    (violation,) = result.policy_violations
    assert (violation.policy_name, violation.enforcement_level) == ("rollout-surge-fits-capacity", "advisory")
