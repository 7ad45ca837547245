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
        for name in ("peers", "scenarios", "loads"):
            parser.add_argument(f"--{name}", type=lambda text: tuple(filter(None, text.split(","))),
                                help=f"only these {name}, comma-separated (the run is then a 'subset', "
                                     "never the README's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if not quick:
        args.quick = False
    return args
