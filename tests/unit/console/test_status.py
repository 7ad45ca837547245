"""What `gpuserve status` says of a service, from the live service and its recorded steps."""

from __future__ import annotations

from runtime.live import LiveService

from console.status import phase, status


def live(primary="v1", canary=None, traffic=0.0, declared=None, ready=None, intent=None, statuses=None):
    declared = {primary: 4} if declared is None else declared
    return LiveService(primary=primary, canary=canary, canary_traffic=traffic, declared=declared,
                       ready=ready or dict(declared), replica_ids={}, statuses=statuses or {v: "RUNNING" for v in declared},
                       started_at=None, latency_baseline_ms=None, router_config=None, intent=intent)


def test_a_service_with_one_version_is_steady():
    assert phase(live()) == "steady"


def test_a_rollout_under_way_names_its_wave_and_the_canarys_share():
    service = live(canary="v2", traffic=25.0, declared={"v1": 3, "v2": 2},
                   intent={"direction": "forward", "target": "v2", "wave": 2})
    assert phase(service) == "rolling out v1 -> v2: wave 2, 25% on the canary"


def test_a_rollback_under_way_says_so():
    service = live(canary="v2", traffic=0.0, declared={"v1": 4, "v2": 1}, intent={"direction": "rollback"})
    assert phase(service) == "rolling back v2 -> v1"


def test_a_canary_held_at_its_declared_percentage_is_held():
    service = live(canary="v2", traffic=10.0, declared={"v1": 4, "v2": 1}, intent={"direction": "forward", "wave": 1})
    assert phase(service, hold_percent=10) == "held at 10% on v2"


def test_a_service_gone_from_the_cluster_is_absent():
    assert phase(live(primary=None, declared={})) == "absent"


def test_status_lists_primary_then_canary_with_traffic_replicas_gpus_and_the_last_verdicts():
    service = live(canary="v2", traffic=25.0, declared={"v1": 3, "v2": 2}, ready={"v1": 3, "v2": 1},
                   intent={"direction": "forward", "wave": 1})
    history = [{"step": "baseline", "message": "latency baseline"},
               *({"step": "gate", "wave": w, "message": f"gate after wave {w}: pass", "gate": {"passed": True}}
                 for w in range(1, 5))]
    spec = {"pool": "gpu", "capacity": {"pool_gpus": 8}, "rollout": {}}
    s = status("clf", service, spec, history, gpus_in_use=5.0)
    assert [(v.version, v.role, v.weight, v.ready, v.declared) for v in s.versions] == [
        ("v1", "primary", 75.0, 3, 3), ("v2", "canary", 25.0, 1, 2)]
    assert (s.pool, s.gpus_in_use, s.pool_gpus) == ("gpu", 5.0, 8)
    assert [v["wave"] for v in s.verdicts] == [2, 3, 4]  # the last three, newest last
    assert s.to_json()["versions"][0]["role"] == "primary"


def test_the_hold_of_the_last_finished_up_does_not_name_the_phase_of_another_run_under_way():
    from runtime.spec import ServiceSpec

    held = {"service": "clf", "route_prefix": "/clf", "version": {"version": "v3", "import_path": "app:build"},
            "scaling": {"num_replicas": 2}, "rollout": {"max_surge_percent": 50, "canary_percent": 50}}
    digest = ServiceSpec.model_validate({**held, "http_url": "http://x"}).digest()
    other_run = live(primary="v3", canary="v4", traffic=50.0, declared={"v3": 1, "v4": 2},
                     intent={"direction": "forward", "wave": 1, "spec": "another config"})
    assert status("clf", other_run, held, [], None).phase == "rolling out v3 -> v4: wave 1, 50% on the canary"
    same_run = live(primary="v1", canary="v3", traffic=50.0, declared={"v1": 2, "v3": 1},
                    intent={"direction": "forward", "wave": 1, "spec": digest})
    assert status("clf", same_run, held, [], None).phase == "held at 50% on v3"
