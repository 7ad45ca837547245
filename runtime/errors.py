"""Project errors. Each message answers: what failed, where, and what to do now."""


class GpuserveError(Exception):
    """Base class for every error gpuserve raises on purpose."""


class ServeApiError(GpuserveError):
    """The Ray Serve REST API refused a request or could not be reached."""


class LocalClusterError(GpuserveError):
    """The local Ray head could not be started, reached or stopped."""


class RolloutFailed(GpuserveError):
    """A rollout was rolled back; the message names the service, versions, wave and gate."""
