"""Probe (no search, nothing scored on test): what the known-answer check of a judge says, probes included, with
the judge of the LLM-judge table (Qwen2.5-Coder-1.5B) on two sets:

- `security_incidents` (the dev free-text set, its own rubric): 3-sentence briefs, so each reference gets a near
  miss (its last sentence swapped for another case's first) and a padded form (that sentence added) besides
  itself and a foil (another case's reference);
- `taxonomy_animal` (a published judge-table set, the `correctness` rubric): list references, so each also gets
  its items in another order. The probes were built from what that table showed on this set, so this row only
  shows that the check reports what was seen there; it is no independent evidence.

The recorded "responses" are the references themselves: they pass without a verdict (matches), so the only judge
calls are the known answers (`agreement.known_plan`: up to 5 per case, 5 cases).

    REFLEXOPT_LOCAL_THREADS=1 taskset -c 1 python scripts/probe_judge_known.py [--out FILE.jsonl]

Qwen's GGUF at ~/.cache/reflexopt-bench/qwen/qwen.gguf, served by reflexopt itself (`local/PATH.gguf`). A set
already in --out is not asked again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUDGE = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"
SETS = {
    "security_incidents": (ROOT.parent / "shared/data/security_incidents.jsonl",
                           str(ROOT.parent / "shared/data/security_incidents_rubric.md")),
    "taxonomy_animal": (ROOT / "scripts/data/taxonomy_animal.jsonl", "correctness"),
}
ROWS = 6  # the eval asks about the first KNOWN_CASES + 1 scored cases


def probe(name: str, data: Path, rubric: str, work: Path) -> dict:
    from reflexopt.data import load_dataset

    rows = [{"input": c.input, "ideal": c.ideal, "response": c.ideal} for c in load_dataset(str(data))[:ROWS]]
    graded = work / f"{name}.jsonl"
    graded.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cmd = ["eval", str(graded), "--responses", "response", "--judge", JUDGE, "--judge-criteria", rubric,
           "--self-agreement", "1", "--json"]
    env = {**os.environ, "REFLEXOPT_HOME": str(work / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.run([sys.executable, "-m", "reflexopt", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"reflexopt eval failed on {name}:\n{p.stderr[-3000:]}")
    s = json.loads(p.stdout)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    return {"set": name, "rubric": Path(rubric).name, "commit": commit, "command": "reflexopt " + " ".join(cmd),
            "known": s["judge"]["known"], "judge_calls": s["model_calls"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "scripts/results/probe_judge_known.jsonl"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/reflexopt-probe-known"),
                    help="the rows asked and the response cache (a re-run asks only what is new)")
    a = ap.parse_args()
    out = Path(a.out)
    done = {json.loads(line)["set"] for line in out.read_text().splitlines()} if out.exists() else set()
    a.work.mkdir(parents=True, exist_ok=True)
    for name, (data, rubric) in SETS.items():
        if name in done:
            continue
        row = probe(name, data, rubric, a.work)
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(name, row["known"]["summary"], "|", row["known"]["warning"], flush=True)


if __name__ == "__main__":
    main()
