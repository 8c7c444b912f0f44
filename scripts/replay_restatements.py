"""Replay, with no call, the rule that fails an answer giving a short input back without the reference
(metrics.gives_input_back) on the judged answers of archived runs: how many of the judge's passes and fails it
would have settled unjudged, each pass listed to be read.

    python scripts/replay_restatements.py docs/benchmarks/runs/judge_next
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_reconcile import archived  # noqa: E402

from reflexopt.metrics import gives_input_back  # noqa: E402


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/runs/judge_next")
    counts: Counter[tuple[bool, bool]] = Counter()
    passes = []
    for x in archived(runs):
        if x["archived_reasoning"].startswith(("says exactly", "repeats the input")):
            continue  # settled unjudged already
        hit = gives_input_back(x["input"], x["ideal"], x["output"])
        counts[(x["archived_raw"] >= 4, hit)] += 1
        if hit and x["archived_raw"] >= 4:
            passes.append(x)
    print(f"distinct judged answers: {sum(counts.values())}; passes {counts[(True, True)] + counts[(True, False)]}, "
          f"of which the rule fails {counts[(True, True)]}; fails {counts[(False, True)] + counts[(False, False)]}, "
          f"of which the rule settles {counts[(False, True)]} (unchanged)")
    for x in passes:
        print(f"- {x['set']}: {x['input']!r} -> {x['output'][:70]!r} (reference {x['ideal']!r}), judge "
              f"{x['archived_raw']:g}")


if __name__ == "__main__":
    main()
