"""`RolloutController.converge` against an in-memory Serve (fake_serve.py).

Invariants are checked on every recorded PUT, not only on the end state: a rollout that
ends well but overshot the surge budget or sent traffic to replicas not yet ready in
between is still wrong.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.controller as controller_module
import runtime.serve_actions as serve_actions_module
from runtime import apps, record
from runtime.live import observe
from runtime.controller import RolloutController
from runtime.errors import RolloutFailed
from runtime.gates import GateVerdict, ProbeStats, TrafficGate
from runtime.plan import peak_replicas, traffic_cap
from runtime import spec as s
from runtime.spec import ServiceSpec
from tests.unit.runtime.fake_serve import FakeServe, Put, SimulatedCrash

N = 4
SURGE_PERCENT = 25
SERVICE = "llm"
# New replicas stay STARTING for three reads of the live state: more than the two reads
# between consecutive PUTs, so a step that skips waiting for readiness gets caught.
START_POLLS = 3


def spec(version: str = "v2", canary_percent: int | None = None) -> ServiceSpec:
    return ServiceSpec.model_validate({
        "service": SERVICE, "route_prefix": "/llm", "http_url": "http://127.0.0.1:8000",
        "version": {"version": version, "import_path": "runtime.app.model:build", "artifact": f"/m/{version}.npz"},
        "scaling": {"num_replicas": N, "graceful_shutdown_timeout_s": 0},
        "rollout": {"max_surge_percent": SURGE_PERCENT, "canary_percent": canary_percent, "bake_seconds": 0},
    })


class FakeClock:
    """Stands in for the `time` module inside the controller: sleeping advances the
    clock at once, so step timeouts and the deadline still work but cost nothing."""

    def __init__(self):
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeProber:
    """Every probe succeeds in 12ms; the gate fails at the `fail_at`-th evaluation,
    which in a fresh rollout is wave `fail_at`."""

    P95_MS = 12.0

    def __init__(self, fail_at: int | None = None, gate: str = "success-rate"):
        self.fail_at, self.gate = fail_at, gate
        self.baselines: list[float | None] = []  # baseline_p95_ms of each evaluation

    def probe(self, which: str, n: int, concurrency: int) -> ProbeStats:
        return ProbeStats(sent=n, ok=n, p95_ms=self.P95_MS)

    def evaluate(self, gates, baseline_p95_ms: float | None = None) -> GateVerdict:
        self.baselines.append(baseline_p95_ms)
        if len(self.baselines) == self.fail_at:
            if self.gate == "latency":
                return GateVerdict(False, "latency", "canary p95 90ms > 24ms (2x primary p95 12ms)")
            return GateVerdict(False, "success-rate", "canary success rate 71.0% < 99.0% over 20 probes")
        return GateVerdict(True, "probes", "canary 100.0% of 20 ok, p95 12ms")


class FakeTraffic(TrafficGate):
    """The splitter's samples for one window: the primary v1 healthy at `primary_ms`
    (`steady_ms` before the first evaluation: the baseline's read), the canary v2 with
    `canary_requests` requests at `canary_ms`, failing 10 of them from the `fail_from`-th
    evaluation on."""

    def __init__(self, canary_requests: int = 100, fail_from: int | None = None, primary_ms: float = 20.0,
                 steady_ms: float | None = None, canary_ms: float = 20.0):
        super().__init__(self.samples)
        self.canary_requests, self.fail_from, self.calls = canary_requests, fail_from, 0
        self.primary_ms, self.steady_ms, self.canary_ms = primary_ms, steady_ms or primary_ms, canary_ms
        self.steady_medians: list = []
        self.latency_judged: list[bool] = []

    def judge(self, gates, primary, canary, since_ms, steady_median_ms=None, latency=True, steady_ms=()):
        self.calls += 1
        self.steady_medians.append(steady_median_ms)
        self.latency_judged.append(latency)
        return super().judge(gates, primary, canary, since_ms, steady_median_ms, latency, steady_ms)

    def samples(self, since_ms: int) -> list[dict]:
        failing = self.fail_from is not None and self.calls >= self.fail_from
        primary_ms = self.primary_ms if self.calls else self.steady_ms
        canary = [{"v": "v2", "c": 503 if failing and i < 10 else 200, "ms": self.canary_ms}
                  for i in range(self.canary_requests)]
        return canary + [{"v": "v1", "c": 200, "ms": primary_ms}] * 100


def baking(seconds: float) -> ServiceSpec:
    wanted = spec("v2")
    return wanted.model_copy(update={"rollout": wanted.rollout.model_copy(update={"bake_seconds": seconds})})


@contextlib.contextmanager
def offline(serve: FakeServe):
    # One clock for both modules, so the controller's deadline and the waits' timeouts agree.
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controller_module, "time", clock)
        patch.setattr(serve_actions_module, "time", clock)
        patch.setattr(httpx, "get", serve.http_get)  # wait_router's GET of the Router
        yield


def converge(serve: FakeServe, wanted: ServiceSpec, prober: FakeProber | None = None,
             traffic: TrafficGate | None = None) -> RolloutController:
    controller = RolloutController(wanted, serve, prober=prober or FakeProber(), log=lambda line: None, poll_s=1.0,
                                   traffic=traffic)
    with offline(serve):
        controller.converge()
    return controller


def serving(version: str = "v1", **fake_options) -> FakeServe:
    """A cluster where `version` serves 100% with N replicas; PUT records start empty."""
    serve = FakeServe(start_polls=START_POLLS, **fake_options)
    crash_at, serve.crash_at_put = serve.crash_at_put, None
    converge(serve, spec(version))
    serve.puts.clear()
    serve.attempts, serve.crash_at_put = 0, crash_at
    return serve


# ------------------------------------------------------------------ reading PUTs
def split(apps_by_name: dict[str, dict]) -> tuple[dict[str, int], dict[str, float]]:
    """(declared replicas, router weights) by version, from one full app set."""
    declared = {apps.version_of(name): apps.app_replicas(config) for name, config in apps_by_name.items()
                if apps.service_of(name) == SERVICE and apps.version_of(name)}
    _, _, weights = apps.router_weights(apps_by_name.get(SERVICE))
    return declared, weights


def shape(put: Put) -> tuple[int, int, float]:
    """(primary v1 replicas, canary v2 replicas, canary traffic %) declared by a PUT."""
    declared, weights = split(put.apps)
    return declared.get("v1", 0), declared.get("v2", 0), weights.get("v2", 0.0)


def moves(puts: list[Put]) -> list[tuple[int, int, float]]:
    """The shapes the PUTs went through, repeats dropped (a router write that only adds
    the baseline does not change the shape)."""
    shapes = [shape(put) for put in puts]
    return [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


def assert_capacity_safe(puts: list[Put]) -> None:
    peak = peak_replicas(N, SURGE_PERCENT)
    urgent = False
    for number, put in enumerate(puts, 1):
        declared, weights = split(put.apps)
        assert sum(declared.values()) <= peak, f"PUT #{number} declares {declared}, over N + surge = {peak}"
        assert all(replicas >= 1 for replicas in declared.values()), f"PUT #{number} declares {declared}"
        router = (put.apps.get(SERVICE) or {}).get("deployments", [{}])[0].get("user_config") or {}
        intent = router.get("intent") or {}
        # A failing canary's rollback moves everything to the primary at once: from that
        # PUT until the primary is whole again, the primary may carry more than its share.
        urgent = intent.get("urgent", urgent if intent.get("direction") != "forward" else False)
        if urgent and put.ready.get(apps.version_app_name(SERVICE, router.get("primary")), 0) >= N:
            urgent = False
        for version, weight in weights.items():
            if urgent and version == router.get("primary"):
                continue
            # Replicas a PUT adds are not ready when it lands; replicas it removes are gone.
            ready = min(put.ready.get(apps.version_app_name(SERVICE, version), 0), declared.get(version, 0))
            assert ready >= 1 and weight <= traffic_cap(ready, N) + 1e-3, (
                f"PUT #{number} gives {version} {weight}% on {ready} ready replicas of N={N}")


def assert_serves_only(serve: FakeServe, version: str) -> None:
    state = serve.state()
    assert set(state.apps) == {SERVICE, apps.version_app_name(SERVICE, version)}
    declared, weights = split({name: app.config for name, app in state.apps.items()})
    assert declared == {version: N} and weights == {version: 100.0}
    assert apps.router_weights(state.apps[SERVICE].config)[:2] == (version, None)
    assert state.apps[apps.version_app_name(SERVICE, version)].running_replicas == N


# ------------------------------------------------------------- healthy rollout
def test_a_healthy_rollout_moves_one_surge_per_wave_with_traffic_behind_readiness():
    serve = serving("v1")
    converge(serve, spec("v2"))
    assert moves(serve.puts) == [
        (4, 1, 0),  # deploy canary at 0% traffic
        # wave 1: gated at the canary's share of the ready replicas (1 of 5), then up to
        # its cap for the resize; shrink primary, grow canary
        (4, 1, 20), (4, 1, 25), (3, 1, 25), (3, 2, 25),
        (3, 2, 40), (3, 2, 50), (2, 2, 50), (2, 3, 50),  # wave 2
        (2, 3, 60), (2, 3, 75), (1, 3, 75), (1, 4, 75),  # wave 3
        (1, 4, 100),  # wave 4: canary carries everything while the primary drains
        (0, 4, 100),  # primary deleted
    ]
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v2")


def test_a_healthy_rollout_records_deploy_baseline_gated_waves_and_finish():
    serve = serving("v1")
    controller = converge(serve, spec("v2"))
    kinds = [(e.get("step"), e.get("wave")) for e in controller.history.entries
             if e.get("step") and e["step"] != "evaluation"]
    assert kinds == [("deploy-canary", None), ("baseline", None),
                     ("shift", 1), ("gate", 1), ("shift", 1), ("wave", 1),
                     ("shift", 2), ("gate", 2), ("shift", 2), ("wave", 2),
                     ("shift", 3), ("gate", 3), ("shift", 3), ("wave", 3), ("shift", 4), ("gate", 4), ("finish", 4),
                     ("timings", None)]


def test_a_step_timed_inside_another_is_counted_once(monkeypatch):
    clock = iter([0.0, 1.0, 4.0, 10.0])  # outer starts, inner starts, inner ends, outer ends
    monkeypatch.setattr(controller_module.time, "monotonic", lambda: next(clock))
    controller = RolloutController.__new__(RolloutController)
    controller.timings, controller._inner = {}, []
    with controller.timed("drain"):
        with controller.timed("gate"):
            pass
    assert controller.timings == {"drain": 7.0, "gate": 3.0}


def test_a_completed_rollout_says_where_its_time_went_by_kind_of_step():
    serve = serving("v1")
    controller = converge(serve, spec("v2"))
    (entry,) = [e for e in controller.history.entries if e.get("step") == "timings"]
    assert {"deploy", "ready wait", "traffic shift", "bake", "gate", "drain", "delete"} <= set(entry["timings"])
    assert all(v >= 0 for v in entry["timings"].values())
    assert sum(entry["timings"].values()) <= entry["total_s"] + 0.01
    assert entry["message"].startswith("time by step: deploy ")


def test_converging_again_after_a_rollout_changes_nothing():
    serve = serving("v1")
    converge(serve, spec("v2"))
    before, puts = serve.payload()["applications"], len(serve.puts)
    converge(serve, spec("v2"))
    assert len(serve.puts) == puts
    assert serve.payload()["applications"] == before


# ------------------------------------------------------------------- failures
def test_a_canary_whose_constructor_raises_is_rolled_back_before_wave_1():
    serve = serving("v1", broken_versions=("v2",))
    with pytest.raises(RolloutFailed, match=r"llm v2 rolled back before wave 1 \(serve-status gate\).*"
                                            r"DEPLOY_FAILED.*primary v1 serves 100%"):
        converge(serve, spec("v2"))
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def put_number(wanted: tuple[int, int, float]) -> int:
    """Which PUT of a healthy v1 -> v2 rollout first declares this shape."""
    serve = serving("v1")
    converge(serve, spec("v2"))
    return 1 + [shape(put) for put in serve.puts].index(wanted)


def test_a_primary_replica_lost_while_the_primary_shrinks_is_waited_out_and_the_rollout_completes():
    # The bench's node loss: the primary's deployment turns UNHEALTHY (a replica failed its
    # health check) during wave 1's drain; Serve replaces the replica, the rollout goes on.
    serve = serving("v1")
    serve.lose_at_put = (put_number((3, 1, 25)), "v1")  # the primary shrinks to 3
    converge(serve, spec("v2"))
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v2")


def test_a_canary_replica_lost_while_the_canary_grows_rolls_back_at_once():
    serve = serving("v1")
    serve.lose_at_put = (put_number((3, 2, 25)), "v2")  # the canary grows to 2
    with pytest.raises(RolloutFailed, match=r"growing canary v2 to 2: deployment Model UNHEALTHY.*"
                                            r"primary v1 serves 100%"):
        converge(serve, spec("v2"))
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def test_a_primary_that_stays_unhealthy_fails_at_the_step_timeout_naming_its_status():
    serve = serving("v1")
    serve.lose_at_put, serve.unhealthy_polls = (put_number((3, 1, 25)), "v1"), 10**9
    with pytest.raises(RolloutFailed, match=r"scaling v1 to 3: not ready within \d+s \(step_timeout_seconds; "
                                            r"status UNHEALTHY\): deployment Model UNHEALTHY"):
        converge(serve, spec("v2"))


@pytest.mark.parametrize("wave", [1, 2, 3, 4])
def test_a_gate_failing_at_any_wave_rolls_back_to_a_full_primary(wave):
    serve = serving("v1")
    with pytest.raises(RolloutFailed, match=rf"rolled back at wave {wave}/4 \(success-rate gate\): "
                                            r"canary success rate 71\.0%.*primary v1 serves 100%"):
        converge(serve, spec("v2"), FakeProber(fail_at=wave))
    # Capacity safety on every PUT covers the rollback too: the primary regrows
    # before traffic returns to it.
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def test_a_breach_in_real_traffic_ends_the_bake_at_once_and_rolls_back():
    serve = serving("v1")
    traffic, prober = FakeTraffic(fail_from=3), FakeProber()
    with pytest.raises(RolloutFailed, match=r"rolled back at wave 1/4 \(traffic-errors gate\): canary failed 10 of "
                                            r"100 real requests \(10\.0% > 1\.0%\)"):
        converge(serve, baking(30), prober, traffic)
    assert traffic.calls == 3  # evaluated every second; the third window breached: no 30 s wait
    assert prober.baselines == []  # real traffic decided; no probe gate ran
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def test_a_canary_that_starts_failing_while_replicas_change_is_caught_before_the_next_wave():
    # Bake 2 s: wave 1 is judged at 0, 1 and 2 s and passes; the canary fails from the 4th
    # evaluation on, which falls in wave 1's resize (the primary shrinking, the canary growing).
    serve = serving("v1")
    traffic, prober = FakeTraffic(fail_from=4), FakeProber()
    lines: list[str] = []
    controller = RolloutController(baking(2), serve, prober=prober, log=lines.append, poll_s=1.0, traffic=traffic)
    with offline(serve), pytest.raises(RolloutFailed, match=r"rolled back at wave 1/4 \(traffic-errors gate\)"):
        controller.converge()
    assert traffic.calls == 4
    # Said where it was seen: the canary at 25% while the replicas changed, not at the bake's 20%.
    assert any(line.startswith("[llm] gate during wave 1's resize at 25%: FAIL: canary failed") for line in lines), lines
    assert max(traffic for _, _, traffic in moves(serve.puts)) == 25  # never shifted to wave 2's 50%
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def test_while_replicas_change_only_errors_are_judged_and_the_bakes_judge_latency_too():
    serve = serving("v1")
    traffic = FakeTraffic()
    converge(serve, baking(2), FakeProber(), traffic)
    assert_serves_only(serve, "v2")
    # The bakes (wave 1 at 0, 1 and 2 s, ...) judge latency; the resizes' polls do not.
    assert traffic.latency_judged[:3] == [True] * 3 and False in traffic.latency_judged


def test_healthy_real_traffic_passes_every_wave_without_probes_and_each_evaluation_is_on_record():
    serve = serving("v1")
    traffic, prober = FakeTraffic(), FakeProber()
    controller = converge(serve, baking(3), prober, traffic)
    assert prober.baselines == []
    assert_serves_only(serve, "v2")
    evaluations = [e for e in controller.history.entries if e.get("step") == "evaluation"]
    # every second of every wave's bake, and of the resizes between
    assert len(evaluations) == traffic.calls >= 4 * 4
    assert evaluations[0]["canary"] == {"requests": 100, "errors": 0, "client_errors": 0, "error_rate": 0.0,
                                        "p50_ms": 20.0, "p95_ms": 20.0}
    assert evaluations[0]["gate"] == "traffic" and evaluations[0]["passed"] is True


def test_the_canary_is_judged_against_the_primary_as_it_ran_before_the_rollout():
    # Near saturation: before any move the primary answered in 80 ms; with the surge's
    # extra replica it runs lighter (20 ms) while the canary carries the steady per-replica
    # load (70 ms). Against the primary now it looks 50 ms slower; against the steady
    # reference it is not slower at all.
    serve = serving("v1")
    traffic = FakeTraffic(primary_ms=20.0, steady_ms=80.0, canary_ms=70.0)
    converge(serve, baking(2), FakeProber(), traffic)
    assert_serves_only(serve, "v2")
    assert set(traffic.steady_medians) == {80.0}


def test_a_canary_slower_than_the_steady_primary_too_is_rolled_back():
    serve = serving("v1")
    with pytest.raises(RolloutFailed, match=r"traffic-latency gate\): canary slower: median 140ms vs primary 20ms, "
                                            r"80ms before the rollout"):
        converge(serve, baking(2), FakeProber(), FakeTraffic(primary_ms=20.0, steady_ms=80.0, canary_ms=140.0))
    assert_serves_only(serve, "v1")


def test_thin_real_traffic_lets_the_probes_decide():
    serve = serving("v1")
    prober = FakeProber(fail_at=2)
    with pytest.raises(RolloutFailed, match=r"rolled back at wave 2/4 \(success-rate gate\)"):
        converge(serve, baking(2), prober, FakeTraffic(canary_requests=5))
    assert len(prober.baselines) == 2


def test_a_failing_reference_stops_the_rollout_before_judging_the_canary():
    class PrimaryDown(FakeProber):
        def probe(self, which: str, n: int, concurrency: int) -> ProbeStats:
            return ProbeStats(sent=n, ok=0, p95_ms=0.0, answers=f"404 x{n}")

    serve = serving("v1")
    with pytest.raises(RolloutFailed, match=r"rolled back before wave 1 \(reference-failing gate\): the primary v1 "
                                            r"answered 0 of 20 probes of GET / \(failed: 404 x20\)"):
        converge(serve, spec("v2"), PrimaryDown())
    assert_serves_only(serve, "v1")


def test_a_rollback_returns_traffic_to_the_primary_only_as_it_regrows():
    serve = serving("v1")
    with pytest.raises(RolloutFailed, match=r"\(latency gate\)"):  # slow, not failing: capacity first
        converge(serve, spec("v2"), FakeProber(fail_at=3, gate="latency"))
    steps = moves(serve.puts)
    failed_at = steps.index((2, 3, 60))  # wave 3's traffic shift, then its gate fails
    assert steps[failed_at:] == [
        (2, 3, 60),  # the failed wave, gated at the canary's share of the ready replicas
        (2, 3, 50), (2, 2, 50), (3, 2, 50),  # traffic to what 2 primaries carry, free a canary, regrow
        (3, 2, 25), (3, 1, 25), (4, 1, 25),
        (4, 1, 0), (4, 0, 0),  # all traffic back on a full primary, canary deleted
    ]


def test_a_canary_that_fails_requests_loses_all_its_traffic_at_once_then_the_replicas_follow():
    serve = serving("v1")
    with pytest.raises(RolloutFailed, match=r"\(success-rate gate\)"):
        converge(serve, spec("v2"), FakeProber(fail_at=3))
    steps = moves(serve.puts)
    failed_at = steps.index((2, 3, 60))
    assert steps[failed_at:] == [
        (2, 3, 60),  # the failed wave
        (2, 3, 0),  # its share was failing or retried on the primary anyway: all of it moves now
        (2, 0, 0), (4, 0, 0),  # the canary's GPUs freed, then the primary regrows into them
    ]
    assert_capacity_safe(serve.puts)  # the replica cap holds throughout


# ---------------------------------------------------------- interrupted runs
def serving_configs(configs: dict[str, dict]) -> dict[str, dict]:
    """The configs without the rollout record (runtime/record.py): what serves, not when."""
    out = copy.deepcopy(configs)
    for config in out.values():
        for deployment in config.get("deployments") or []:
            for key in record.CARRIED:
                (deployment.get("user_config") or {}).pop(key, None)
    return out


@functools.cache
def uninterrupted() -> tuple[dict[str, dict], int]:
    """End configs and PUT count of a rollout v1 -> v2 that nothing interrupts."""
    serve = serving("v1")
    converge(serve, spec("v2"))
    return serve.configs, len(serve.puts)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_rollout_killed_before_any_put_resumes_to_the_same_end_state(data):
    end_configs, puts = uninterrupted()
    crash_at = data.draw(st.integers(1, puts), label="killed before PUT #")
    serve = serving("v1", crash_at_put=crash_at)
    with pytest.raises(SimulatedCrash):
        converge(serve, spec("v2"))
    converge(serve, spec("v2"))  # a new `pulumi up`: a new controller, the same cluster
    assert serving_configs(serve.configs) == serving_configs(end_configs)
    # The history has the one rollout, finished, however many runs it took.
    assert [r["outcome"] for r in observe(serve.state(), "llm").rollouts] == ["promoted"]
    assert_serves_only(serve, "v2")
    assert_capacity_safe(serve.puts)


def test_a_rollout_killed_before_its_baseline_reached_the_router_measures_one_on_resume():
    serve = serving("v1", crash_at_put=3)  # PUT #3 writes the baseline into the router
    with pytest.raises(SimulatedCrash):
        converge(serve, spec("v2"))
    prober = FakeProber()
    converge(serve, spec("v2"), prober)
    assert prober.baselines and all(b == FakeProber.P95_MS for b in prober.baselines)


def test_a_first_deploy_killed_before_its_router_write_is_not_adopted_while_it_cannot_serve():
    serve = FakeServe(start_polls=START_POLLS, broken_versions=("v1",), crash_at_put=2)
    with pytest.raises(SimulatedCrash):  # PUT #2 is _fail_create removing the failed app
        converge(serve, spec("v1"))
    with pytest.raises(RolloutFailed):
        converge(serve, spec("v1"))
    assert_capacity_safe(serve.puts)


# ------------------------------------------------------------- canary_percent
def test_canary_percent_holds_the_canary_at_that_traffic_share():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    declared, weights = split(serve.configs)
    assert declared == {"v1": 4, "v2": 1} and weights == {"v1": 75.0, "v2": 25.0}
    assert_capacity_safe(serve.puts)


def test_a_held_canary_converged_again_only_rechecks_the_gates():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    puts, prober = len(serve.puts), FakeProber()
    converge(serve, spec("v2", canary_percent=25), prober)
    assert len(serve.puts) == puts and len(prober.baselines) == 1


def test_canary_percent_100_after_a_hold_completes_the_rollout():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    converge(serve, spec("v2", canary_percent=100))
    assert_capacity_safe(serve.puts)
    assert serving_configs(serve.configs) == serving_configs(uninterrupted()[0])
    # One rollout in the history: held, then (the same rollout, by its start) promoted.
    assert [r["outcome"] for r in observe(serve.state(), "llm").rollouts] == ["promoted"]


def test_canary_percent_0_after_a_hold_rolls_back_to_the_primary():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    converge(serve, spec("v2", canary_percent=0))
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v1")


def test_canary_percent_0_after_a_run_killed_before_the_router_named_the_canary_removes_it():
    serve = serving("v1", crash_at_put=2)  # PUT #1 deployed the canary app, #2 names it
    with pytest.raises(SimulatedCrash):
        converge(serve, spec("v2"))
    converge(serve, spec("v2", canary_percent=0))
    assert_serves_only(serve, "v1")


def test_a_new_version_during_a_hold_rolls_back_the_stale_canary_then_rolls_out():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    converge(serve, spec("v3"))
    assert_capacity_safe(serve.puts)
    assert_serves_only(serve, "v3")


# ------------------------------------------------------- preview equals up
def tables(text: str) -> list[str]:
    """The plan tables in a text: the lines under each line that ends a table's header."""
    found, current = [], None
    for line in text.splitlines():
        if line.startswith(" wave step"):
            current = [line]
            found.append(current)
        elif current is not None and line.startswith(" ") and not line.startswith(" wave"):
            current.append(line)
        else:
            current = None
    return ["\n".join(t) for t in found]


def preview_then_up(serve: FakeServe, old: ServiceSpec, new: ServiceSpec) -> tuple[str, list[str]]:
    """What preview prints from the state `up` last recorded, and the tables `up` then runs."""
    from components import rollout

    with offline(serve):
        recorded = {"spec": old.model_dump(exclude={"http_url"}), "http_url": old.http_url,
                    **RolloutController(old, serve).live().outputs()}
    text = rollout.preview_lines(recorded, {"spec": new.model_dump(exclude={"http_url"}), "http_url": new.http_url})
    controller = RolloutController(new, serve, prober=FakeProber(), log=lambda line: None, poll_s=1.0)
    with offline(serve):
        with contextlib.suppress(RolloutFailed):
            controller.converge()
    ran = [t for entry in controller.history.entries if "message" in entry for t in tables(entry["message"])]
    return text, ran


def held(version: str, percent: int) -> ServiceSpec:
    return spec(version, canary_percent=percent)


@pytest.mark.parametrize("case", ["forward", "revert while held", "revert mid-wave", "new version while held",
                                  "lightweight", "no-op"])
def test_preview_shows_exactly_the_plans_up_then_runs(case):
    serve = serving("v1")
    old, new = spec("v1"), spec("v2")
    if case == "revert while held":
        converge(serve, held("v2", 50))
        old, new = held("v2", 50), spec("v1")
    elif case == "revert mid-wave":
        serve.crash_at_put, serve.attempts = 6, 0
        with pytest.raises(SimulatedCrash):
            converge(serve, spec("v2"))
        serve.crash_at_put = None
        old, new = spec("v2"), spec("v1")
    elif case == "new version while held":
        converge(serve, held("v2", 25))
        old, new = held("v2", 25), spec("v3")
    elif case == "lightweight":
        new = ServiceSpec.model_validate({**spec("v1").model_dump(), "scaling": {
            **spec("v1").scaling.model_dump(), "max_queued_requests": 7}})
    elif case == "no-op":
        new = spec("v1")
    text, ran = preview_then_up(serve, old, new)
    assert tables(text) == ran, f"preview:\n{text}\nup ran:\n" + "\n\n".join(ran)
    if case.startswith("revert"):
        assert ran and "rolling back v2 -> v1" in text


class FakeMetrics:
    """A Prometheus gate whose checks pass until the `fail_from`-th evaluation."""

    def __init__(self, fail_from: int | None = None):
        self.fail_from, self.calls = fail_from, 0

    def judge(self, service: str, primary: str, canary: str):
        from runtime.prometheus import MetricsJudgement

        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            return MetricsJudgement(False, "prometheus", f"canary error-rate = 0.5, not <= 0.01 ({canary})")
        return MetricsJudgement(True, "prometheus", "canary error-rate 0 <= 0.01")


def gated_by_prometheus(source: str) -> ServiceSpec:
    wanted = baking(5)
    gates = wanted.rollout.gates.model_copy(update={
        "source": source, "prometheus": s.PrometheusGate(url="http://127.0.0.1:9090")})
    return wanted.model_copy(update={"rollout": wanted.rollout.model_copy(update={"gates": gates})})


def test_a_prometheus_check_out_of_range_rolls_back_without_consulting_the_splitter():
    serve, traffic, metrics = serving("v1"), FakeTraffic(), FakeMetrics(fail_from=2)
    controller = RolloutController(gated_by_prometheus("prometheus"), serve, prober=FakeProber(), log=lambda _: None,
                                   poll_s=1.0, traffic=traffic, metrics_gate=lambda gates: metrics)
    with offline(serve), pytest.raises(RolloutFailed, match=r"\(prometheus gate\): canary error-rate = 0.5"):
        controller.converge()
    assert traffic.calls == 0 and metrics.calls == 2
    assert_serves_only(serve, "v1")
    evaluations = [e for e in controller.history.entries if e.get("step") == "evaluation"]
    assert [e["source"] for e in evaluations] == ["prometheus", "prometheus"]


def test_with_both_sources_each_evaluation_is_on_record_and_both_must_pass():
    serve, traffic, metrics = serving("v1"), FakeTraffic(), FakeMetrics()
    controller = RolloutController(gated_by_prometheus("auto"), serve, prober=FakeProber(), log=lambda _: None,
                                   poll_s=1.0, traffic=traffic, metrics_gate=lambda gates: metrics)
    with offline(serve):
        controller.converge()
    assert_serves_only(serve, "v2")
    sources = [e["source"] for e in controller.history.entries if e.get("step") == "evaluation"]
    assert sources.count("splitter") == sources.count("prometheus") == traffic.calls == metrics.calls > 0


@pytest.mark.parametrize("gate, cut_points", [("latency", 3), ("success-rate", 1)])
def test_a_rollback_killed_midway_is_finished_by_the_next_run_with_the_same_config(gate, cut_points):
    serve = serving("v1")
    with pytest.raises(RolloutFailed):
        converge(serve, spec("v2"), FakeProber(fail_at=2, gate=gate))  # a rollback from wave 2
    rollback_puts, cut_mid_rollback = len(serve.puts), 0
    for crash_at in range(1, rollback_puts):
        serve = serving("v1")
        serve.crash_at_put, serve.attempts = crash_at, 0
        try:
            converge(serve, spec("v2"), FakeProber(fail_at=2, gate=gate))
        except (SimulatedCrash, RolloutFailed):
            pass
        serve.crash_at_put = None
        rolling_back = serve_router_intent(serve) == "rollback"
        cut_mid_rollback += rolling_back
        try:
            converge(serve, spec("v2"))  # the next `pulumi up`, the same config, gates that pass
        except RolloutFailed as failed:
            assert rolling_back and "finishing the interrupted rollback" in str(failed)
        if rolling_back:
            assert_serves_only(serve, "v1")  # a rollback stayed a rollback
        assert_capacity_safe(serve.puts)
    assert cut_mid_rollback >= cut_points  # the rollback's own PUTs, each a place to be cut off


def serve_router_intent(serve: FakeServe) -> str | None:
    router = serve.configs.get(SERVICE) or {}
    user = (router.get("deployments") or [{}])[0].get("user_config") or {}
    return (user.get("intent") or {}).get("direction") if user.get("canary") else None


def test_a_step_never_waits_past_the_rollout_deadline():
    serve = serving("v1")
    serve.start_polls = 10**6  # the canary's replicas never become ready
    wanted = spec("v2")
    wanted = wanted.model_copy(update={"rollout": wanted.rollout.model_copy(
        update={"deadline_minutes": 2.0, "step_timeout_seconds": 600.0})})
    with pytest.raises(RolloutFailed, match=r"canary deploy: not ready within 120s \(the rollout's deadline_minutes"):
        converge(serve, wanted)
    assert_serves_only(serve, "v1")


@pytest.mark.parametrize("kind", ["deploy-canary", "wave", "hold", "finish"])
def test_an_unexpected_error_at_any_step_puts_all_traffic_back_on_the_primary_first(kind):
    from runtime.plan import StepKind

    step_kind = StepKind(kind)
    original = controller_module.STEPS[step_kind]

    def failing(self, *args):
        original(self, *args)  # the step's moves happened: traffic may have moved
        raise RuntimeError("injected: Serve said something nobody expected")

    serve = serving("v1")
    wanted = spec("v2", canary_percent=50 if kind == "hold" else None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(controller_module.STEPS, step_kind, failing)
        with pytest.raises(RolloutFailed, match=rf"unexpected error in {kind}.*RuntimeError: injected"):
            converge(serve, wanted)
    # A finished rollout has no primary but the new one; anything else is rolled back.
    assert_serves_only(serve, "v2" if kind == "finish" else "v1")
    assert_capacity_safe(serve.puts)


def test_a_surging_rollout_holds_its_pools_surge_lease_so_another_services_waits(tmp_path, monkeypatch):
    from runtime import serve_api
    from runtime.errors import ServeApiError

    monkeypatch.setattr(serve_api.tempfile, "gettempdir", lambda: str(tmp_path))
    serve = serving("v1")
    seen = []

    class Neighbour(FakeProber):
        def evaluate(self, gates, baseline_p95_ms=None):
            # Mid-bake, another service of the same pool tries to start its own surge.
            try:
                with serve_api.surge_lease(serve.dashboard_url, "default", "other", timeout_s=0):
                    seen.append("acquired")
            except ServeApiError as exc:
                seen.append(str(exc))
            return super().evaluate(gates, baseline_p95_ms)

    converge(serve, spec("v2"), prober=Neighbour())
    assert seen and all(s.startswith("other: the rollout of llm (pid") for s in seen), seen
    with serve_api.surge_lease(serve.dashboard_url, "default", "other", timeout_s=0):
        pass  # released when the rollout ended


# ------------------------------------------------------------ operator commands
class Commanded(FakeServe):
    """A cluster where an operator (`gpuserve promote|abort`) writes a command into the
    routing record right after the controller's `after_put`-th PUT."""

    def __init__(self, command: str, after_put: int, **options):
        super().__init__(**options)
        self.command, self.after_put = command, after_put

    def update_apps(self, change, http_options=None):
        before = super().update_apps(change, http_options)
        if self.after_put is not None and len(self.puts) == self.after_put:
            self.after_put = None
            command = record.command_for(self.command, self.configs[SERVICE], "ops@desk",
                                         controller_module.time.time())
            self.configs[SERVICE] = record.with_operator(self.configs[SERVICE], command)
            self.commanded_at = len(self.puts)
        return before


def commanded(command: str, after_put: int) -> Commanded:
    serve = Commanded(command, None, start_polls=START_POLLS)
    converge(serve, spec("v1"))
    serve.puts.clear()
    serve.attempts, serve.after_put = 0, after_put
    return serve


def test_an_operators_abort_mid_rollout_moves_all_traffic_to_the_primary_at_once_and_fails_the_up():
    serve = commanded("abort", after_put=3)  # the canary deployed and taking its first share
    with pytest.raises(RolloutFailed, match=r"rolled back .*\(operator gate\): aborted by operator ops@desk"):
        converge(serve, spec("v2"))
    assert_serves_only(serve, "v1")
    # The first write after the command takes every request off the canary.
    _, _, canary_traffic = shape(serve.puts[serve.commanded_at])
    assert canary_traffic == 0
    (entry,) = observe(serve.state(), SERVICE).rollouts
    assert (entry["from"], entry["to"], entry["outcome"], entry["operator"]) == ("v1", "v2", "aborted", "ops@desk")
    assert "aborted by operator ops@desk" in entry["reason"]


def test_an_aborted_version_is_not_rolled_out_again_until_its_config_changes_or_the_abort_is_cleared():
    serve = commanded("abort", after_put=3)
    with pytest.raises(RolloutFailed):
        converge(serve, spec("v2"))
    puts = len(serve.puts)
    with pytest.raises(RolloutFailed, match=r"v2 was aborted by operator .*gpuserve retry llm"):
        converge(serve, spec("v2"))
    assert len(serve.puts) == puts  # refused before anything moved
    # The abort was of that config: another config of v2 (a longer bake, say) rolls out.
    wanted = spec("v2")
    converge(serve, wanted.model_copy(update={"rollout": wanted.rollout.model_copy(update={"bake_seconds": 1})}))
    assert_serves_only(serve, "v2")


def test_an_operators_promote_skips_the_remaining_bakes():
    serve = commanded("promote", after_put=3)
    wanted = baking(600)  # ten minutes a wave, on the fake clock
    controller = RolloutController(wanted, serve, prober=FakeProber(), log=lambda line: None, poll_s=1.0)
    with offline(serve):
        started = controller_module.time.time()
        controller.converge()
        spent = controller_module.time.time() - started
    assert_serves_only(serve, "v2")
    assert spent < 600 + 60, f"{spent:.0f}s: the bakes after the promote ran"
    gates = [e["gate"] for e in controller.history.entries if e.get("step") == "gate"]
    assert gates and all(g["gate"] == "operator" and g["passed"] for g in gates[1:]), gates
    (entry,) = observe(serve.state(), SERVICE).rollouts
    assert (entry["outcome"], entry["operator"]) == ("promoted", "ops@desk")


def test_an_operators_promote_ends_a_hold_when_no_up_runs():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    command = record.OperatorCommand("promote", "v2", 1_700_000_100.0, "ops@desk")
    serve.configs[SERVICE] = record.with_operator(serve.configs[SERVICE], command)
    controller = RolloutController(spec("v2", canary_percent=25), serve, prober=FakeProber(), log=lambda line: None,
                                   poll_s=1.0)
    with offline(serve):
        controller.promote_now(command)
    assert_serves_only(serve, "v2")
    assert_capacity_safe(serve.puts)
    assert [r["outcome"] for r in observe(serve.state(), SERVICE).rollouts] == ["promoted"]


def test_an_operators_abort_of_a_held_canary_when_no_up_runs_rolls_back_and_says_so_on_record():
    serve = serving("v1")
    converge(serve, spec("v2", canary_percent=25))
    command = record.OperatorCommand("abort", "v2", 1_700_000_100.0, "ops@desk")
    serve.configs[SERVICE] = record.with_operator(serve.configs[SERVICE], command)
    controller = RolloutController(spec("v2", canary_percent=25), serve, log=lambda line: None, poll_s=1.0)
    with offline(serve):
        controller.abort_now(command)
        with pytest.raises(RolloutFailed, match="nothing to abort: v1 serves 100%"):
            controller.abort_now(command)
    assert_serves_only(serve, "v1")
    assert [r["outcome"] for r in observe(serve.state(), SERVICE).rollouts] == ["aborted"]
