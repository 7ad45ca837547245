"""The rollout record in the routing record: operator commands and the rollout history."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime import record
from runtime.record import OperatorCommand


def router(**user) -> dict:
    return {"name": "llm", "deployments": [{"name": "Router", "user_config": {"primary": "v1", **user}}]}


def test_a_new_routing_record_keeps_the_operators_command_and_the_history_of_the_live_one():
    live = router(canary="v2", operator={"command": "abort", "version": "v2", "at": 5.0, "by": "a@b"},
                  rollouts=[{"id": 1}])
    new = record.carried(live, router(canary=None))
    assert record.user_config_of(new)["operator"]["command"] == "abort"
    assert record.rollouts_of(new) == [{"id": 1}]
    assert record.user_config_of(new)["canary"] is None  # the new table itself wins


def test_a_command_set_to_none_is_cleared_rather_than_carried_over():
    live = router(operator={"command": "abort", "version": "v2", "at": 5.0, "by": "a@b"})
    cleared = record.carried(live, record.with_operator(live, None))
    assert "operator" not in record.user_config_of(cleared)
    assert record.operator_of(cleared) is None


def test_a_command_names_the_canary_and_the_config_of_the_rollout_it_was_given_for():
    live = router(canary="v2", intent={"direction": "forward", "spec": "abc"})
    command = record.command_for("abort", live, "ops@desk", at=100.0)
    assert (command.version, command.spec, command.by) == ("v2", "abc", "ops@desk")
    assert command.applies_to("v2", started_at=90.0, digest="abc")
    assert not command.applies_to("v3", started_at=90.0, digest="abc")  # another canary
    assert not command.applies_to("v2", started_at=200.0, digest="abc")  # an earlier rollout's
    assert not command.applies_to("v2", started_at=90.0, digest="xyz")  # another config of v2
    assert record.command_for("abort", router(canary=None), "ops@desk") is None  # nothing under way


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.text(max_size=8), st.floats()))))
def test_whatever_sits_in_the_record_reads_as_a_command_or_as_none(value):
    command = OperatorCommand.from_json(value)
    assert command is None or command.command in ("abort", "promote")


def test_the_history_keeps_the_last_rollouts_and_one_entry_per_rollout():
    history = []
    for i in range(record.KEEP + 3):
        history = record.appended(history, {"id": i, "started": float(i), "outcome": "held"})
    history = record.appended(history, {"id": record.KEEP + 2, "started": float(record.KEEP + 2),
                                        "outcome": "promoted"})
    assert len(history) == record.KEEP
    assert [h["id"] for h in history] == list(range(3, record.KEEP + 3))
    assert history[-1]["outcome"] == "promoted"


def test_copies_of_the_history_merge_with_the_later_ended_entry_winning():
    state = [{"id": 1, "started": 1.0, "ended": 2.0, "outcome": "held"}]
    live = [{"id": 1, "started": 1.0, "ended": 9.0, "outcome": "promoted"}, {"id": 2, "started": 10.0, "ended": 12.0}]
    assert [(h["id"], h.get("outcome")) for h in record.merged(state, live)] == [(1, "promoted"), (2, None)]
    assert [h["id"] for h in record.merged(state, live, keep=1)] == [2]


def test_a_summary_keeps_each_gate_verdict_with_its_figures():
    history = [
        {"at": 1.0, "step": "deploy_canary"},
        {"at": 2.0, "step": "gate", "wave": 1, "gate": {"gate": "splitter", "passed": True, "detail": "long text",
                                                         "canary": {"sent": 40, "ok": 40, "success_rate": 1.0,
                                                                    "p95_ms": 21.0}}},
        {"at": 3.0, "step": "wave", "wave": 1},
    ]
    entry = record.summary(history, service="llm", source="v1", target="v2", started=0.5, ended=4.0,
                           outcome="rolled back", waves=4, reason="x" * 1000)
    assert entry["gates"] == [{"at": 2.0, "wave": 1, "gate": "splitter", "passed": True,
                               "canary": {"sent": 40, "success_rate": 1.0, "p95_ms": 21.0}}]
    assert (entry["reached_wave"], entry["waves"], len(entry["reason"])) == (1, 4, record.MAX_REASON)


def test_a_verdict_on_real_traffic_keeps_the_figures_of_the_evaluation_it_was_judged_on():
    history = [
        {"at": 1.0, "step": "evaluation", "wave": 1, "canary": {"requests": 21, "errors": 1, "error_rate": 0.0476,
                                                                "p95_ms": 48.2},
         "primary": {"requests": 21, "errors": 0, "error_rate": 0.0, "p95_ms": 65.3}},
        {"at": 1.1, "step": "gate", "wave": 1, "gate": {"gate": "traffic-errors", "passed": False}},
    ]
    (gate,) = record.summary(history, service="clf", source="v2", target="v3", started=0.0, ended=2.0,
                             outcome="rolled back", waves=2)["gates"]
    assert gate["canary"] == {"sent": 21, "success_rate": 0.9524, "p95_ms": 48.2}
    assert gate["primary"]["success_rate"] == 1.0
