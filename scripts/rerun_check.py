"""Check a rerun that started from the previous published run's caches (docs/benchmarks/README.md, protocol item
4). Where the change acts only once the old run would have stopped (e.g. the demo draws after patience going on
until the budget is spent), every trial of the old run must come out as before in the new one: the same
candidates, in the same order, with the same state and val score. Reads the homes scripts/bench.py keeps under
--work, for every run done at both commits; prints one line per run and exits 1 if any run differs there.

    python scripts/rerun_check.py 00b3976 78b3af8 [--work /tmp/reflexopt-bench]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from reflexopt.runs import trajectory


def trials(home: Path) -> list[dict[str, Any]] | None:
    """The trials of the last run in that home that wrote a summary, in trial order (runs.trajectory)."""
    runs = sorted((d for d in (home / "runs").glob("*") if (d / "summary.json").exists()), key=lambda d: d.name)
    return [c for c in trajectory(runs[-1]) if c.get("trial") is not None] if runs else None


def shape(cands: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each trial as (key, operator, state, val mean)."""
    return [(c["key"], c["operator"], c["state"], c.get("val_mean")) for c in cands]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reflexopt-bench")
    args = ap.parse_args(argv)
    bad = 0
    for new_home in sorted((args.work / args.new).glob("home-*")):
        if not (new_home / "runs").exists():
            continue
        old_home = args.work / args.old / new_home.name
        a, b = (trials(h) if h.exists() else None for h in (old_home, new_home))
        if a is None or b is None:
            continue
        pa, pb = shape(a), shape(b)
        same = pb[: len(pa)] == pa
        bad += not same
        # a new run shorter than the old one differs at its first missing trial
        first = next((i for i, (x, y) in enumerate(zip(pa, pb)) if x != y), len(pb))
        at = "" if same else f" (first at trial {first + 1})"
        print(f"{new_home.name[5:]}: the old run's {len(pa)} trials {'come out the same' if same else 'DIFFER'}"
              f"{at}; {len(pb)} trials now")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
