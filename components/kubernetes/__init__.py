"""The kubernetes target: what gpuserve deploys into any cluster (the aws target too)."""
