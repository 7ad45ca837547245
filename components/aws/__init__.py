"""The aws target: pure renderers of what we declare on EKS and Kubernetes (`render`),
so every object can be checked against its real schema without a cloud account."""
