"""What the processes gpuserve starts on this machine may see of the operator's environment.

Ray's head (and so every raylet, worker and replica it spawns) and the splitter instances
get an allowlist, never the whole environment: `pulumi up` runs with
PULUMI_CONFIG_PASSPHRASE, cloud credentials and tokens, and a replica runs user code that
must not read them. A replica's own variables are the ones its runtime_env declares.
"""

from __future__ import annotations

from collections.abc import Mapping

# Where programs are, whose they are, and how text is read and written.
BASE = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE", "TERM")
# How this machine reaches package registries, which a runtime_env's `pip:` install needs:
# proxies, trusted CA bundles, and pip's own settings.
NETWORK = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
           "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# Ray's own settings pass (RAY_*), except those naming a cluster to join: ours is chosen
# explicitly, and a stray address would attach the head to someone else's.
RAY_EXCLUDED = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def allowed(name: str) -> bool:
    return (name in BASE or name in NETWORK or name.startswith(("LC_", "PIP_"))
            or (name.startswith("RAY_") and name not in RAY_EXCLUDED))


def child_environment(parent: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The allowlisted part of `parent`, plus `extra` (which wins). Pure."""
    return {**{k: v for k, v in parent.items() if allowed(k)}, **extra}
