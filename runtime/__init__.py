"""Code that runs on the operator's side while `pulumi up` runs: the planner, the
decisions, the controller, the gates and the Serve client. Nothing here imports pulumi.
`runtime/app` is the shipped example model; the code that runs in the cluster's Router
lives in `traffic/`."""
