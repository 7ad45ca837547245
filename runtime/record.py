"""The rollout record: what the routing record keeps beyond the routing table. PURE.

Two keys of the Router's user_config (traffic/router.py), beside the table the splitter
reads (it ignores them):

- `operator`: the last command of an operator (`gpuserve promote|abort SERVICE`), for
  the canary version it names. The controller reads it at every poll of a running
  rollout; when nothing runs, the console acts on it itself. It stays after it was acted
  on: an abort keeps `pulumi up` from rolling the same config out again (as Argo
  Rollouts keeps an aborted rollout aborted) until the config changes or
  `gpuserve retry` clears it.
- `rollouts`: a summary of each of the last `KEEP` rollouts (from, to, start, end,
  outcome and why, waves, gate figures). It lives in the cluster, so it survives a
  failed `pulumi up` (whose outputs Pulumi does not record), `pulumi refresh`, and a
  lost state file.

Every write of the routing record carries both keys over from the live one
(`carried`), so the controller and the console never erase each other's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

OPERATOR = "operator"
ROLLOUTS = "rollouts"
CARRIED = (OPERATOR, ROLLOUTS)
KEEP = 10  # rollouts kept in the routing record; Serve's config carries it on every read
MAX_GATES = 12  # gate verdicts kept per rollout summary
MAX_REASON = 300

Command = Literal["abort", "promote"]
Outcome = Literal["promoted", "rolled back", "aborted", "held", "failed"]


@dataclass(frozen=True)
class OperatorCommand:
    command: Command
    version: str  # the canary it applies to
    at: float  # epoch seconds
    by: str  # user@host
    spec: str | None = None  # the config digest of the rollout it stopped (abort)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, value) -> "OperatorCommand | None":
        if not isinstance(value, dict) or value.get("command") not in ("abort", "promote"):
            return None
        try:
            return cls(command=value["command"], version=str(value["version"]), at=float(value["at"]),
                       by=str(value.get("by") or "an operator"), spec=value.get("spec"))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))
        return f"{'aborted' if self.command == 'abort' else 'promoted'} by operator {self.by} at {when}"

    def applies_to(self, canary: str | None, started_at: float | None, digest: str | None = None) -> bool:
        """A command names the canary and the config it was given for; one older than the
        rollout under way, or for another config of the label, was given for an earlier
        rollout and does not count."""
        return (canary is not None and self.version == canary and (started_at is None or self.at >= started_at - 1)
                and (self.spec is None or digest is None or self.spec == digest))


def command_for(command: Command, router_config: dict | None, by: str, at: float | None = None
                ) -> OperatorCommand | None:
    """The operator's command for the canary the routing record names, with the config
    digest of its rollout (so an abort stands for that config only); None with no canary."""
    user = user_config_of(router_config)
    canary = user.get("canary")
    if not canary:
        return None
    return OperatorCommand(command=command, version=canary, at=time.time() if at is None else at, by=by,
                           spec=(user.get("intent") or {}).get("spec"))


def user_config_of(router_config: dict | None) -> dict:
    for deployment in (router_config or {}).get("deployments") or []:
        if deployment.get("user_config") is not None:
            return deployment["user_config"]
    return {}


def operator_of(router_config: dict | None) -> OperatorCommand | None:
    return OperatorCommand.from_json(user_config_of(router_config).get(OPERATOR))


def rollouts_of(router_config: dict | None) -> list[dict]:
    value = user_config_of(router_config).get(ROLLOUTS)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def carried(current_router: dict | None, new_router: dict) -> dict:
    """`new_router` with the record's keys of `current_router` that it does not set
    itself. A key set to None in `new_router` is dropped (that is how it is cleared)."""
    current = user_config_of(current_router)
    out = {**new_router, "deployments": [dict(d) for d in new_router.get("deployments") or []]}
    for deployment in out["deployments"]:
        if "user_config" not in deployment:
            continue
        user = dict(deployment["user_config"] or {})
        for key in CARRIED:
            if key not in user and key in current:
                user[key] = current[key]
            elif key in user and user[key] is None:
                del user[key]
        deployment["user_config"] = user
    return out


def _with(router: dict, key: str, value) -> dict:
    out = {**router, "deployments": [dict(d) for d in router.get("deployments") or []]}
    for deployment in out["deployments"]:
        deployment["user_config"] = {**(deployment.get("user_config") or {}), key: value}
    return out


def with_operator(router: dict, command: OperatorCommand | None) -> dict:
    """The routing record with the operator's command set (or cleared with None, which
    `carried` then drops)."""
    return _with(router, OPERATOR, command.to_json() if command else None)


def with_rollouts(router: dict, rollouts: list[dict]) -> dict:
    return _with(router, ROLLOUTS, rollouts)


def summary(history: list[dict], *, service: str, source: str | None, target: str, started: float,
            ended: float, outcome: Outcome, waves: int, reason: str | None = None,
            operator: OperatorCommand | None = None) -> dict:
    """One rollout as the history keeps it, from the controller's entries of the run."""
    gates, evaluated = [], {}
    for e in history:
        if e.get("step") == "evaluation" and e.get("canary"):
            evaluated = e  # the real traffic the next verdict was judged on
        if e.get("step") == "gate":
            figures = _gate_figures(e.get("gate") or {})
            for side in ("canary", "primary"):
                if side not in figures and isinstance(evaluated.get(side), dict):
                    figures[side] = _traffic_figures(evaluated[side])
            gates.append({"at": e.get("at"), "wave": e.get("wave"), **figures})
    reached = max((int(e.get("wave") or 0) for e in history if e.get("step") in ("wave", "gate", "finish")),
                  default=0)
    return {
        "id": int(started * 1000),
        "service": service, "from": source, "to": target,
        "started": round(started, 3), "ended": round(ended, 3),
        "outcome": outcome, **({"reason": reason[:MAX_REASON]} if reason else {}),
        **({"operator": operator.by} if operator else {}),
        "waves": waves, "reached_wave": reached,
        "gates": gates[-MAX_GATES:],
    }


def _gate_figures(figures: dict) -> dict:
    keep = {k: figures[k] for k in ("gate", "passed") if k in figures}
    for side in ("canary", "primary"):
        if isinstance(figures.get(side), dict):
            keep[side] = {k: figures[side][k] for k in ("sent", "success_rate", "p95_ms") if k in figures[side]}
    return keep


def _traffic_figures(window: dict) -> dict:
    """An evaluation's figures of one version (runtime/analysis.Figures.summary), as a
    gate verdict's: requests sent, share ok, p95."""
    sent = int(window.get("requests") or 0)
    return {"sent": sent, "success_rate": round(1 - float(window.get("error_rate") or 0), 4),
            **({"p95_ms": window["p95_ms"]} if sent and "p95_ms" in window else {})}


def appended(rollouts: list[dict], entry: dict, keep: int = KEEP) -> list[dict]:
    """The history with `entry` in place of any earlier summary of the same rollout."""
    others = [r for r in rollouts if r.get("id") != entry.get("id")]
    return sorted([*others, entry], key=lambda r: r.get("started") or 0)[-keep:]


def merged(*histories: list[dict], keep: int | None = None) -> list[dict]:
    """Several copies of the history (state outputs, the live record) as one, by rollout
    id; for the same rollout, the one that ended later (the more complete) wins."""
    by_id: dict = {}
    for history in histories:
        for entry in history or []:
            if not isinstance(entry, dict) or entry.get("id") is None:
                continue
            known = by_id.get(entry["id"])
            if known is None or (entry.get("ended") or 0) >= (known.get("ended") or 0):
                by_id[entry["id"]] = entry
    out = sorted(by_id.values(), key=lambda r: r.get("started") or 0)
    return out[-keep:] if keep else out


# ------------------------------------------------------------- full records
# The routing record keeps summaries; every step and evaluation of a rollout (what a
# timeline is drawn from) is kept beside the stack's state on the machine that ran it:
# `.state/<stack>/rollouts/<service>/<id>.json`, one file per rollout, each run's part
# appended (a held rollout promoted later, a resumed one).
def write_run(folder: Path, run: dict) -> Path:
    path = Path(folder) / f"{run['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    known = read_run(path) or {"history": []}
    seen = {(e.get("at"), e.get("message"), e.get("step")) for e in known["history"]}
    history = known["history"] + [e for e in run["history"] if (e.get("at"), e.get("message"), e.get("step")) not in seen]
    merged_run = {**known, **run, "history": sorted(history, key=lambda e: e.get("at") or 0)}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(merged_run))
    temporary.replace(path)  # whole or not at all
    return path


def read_run(path: Path) -> dict | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("history"), list) else None
