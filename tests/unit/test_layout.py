"""The folder layout is the architecture: these checks keep it honest."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OPERATOR_SIDE = ("runtime", "components", "policies", "pulumi")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_in_cluster_traffic_code_imports_nothing_from_the_operators_side():
    for path in (REPO / "traffic").rglob("*.py"):
        leaks = {m for m in imported_modules(path) if m.split(".")[0] in OPERATOR_SIDE}
        assert not leaks, f"{path.relative_to(REPO)} imports {sorted(leaks)}"


def test_planning_code_stays_pure():
    for module in ("plan.py", "decisions.py", "spec.py"):
        heavy = {m for m in imported_modules(REPO / "runtime" / module)
                 if m.split(".")[0] in ("pulumi", "httpx", "ray", "requests", "subprocess")}
        assert not heavy, f"runtime/{module} imports {sorted(heavy)}"
