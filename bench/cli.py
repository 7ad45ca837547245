"""What every bench entry point accepts: `--smoke` (a short run, for tests), `--out`, and
where offered, `--quick` (a reduced run for CI)."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def arguments(doc: str | None, smoke: str, argv: list[str] | None, quick: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=smoke)
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if not quick:
        args.quick = False
    return args
