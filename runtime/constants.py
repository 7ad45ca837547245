"""Facts shared by the operator's side (components, runtime, policies) and the code that
runs in the cluster (the Router): one place, so the two sides cannot drift apart."""

from __future__ import annotations

from pathlib import Path

# The repository root: stack state, shipped models and the code the local Ray head imports.
PROJECT_DIR = Path(__file__).resolve().parent.parent

# The Serve HTTP proxy's own health endpoint (load balancer and liveness checks).
HEALTH_PATH = "/-/healthz"

# The Ray dashboard's port inside a cluster (Serve's REST API lives there). The local
# target chooses its own (`gpuserve:local.dashboard_port`).
DASHBOARD_PORT = 8265

# A local pool's worker nodes (runtime/local_nodes.py): a block of ports per node above
# the head's internal range, and a bound on nodes so the blocks stay inside 65535.
LOCAL_NODE_PORTS_START = 200  # the head's internal range is [internal_ports_start, +200)
LOCAL_NODE_PORTS = 30  # per node: 6 fixed ports, then 24 for its worker processes
MAX_LOCAL_NODES = 16

# What a stack is for (`gpuserve:environment`), on the objects it renders and in each
# rollout's spec: the policy pack's prod-only checks key on it, not on the stack's name.
ENVIRONMENT_LABEL = "gpuserve.io/environment"
