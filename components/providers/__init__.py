"""Pulumi dynamic providers for the local target. Each is a thin, picklable adapter over
`runtime/`: clients are created inside methods, never stored on the provider."""
