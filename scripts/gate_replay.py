"""Replay the acceptance rule on finished runs' val scores (no model calls): which candidates each rule accepts.

    python scripts/gate_replay.py RUN_DIR [RUN_DIR ...]

A development check of the acceptance rule for noisy judges (scripts/results/dev_judge_gate.md). It reads each
run's candidates.jsonl and evals.jsonl, and walks the fully evaluated candidates in trial order under the rule
before (a gain above `min_gain`, twice the standard error the judge's redraw noise gives over val) and the rule
now (pool.select: above twice the standard error of the per-case differences from the best). The replay is not
the run a rule would have made: the search adapts to what it accepted, so later candidates would differ. It also
prints what two looser bars would accept (a paired t above 1, and any gain), for scripts/path_holdout.py to score
on held-back rows."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from reflexopt.pool import Candidate, State, select
from reflexopt.prompt import Prompt
from reflexopt.stats import paired_gain_bar
from reflexopt.store import RunStore


def _pool(run: Path) -> tuple[list[Candidate], dict[str, float]]:
    """The run's candidates with their val scores (trial order), and its baseline event (the judge's noise)."""
    store = RunStore(run)
    cands = [c for c in store.candidates() if c["state"] != "running"]  # the latest record of each, in trial order
    val: dict[str, dict[str, float]] = {}
    for (key, split, case), (res, _) in store.evals().items():
        if split == "val" and res.score is not None:
            val.setdefault(key, {})[case] = res.score
    start = next(e for e in store.events() if e["event"] == "baseline")
    return ([Candidate(c["id"], Prompt(text=c["id"]), c["operator"], c["parent"], params=c["params"])
             .scored(val.get(c["key"], {}), State(c["state"])) for c in cands], start)


def paths(run: Path) -> dict[str, list[str]]:
    """The accepted path (candidate ids, from the baseline) each rule gives on the run's val scores: `before` (a
    gain above min_gain), `now` (pool.select), `t>1` and `any gain`."""
    pool, start = _pool(run)
    base = next(c for c in pool if c.id == "baseline")
    n = len(base.val)
    out = {"before": ["baseline"], "now": list(select(pool, n, start["min_gain"]).accepted)}
    best = base
    for c in pool:
        if c.state == State.COMPLETE and len(c.val) == n and c.val_mean > best.val_mean + start["min_gain"]:
            best, out["before"] = c, [*out["before"], c.id]
    for name, k in (("t>1", 1.0), ("any gain", 0.0)):  # looser bars: a paired t above 1, and any gain
        best, path = base, ["baseline"]
        for c in pool:
            if (c.state == State.COMPLETE and len(c.val) == n and c.val_mean > best.val_mean
                    and c.val_mean > best.val_mean + paired_gain_bar(c.val, best.val, k=k)):
                best, path = c, [*path, c.id]
        out[name] = path
    return out


def replay(run: Path) -> None:
    pool, start = _pool(run)
    noise, min_gain = start["noise"], start["min_gain"]
    base = next(c for c in pool if c.id == "baseline")
    n = len(base.val)
    print(f"\n{run}: {n} val cases, judge redraw noise SD {noise:.3f}, min_gain {min_gain:.3f}, "
          f"the SD of a difference of two verdicts if every output changed {noise * 2 ** 0.5:.3f}\n")
    print("| trial | operator | state | val | gain over start | cases that moved | SD of the differences "
          "| 2 SE (the bar now) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in pool:
        if c is base or len(c.val) < 2:
            continue
        d = [c.val[k] - base.val[k] for k in c.val if k in base.val]
        print(f"| {c.id} | {c.operator} | {c.state.value} | {c.val_mean:.3f} | {statistics.mean(d):+.3f} "
              f"| {sum(x != 0 for x in d)} of {len(d)} | {statistics.stdev(d):.3f} "
              f"| {paired_gain_bar(c.val, base.val):.3f} |")
    p = paths(run)
    print(f"\naccepted before (a gain above min_gain): {' > '.join(p['before'])}")
    print(f"\naccepted now (pool.select): {' > '.join(p['now'])}")
    for name, label in (("t>1", "1"), ("any gain", "0")):
        print(f"\naccepted with a paired t above {label}: {' > '.join(p[name])}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        replay(Path(arg))
