"""Read what Ray itself reports: GPUs held by live actors, from the State API
(`/api/v0/actors` on the dashboard). Used by tests and benchmarks to check the surge
budget against the cluster, not against our own bookkeeping."""

from __future__ import annotations

import httpx

ALIVE_ACTORS = (
    "/api/v0/actors?limit=10000&detail=1"
    "&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
)


def gpus_in_use(dashboard_url: str, token: str, client: httpx.Client | None = None,
                app: str | None = None) -> float:
    """Sum of GPUs held by ALIVE actors (Serve replicas hold theirs until they exit).

    With `app`, only Serve replicas of that application and of its version apps
    (`<app>--<version>`) count; their actors are named `SERVE_REPLICA::<app>#<deployment>#<id>`.
    """
    http = client or httpx.Client(timeout=5)
    try:
        response = http.get(f"{dashboard_url.rstrip('/')}{ALIVE_ACTORS}",
                            headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        actors = response.json()["data"]["result"]["result"]
    finally:
        if client is None:
            http.close()
    if app is not None:
        actors = [a for a in actors if _replica_app(a.get("name") or "") in (app,)
                  or _replica_app(a.get("name") or "").startswith(f"{app}--")]
    return sum(float((a.get("required_resources") or {}).get("GPU", 0.0)) for a in actors)


def _replica_app(actor_name: str) -> str:
    prefix = "SERVE_REPLICA::"
    return actor_name[len(prefix):].split("#", 1)[0] if actor_name.startswith(prefix) else ""
