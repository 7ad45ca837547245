"""gpuserve: GPU model serving as Pulumi infrastructure. See README.md."""

from components.program import run

run()
