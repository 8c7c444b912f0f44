"""Replay (no model call): how often would the default objective's tie rule change what a finished run returned,
and how many tokens per request would it save?

The rule (verdict.choose, from 3870fd6): of the candidates with the same val score as the best, the run returns
the one with the lowest cost per request (tokens per request without prices); a one-label candidate never takes
the place of a best that varies its answers, nor the reverse. It reads each run's `summary.json` (its frontier:
every candidate scored on all of val, with its val mean and tokens per request) and `candidates.jsonl` (which of
them answered one label), from run archives as `scripts/bench.py --keep-runs` writes them. Val only: nothing here
reads a test split.

    python scripts/replay_val_ties.py docs/benchmarks/runs/labels_third/*reflex*.tar.gz
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path


def replay(run: Path) -> dict[str, object] | None:
    """One run folder's best, its tied candidates and the one the rule returns; None without a frontier."""
    s = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    frontier = {p["id"]: p for p in s.get("frontier") or []}
    best = s["best_candidate"]
    if best == "baseline" or best not in frontier:
        return {"best": best, "ties": 1, "pick": best, "tokens": None, "pick_tokens": None}
    params = {c["id"]: c.get("params") or {} for c in map(json.loads, (run / "candidates.jsonl").open())}

    def one_label(i: str) -> bool:
        return bool(params.get(i, {}).get("collapsed"))

    top = frontier[best]
    ties = [p for i, p in frontier.items() if i != "baseline" and p["val"] == top["val"]
            and one_label(i) == one_label(best)]
    pick = min(ties, key=lambda p: (p["prompt_tokens"] + p["completion_tokens"], p["prompt_tokens"]))
    if (pick["prompt_tokens"] + pick["completion_tokens"]) >= (top["prompt_tokens"] + top["completion_tokens"]):
        pick = top
    return {"best": best, "ties": len(ties), "pick": pick["id"], "val": top["val"],
            "tokens": top["prompt_tokens"] + top["completion_tokens"],
            "pick_tokens": pick["prompt_tokens"] + pick["completion_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archives", nargs="+", type=Path, help="home-*.tar.gz from --keep-runs")
    args = ap.parse_args()
    print("| run | best | val | candidates tied on it | returned by the rule | tokens / request: best → returned |")
    print("|---|---|---|---|---|---|")
    fired = saved = n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for a in sorted(args.archives):
            with tarfile.open(a) as t:
                t.extractall(tmp, filter="data")
            for run in sorted((Path(tmp) / a.name.removesuffix(".tar.gz")).glob("runs/*")):
                r = replay(run)
                if r is None:
                    continue
                n += 1
                if r["pick"] != r["best"]:
                    fired += 1
                    saved += float(r["tokens"]) - float(r["pick_tokens"])  # type: ignore[arg-type]
                    print(f"| {a.name.removesuffix('.tar.gz').removeprefix('home-')} | {r['best']} | {r['val']:.3f} "
                          f"| {r['ties']} | {r['pick']} | {r['tokens']:.0f} → {r['pick_tokens']:.0f} |")
    print(f"\nThe rule changes the returned prompt on {fired} of {n} runs"
          + (f", saving {saved / fired:.0f} tokens per request on average where it does." if fired else "."))


if __name__ == "__main__":
    main()
