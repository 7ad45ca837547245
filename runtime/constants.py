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
