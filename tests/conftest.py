"""Shared test setup. Integration tests are marked `integration` and need the real
Pulumi CLI (scripts/install-pulumi) and Ray; `pytest -m "not integration"` is the fast loop."""
