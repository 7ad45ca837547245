"""Where the Router lived in gpuserve 0.1.0, whose routers name this import path. Serve
imports it again if it restarts such a replica before the controller rewrites the
service's routing record (traffic.router), which it does at the service's next write."""

from traffic.router import RoutingRecord as Router, build  # noqa: F401

__all__ = ["Router", "build"]
