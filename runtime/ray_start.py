"""`ray start`, keeping every Ray process of a local cluster on loopback:
`python -m runtime.ray_start start …`, with LOOPBACK_ENV in the environment.

Ray turns 127.0.0.1 into the machine's outward address wherever it meets it
(`ray._private.services.resolve_ip_for_localhost` -> `get_node_ip_address`), so that
other machines could join: the node address, and with it the GCS, the Ray client server
and the agents, end up listening on the network, and every process that connects
(dashboard modules, drivers) goes through it. Ray's switch for clusters that stay on one
machine is `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (the default on macOS and Windows): then
that resolution answers 127.0.0.1, in every process the cluster starts, which inherit it.

The same switch makes `ray start --address` (a worker node joining) refuse to run, and
the CLI would still resolve the node address it is given. So here, in the CLI process
only, the join is allowed and the address kept as given; the processes it starts see
the environment variable. Ray's own test clusters (ray.cluster_utils.Cluster) run several
nodes on 127.0.0.1 the same way.
"""

from __future__ import annotations

import sys

# For the cluster's processes: every Ray process that resolves "127.0.0.1" keeps it.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def main() -> None:
    from ray._private import ray_constants, services

    ray_constants.ENABLE_RAY_CLUSTER = True  # this process may join a head on this machine
    services.resolve_ip_for_localhost = lambda host: host  # and keeps --node-ip-address as given
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    ray_main()


if __name__ == "__main__":
    main()
