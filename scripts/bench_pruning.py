"""Benchmark: what the Wilcoxon pruner saves. The same optimize run with and without pruning.

Both runs use the embedded model, the same seed and the same response cache (so wall time stays small);
"case evaluations" counts every val case scored for a trial whether its response was paid or cached, which is
the cost a fresh run would pay. Writes a markdown report.

    python scripts/bench_pruning.py --out scripts/results/pruning_smollm2.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from reflexopt.runs import trajectory

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "trec_questions.jsonl"


def one(home: Path, prompt: Path, prune: bool, args: argparse.Namespace) -> dict[str, object]:
    cmd = ["optimize", str(DATA), str(prompt), "-m", "local/smollm2", "--metric", "contains", "--json",
           "--max-trials", str(args.trials), "--patience", str(args.trials), "--max-tokens", "16",
           "--seed", str(args.seed)] + ([] if prune else ["--no-prune"])
    env = {**os.environ, "REFLEXOPT_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "reflexopt", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    result = json.loads(proc.stdout)
    run = home / "runs" / result["run_id"]
    trials = [c for c in trajectory(run) if c["id"] != "baseline" and c["state"] in ("complete", "pruned")]
    evals = [c["n_val"] for c in trials]
    shown = " ".join(["reflexopt", *cmd]).replace(str(DATA), "../shared/data/trec_questions.jsonl")
    return {"prune": prune, "command": shown.replace(str(prompt), "start.md"), "result": result,
            "evals_per_trial": evals, "mean_evals": sum(evals) / max(1, len(evals)),
            "states": [c["state"] for c in trials]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "pruning_smollm2.md"))
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prompt = Path(tmp) / "start.md"
        prompt.write_text("What kind of question is this?\n")
        rows = [one(Path(tmp) / "home", prompt, False, args), one(Path(tmp) / "home", prompt, True, args)]
    lines = ["# Pruning: case evaluations per trial with and without WilcoxonPruner", "",
             f"Made by `python scripts/bench_pruning.py {' '.join(sys.argv[1:])}` (TREC, embedded model as task and "
             "reasoning model, `contains` metric).", "",
             "| pruner | trials | pruned | val cases per trial (mean) | per trial | best val | baseline test | "
             "best test | significant |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["result"]  # type: ignore[index]
        lines.append(f"| {'on' if r['prune'] else 'off'} | {res['trials']} | {res['pruned_trials']} | "
                     f"{r['mean_evals']:.1f} | {r['evals_per_trial']} | {res['best_val']:.3f} | "
                     f"{res['baseline_test']:.3f} | {res['best_test']:.3f} | {res['significant']} |")
    for r in rows:
        lines += ["", "```", str(r["command"]), "```", "", "```json", json.dumps(r["result"], indent=1), "```"]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
