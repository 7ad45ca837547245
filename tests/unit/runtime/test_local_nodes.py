"""A local pool's worker nodes: their `ray start`, and when a shrink must be refused."""

from __future__ import annotations

import pytest

from runtime.local_nodes import WorkerSpec, command, shrink_refusal, worker_ports_start

SPEC = WorkerSpec(pool="gpu", slot=2, gpus=2, num_cpus=2, gcs_port=18379, internal_ports_start=18400,
                  token_path="/t", state_dir="/s")


def test_a_node_joins_the_head_on_loopback_with_its_gpus_and_the_pools_label_resource():
    argv = command(SPEC)
    assert argv[1:6] == ["-m", "runtime.ray_start", "start", "--address=127.0.0.1:18379", "--block"]
    assert {"--node-ip-address=127.0.0.1", "--node-name=gpu-2", "--num-gpus=2",
            '--resources={"pool:gpu": 2}'} <= set(argv)


def test_each_slot_has_its_own_port_block_above_the_heads():
    assert worker_ports_start(18400, 0) == 18600
    assert "--node-manager-port=18660" in command(SPEC)
    assert "--max-worker-port=18689" in command(SPEC)  # the last port of slot 2's block


def node(name: str, node_id: str) -> dict:
    return {"node_name": name, "node_id": node_id}


def test_a_shrink_whose_replicas_fit_on_the_nodes_that_stay_is_allowed():
    # 3 one-GPU nodes, replicas on a and c; c leaves, b is free.
    assert shrink_refusal([node("gpu-2", "c")], kept_gpus=2, used={"a": 1, "c": 1}) is None


def test_a_shrink_that_would_strand_replicas_says_what_to_do():
    refusal = shrink_refusal([node("gpu-2", "c")], kept_gpus=2, used={"a": 1, "b": 1, "c": 1})
    assert refusal.startswith("replicas on gpu-2 hold 1 GPUs and the nodes that stay have 0 free")
    assert "lower the services' num_replicas" in refusal


def test_a_node_that_died_is_reported_by_its_own_last_error_lines(tmp_path):
    from runtime.local_cluster import last_words

    log = tmp_path / "ray-gpu-0.log"
    log.write_text("INFO starting\nERROR scripts.py -- Failed to connect to GCS at 127.0.0.1:1 within 60 s\nINFO bye\n")
    assert last_words(log) == "ERROR scripts.py -- Failed to connect to GCS at 127.0.0.1:1 within 60 s"
    assert last_words(tmp_path / "missing.log") == "no log"


def _spec(tmp_path):
    from runtime.local_nodes import WorkerSpec

    return WorkerSpec(pool="gpu", slot=0, gpus=1, num_cpus=1, gcs_port=1, internal_ports_start=2,
                      token_path="t", state_dir=str(tmp_path))


def test_a_node_whose_raylet_registered_too_slowly_is_started_once_more(monkeypatch, tmp_path):
    from runtime import local_nodes
    from runtime.errors import LocalClusterError

    tries = []

    def once(spec, url, timeout):
        tries.append(spec.node_name)
        if len(tries) == 1:
            raise LocalClusterError("Ray worker node 'gpu-0' exited with code 1 while joining 127.0.0.1:1: "
                                    "Exception: The current node timed out during startup.")
        return {"node_name": spec.node_name}

    monkeypatch.setattr(local_nodes, "_start_once", once)
    assert local_nodes.start(_spec(tmp_path), "http://127.0.0.1:1") == {"node_name": "gpu-0"}
    assert tries == ["gpu-0", "gpu-0"]


def test_any_other_join_failure_is_final_and_a_slow_raylet_gets_only_two_tries(monkeypatch, tmp_path):
    from runtime import local_nodes
    from runtime.errors import LocalClusterError

    for message, expected_tries in (("exited with code 1: Failed to connect to GCS", 1),
                                    ("exited with code 1: The current node timed out during startup.", 2)):
        tries = []

        def once(spec, url, timeout, message=message):
            tries.append(1)
            raise LocalClusterError(message)

        monkeypatch.setattr(local_nodes, "_start_once", once)
        with pytest.raises(LocalClusterError, match=message.split(": ")[1][:10]):
            local_nodes.start(_spec(tmp_path), "http://127.0.0.1:1")
        assert len(tries) == expected_tries, message
