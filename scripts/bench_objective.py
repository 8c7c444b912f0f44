"""Benchmark: `--objective cost` against `--objective score` on the embedded model (task and reasoning model).

For each set and seed, the score run is made first in its own REFLEXOPT_HOME, then the cost run with the same
command and `--objective cost` in the same home: the search is the same run (same seed, answers from the
cache), so the two differ only in which candidate they return, and the cost run pays only for scoring its own
pick on test. Resumable: rows already in the jsonl are skipped. Every row carries the commit and the command.

    python scripts/bench_objective.py --seeds 100 101 102 --max-calls 500 \
        --jsonl scripts/results/objective_smollm2.jsonl --out scripts/results/objective_smollm2.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TASKS = {
    "customer_reviews": ("Tell me about this review.", SHARED / "customer_reviews.jsonl"),
    "trec_questions": ("What kind of question is this?", SHARED / "trec_questions.jsonl"),
}


def commit() -> str:
    git = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, capture_output=True, text=True, cwd=ROOT).stdout.strip()


def run(name: str, seed: int, objective: str, max_calls: int, work: Path) -> dict[str, object]:
    start_prompt, data = TASKS[name]
    prompt = work / f"{name}.md"
    prompt.write_text(start_prompt + "\n", encoding="utf-8")
    args = ["optimize", str(data), str(prompt), "-m", "local/smollm2", "--metric", "contains", "--seed", str(seed),
            "--max-calls", str(max_calls), "--objective", objective, "--json"]
    env = {**os.environ, "REFLEXOPT_HOME": str(work / f"home-{name}-{seed}")}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{name} seed {seed} {objective} failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout)
    summary = json.loads(Path(r["run_dir"], "summary.json").read_text())
    chosen = next((x for x in summary.get("frontier") or [] if x["chosen"]), {})
    return {"set": name, "seed": seed, "objective": objective, "commit": commit(),
            "command": "reflexopt " + " ".join(args).replace(str(ROOT.parent), ".."),
            "baseline_test": r["baseline_test"], "best_test": r["best_test"], "best_val": r["best_val"],
            "baseline_val": r["baseline_val"], "best_candidate": r["best_candidate"],
            "prompt_tokens": chosen.get("prompt_tokens"), "completion_tokens": chosen.get("completion_tokens"),
            "model_calls": r["model_calls"], "trials": r["trials"], "wall_s": round(time.monotonic() - t0, 1)}


def table(rows: list[dict[str, object]]) -> str:
    out = ["| set | objective | test (mean ± SD) | val | prompt tokens / request | seeds | "
           "seeds where the cost pick uses fewer prompt tokens |", "|---|---|---|---|---|---|---|"]
    for name in TASKS:
        by = {o: [r for r in rows if r["set"] == name and r["objective"] == o] for o in ("score", "cost")}
        seeds = sorted({r["seed"] for r in by["score"]} & {r["seed"] for r in by["cost"]})
        for o in ("score", "cost"):
            rs = [r for r in by[o] if r["seed"] in seeds]
            if not rs:
                continue
            t = [float(r["best_test"]) for r in rs]  # type: ignore[arg-type]
            v = [float(r["best_val"]) for r in rs]  # type: ignore[arg-type]
            k = [float(r["prompt_tokens"] or 0) for r in rs]  # type: ignore[arg-type]
            sd = statistics.stdev(t) if len(t) > 1 else 0.0
            fewer = ""
            if o == "cost":
                pairs = {r["seed"]: r for r in by["score"]}
                strict = [float(r["prompt_tokens"] or 0) < float(pairs[r["seed"]]["prompt_tokens"] or 0)  # type: ignore[arg-type]
                          for r in rs]
                trimmed = sum(1 for r in rs if ".d" in str(r["best_candidate"]))
                fewer = f"{sum(strict)} of {len(rs)} ({trimmed} by a fewer-demo variant)"
            out.append(f"| {name} | {o} | {statistics.mean(t):.3f} ± {sd:.3f} | {statistics.mean(v):.3f} | "
                       f"{statistics.mean(k):.0f} | {', '.join(map(str, seeds))} | {fewer} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--max-calls", type=int, default=500)
    ap.add_argument("--jsonl", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reflexopt-bench-objective")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in args.jsonl.read_text().splitlines()] if args.jsonl.exists() else []
    for name in TASKS:
        for seed in args.seeds:
            for objective in ("score", "cost"):
                if any(r["set"] == name and r["seed"] == seed and r["objective"] == objective for r in done):
                    continue
                row = run(name, seed, objective, args.max_calls, args.work)
                done.append(row)
                with args.jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    text = (f"# `--objective cost` against `--objective score`, embedded model\n\n"
            f"SmolLM2-135M as task and reasoning model, metric `contains`, vague starting prompts, `--max-calls "
            f"{args.max_calls}`, fresh seeds {', '.join(map(str, args.seeds))}; every row of the jsonl names its "
            f"commit and command. The cost run shares the score run's cache; its search leaves two val scorings "
            f"unspent for the fewer-demo variants of its pick (so it can differ from the score run's search), and "
            f"it returns the cheapest candidate a one-sided paired test on val does not show worse than the "
            f"score-best.\n\n" + table(done) + "\n")
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
