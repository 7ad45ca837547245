"""`ray start`, keeping the node's address on loopback: `python -m runtime.ray_start start …`.

Ray's CLI turns `--node-ip-address=127.0.0.1` into the machine's outward address
(`ray._private.services.resolve_ip_for_localhost`, so that other machines could join),
and every listener that binds the node address (the Ray client server, the runtime-env
agent, the dashboard agent's HTTP server) then listens on the network. gpuserve's local
clusters are one machine: here that resolution keeps what it was given. Ray's own test
clusters (ray.cluster_utils.Cluster) run several nodes on 127.0.0.1 the same way.
"""

from __future__ import annotations

import sys


def main() -> None:
    from ray._private import services

    services.resolve_ip_for_localhost = lambda host: host
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
