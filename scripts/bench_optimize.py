"""Benchmark: `reflexopt optimize` on the embedded model (task AND reasoning model), deterministic metric.

Runs each dataset in a fresh REFLEXOPT_HOME (empty response cache: every call is paid for), records the
command, the wall time and the JSON summary, and writes a markdown report.

    python scripts/bench_optimize.py --out scripts/results/optimize_smollm2.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reflexopt.runs import trajectory

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TASKS = {
    "customer_reviews": ("Tell me about this review.", SHARED / "customer_reviews.jsonl"),
    "trec_questions": ("What kind of question is this?", SHARED / "trec_questions.jsonl"),
}


def run(name: str, extra: list[str], workdir: Path) -> dict[str, object]:
    start_prompt, data = TASKS[name]
    prompt = workdir / f"{name}.md"
    prompt.write_text(start_prompt + "\n", encoding="utf-8")
    cmd = ["reflexopt", "optimize", str(data), str(prompt), "-m", "local/smollm2", "--metric", "contains",
           "--json", "-o", str(workdir / f"{name}.best.md"), *extra]
    env = {**os.environ, "REFLEXOPT_HOME": str(workdir / f"home-{name}")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "reflexopt", *cmd[1:]], capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    runs = workdir / f"home-{name}" / "runs" / result["run_id"]
    by_role = json.loads((runs / "summary.json").read_text())["usage"]["by_role"]
    trials = trajectory(runs)  # each candidate once, its final record
    shown = " ".join(a if " " not in a else repr(a) for a in cmd).replace(str(SHARED), "../shared/data")
    shown = shown.replace(str(workdir) + "/", "")
    return {"name": name, "command": shown, "wall_s": round(wall, 1), "result": result, "by_role": by_role,
            "best_prompt": (workdir / f"{name}.best.md").read_text(), "candidates": trials}


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = ["# optimize on the embedded model (SmolLM2-135M as task and reasoning model)", "",
             f"Made by `python scripts/bench_optimize.py {' '.join(sys.argv[1:])}` on a 2-core CPU machine, "
             "each dataset in a fresh REFLEXOPT_HOME (no cached responses).", "",
             "| dataset | baseline test | best test | delta 95% CI | p | significant | task calls | all paid calls "
             "| trials (pruned) | wall |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["result"]  # type: ignore[index]
        task_calls = row["by_role"]["task"]["model_calls"]  # type: ignore[index]
        lines.append(f"| {row['name']} | {r['baseline_test']:.3f} | {r['best_test']:.3f} | "
                     f"[{r['delta_ci95'][0]:+.3f}, {r['delta_ci95'][1]:+.3f}] | {r['p_value']:.2g} | "
                     f"{r['significant']} | {task_calls} | {r['model_calls']} | {r['trials']} ({r['pruned_trials']}) | "
                     f"{row['wall_s'] / 60:.1f} min |")
    for row in rows:
        lines += ["", f"## {row['name']}", "", "```", str(row["command"]), "```", "", "JSON output:", "", "```json",
                  json.dumps(row["result"], indent=1), "```", "", "Best prompt:", "", "```markdown",
                  str(row["best_prompt"]).rstrip(), "```", "", "Candidates (operator, state, val):", ""]
        for c in row["candidates"]:  # type: ignore[union-attr]
            lines.append(f"- {c['id']}: {c['operator']} from {c['parent']}, {c['state']}, val {c['val_mean']} "
                         f"({c['n_val']} cases)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TASKS))
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "optimize_smollm2.md"))
    ap.add_argument("--max-calls", default="1500")
    ap.add_argument("--max-time", default="22m")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            rows.append(run(name, ["--max-calls", args.max_calls, "--max-time", args.max_time, *args.extra],
                            Path(tmp)))
            Path(args.out).write_text(report(rows, args), encoding="utf-8")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
