"""Replay the acceptance rule on finished runs' val scores (no model calls): which candidates each rule accepts.

    python scripts/gate_replay.py RUN_DIR [RUN_DIR ...]

A development check of the acceptance rule for noisy judges (scripts/results/dev_judge_gate.md). It reads each
run's candidates.jsonl and evals.jsonl, and walks the fully evaluated candidates in trial order under the rule
before (a gain above `min_gain`, twice the standard error the judge's redraw noise gives over val) and the rule
now (pool.select: above twice the standard error of the per-case differences from the best). The replay is not
the run a rule would have made: the search adapts to what it accepted, so later candidates would differ."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from reflexopt.pool import Candidate, State, select
from reflexopt.prompt import Prompt
from reflexopt.stats import paired_gain_bar


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def replay(run: Path) -> None:
    cands = {c["id"]: c for c in lines(run / "candidates.jsonl") if c["state"] != "running"}
    val: dict[str, dict[str, float]] = {}
    for e in lines(run / "evals.jsonl"):
        if e["split"] == "val" and e["score"] is not None:
            val.setdefault(e["key"], {})[e["case_id"]] = e["score"]
    start = next(e for e in lines(run / "events.jsonl") if e["event"] == "baseline")
    noise, min_gain = start["noise"], start["min_gain"]
    base = val[cands["baseline"]["key"]]
    n = len(base)
    print(f"\n{run}: {n} val cases, judge redraw noise SD {noise:.3f}, min_gain {min_gain:.3f}, "
          f"the SD of a difference of two verdicts if every output changed {noise * 2 ** 0.5:.3f}\n")
    print("| trial | operator | state | val | gain over start | cases that moved | SD of the differences "
          "| 2 SE (the bar now) |")
    print("|---|---|---|---|---|---|---|---|")
    pool = []
    for cid, c in cands.items():
        scores = val.get(c["key"], {})
        pool.append(Candidate(cid, Prompt(text=cid), c["operator"], c["parent"], params=c["params"])
                    .scored(scores, State(c["state"])))
        if cid == "baseline" or len(scores) < 2:
            continue
        d = [scores[k] - base[k] for k in scores if k in base]
        print(f"| {cid} | {c['operator']} | {c['state']} | {statistics.mean(scores.values()):.3f} "
              f"| {statistics.mean(d):+.3f} | {sum(x != 0 for x in d)} of {len(d)} | {statistics.stdev(d):.3f} "
              f"| {paired_gain_bar(scores, base):.3f} |")
    for name, gain in (("before (a gain above min_gain)", None), ("now (pool.select)", min_gain)):
        if gain is None:
            best, path = pool[0], ["baseline"]
            for c in pool[1:]:
                if c.state == State.COMPLETE and len(c.val) == n and c.val_mean > best.val_mean + min_gain:
                    best, path = c, [*path, c.id]
        else:
            path = list(select(pool, n, min_gain).accepted)
        print(f"\naccepted {name}: {' > '.join(path)}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        replay(Path(arg))
