"""The operator's environment reaches the processes gpuserve starts only through an allowlist."""

from __future__ import annotations

from runtime.environment import child_environment


def test_secrets_and_credentials_never_pass_but_what_processes_need_does():
    parent = {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "RAY_DEDUP_LOGS": "0",
              "PIP_CERT": "/ca.pem", "SSL_CERT_FILE": "/ca.pem", "HTTPS_PROXY": "http://proxy:3128",
              "PULUMI_CONFIG_PASSPHRASE": "hunter2", "PULUMI_ACCESS_TOKEN": "pul-x", "AWS_SECRET_ACCESS_KEY": "k",
              "AWS_SESSION_TOKEN": "t", "GITHUB_TOKEN": "g", "RAY_ADDRESS": "10.0.0.1:6379", "PYTHONPATH": "/elsewhere"}
    env = child_environment(parent, PYTHONPATH="/project")
    assert env == {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "RAY_DEDUP_LOGS": "0",
                   "PIP_CERT": "/ca.pem", "SSL_CERT_FILE": "/ca.pem", "HTTPS_PROXY": "http://proxy:3128",
                   "PYTHONPATH": "/project"}
