"""Where the Router lived before it moved to `traffic.router`. Routers deployed by gpuserve
0.1.0 name this import path; Serve imports it again whenever it restarts such a replica,
until the next change of the service redeploys the router from `traffic.router`."""

from traffic.router import Router, build  # noqa: F401

__all__ = ["Router", "build"]
