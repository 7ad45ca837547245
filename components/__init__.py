"""Pulumi component resources, one per module, each thin over `runtime/`."""
