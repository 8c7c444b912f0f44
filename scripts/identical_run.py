"""Check that two optimize runs made the same search: the same trials, each with the same prompt key, operator,
parent, state and val score (and the same verdict). Used for refactors that must not change behaviour: run the
same command (fixed seed, --concurrency 1, patience above the trial limit) at two commits, then

    python scripts/identical_run.py RUN_DIR_BEFORE RUN_DIR_AFTER --out scripts/results/identical_run.md

Writes one JSONL per run (the trials as compared) beside the report, and exits 1 on any difference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reflexopt.runs import trajectory

FIELDS = ("id", "key", "operator", "parent", "state", "val_mean", "n_val", "pruned_by", "fallback")
VERDICT = ("baseline_val", "best_val", "baseline_test", "best_test", "p_value", "best_candidate", "trials",
           "pruned_trials", "stop_reason", "model_calls")


def trials(run: Path) -> list[dict[str, Any]]:
    """Each candidate's final record (the baseline first, then trial order), as compared."""
    return [{k: c.get(k) for k in FIELDS} for c in trajectory(run)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--label", action="append", default=[], help="a line for the report's header (repeatable)")
    a = ap.parse_args()
    runs = {"before": trials(a.before), "after": trials(a.after)}
    verdicts = {k: json.loads((p / "summary.json").read_text()) for k, p in (("before", a.before), ("after", a.after))}
    for name, rows in runs.items():
        a.out.with_name(f"{a.out.stem}_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    diffs = []
    for i, (x, y) in enumerate(zip(runs["before"], runs["after"], strict=False)):
        for k in FIELDS:
            if x.get(k) != y.get(k):
                diffs.append(f"row {i} ({x['id']}): {k} {x.get(k)!r} != {y.get(k)!r}")
    if len(runs["before"]) != len(runs["after"]):
        diffs.append(f"{len(runs['before'])} trials before, {len(runs['after'])} after")
    for k in VERDICT:
        if verdicts["before"].get(k) != verdicts["after"].get(k):
            diffs.append(f"verdict {k}: {verdicts['before'].get(k)!r} != {verdicts['after'].get(k)!r}")
    lines = ["# Identical-run check", "", *a.label, "",
             f"- trials compared: {len(runs['before'])} before, {len(runs['after'])} after "
             f"(fields: {', '.join(FIELDS)})",
             "- verdict: " + ", ".join(f"{k} {verdicts['after'].get(k)}" for k in VERDICT),
             f"- differences: {len(diffs)}", ""]
    lines += [f"  - {d}" for d in diffs[:50]]
    lines += ["", "| trial | key | operator | parent | state | val | n_val |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['id']} | {r['key']} | {r['operator']} | {r['parent']} | {r['state']} | {r['val_mean']} | "
              f"{r['n_val']} |" for r in runs["after"]]
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:8 + min(len(diffs), 50)]))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
