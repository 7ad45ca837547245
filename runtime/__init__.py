"""Code that runs at rollout time (planner, controller, gates, Serve client) and on the
serving side (runtime/app). Nothing here imports pulumi."""
