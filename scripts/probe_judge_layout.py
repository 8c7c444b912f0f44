"""Development probe (dev sets only; no search, nothing scored on test): does the judge read the reference better
when the request says which block is the right answer?

Qwen2.5-Coder-1.5B, the judge of the LLM-judge table, failed 3 of the 4 negated sentences SmolLM2 wrote word for
word as their references, its reasoning reading the input as the reference ("The correct statement is that love
is contagious"). Answers equal to the reference now pass unjudged (judge.py); this probe asks whether the
request itself can be made harder to misread, measured on known answers (agreement.known_answers): each case's
own reference (should pass) and another case's reference (should fail), asked of the judge directly.

Layouts, written before any run:
- `as shipped` (until this probe): judge.md (rubric, input, reference, response, task), the reference block
  headed "# Reference answer";
- `reference named`: the same request, the reference block's heading saying what it is and what to grade against:
  "# Reference answer (a right response: grade the response against this, not against the input)". Shipped
  since (judge.REFERENCE_HEADING).

    python scripts/probe_judge_layout.py [--cases 10] [--out scripts/results/probe_judge_layout.jsonl]

Run with nothing else on the machine, or pinned (`REFLEXOPT_LOCAL_THREADS=1 taskset -c 0`); Qwen's GGUF at
~/.cache/reflexopt-bench/qwen/qwen.gguf, served by reflexopt (`local/PATH.gguf`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
SETS = {"negation": ROOT / "scripts/data/negation.jsonl", "passive_voice": ROOT / "scripts/data/passive_voice.jsonl"}
JUDGE = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"
HEADINGS = {"as shipped": "# Reference answer",
            "reference named": "# Reference answer (a right response: grade the response against this, not against "
                               "the input)"}


def scorer_class(heading: str) -> Any:
    from reflexopt.judge import REFERENCE_HEADING, JudgeScorer

    class Layout(JudgeScorer):
        def messages(self, case: Any, output: str, *, variant: str = "judge") -> list[dict[str, str]]:
            out = super().messages(case, output, variant=variant)
            out[-1] = {**out[-1], "content": out[-1]["content"].replace(REFERENCE_HEADING + "\n", heading + "\n", 1)}
            return out

    return Layout


async def probe(layout: str, path: Path, cases: int) -> dict[str, Any]:
    from reflexopt.agreement import known_answers
    from reflexopt.config import model_spec
    from reflexopt.data import load_dataset
    from reflexopt.judge import load_rubric
    from reflexopt.models import get_client

    cls = scorer_class(HEADINGS[layout])
    scorer = cls(get_client(model_spec(JUDGE), role="judge"), load_rubric("correctness"))
    k = await known_answers(scorer, load_dataset(path)[:cases + 1], limit=cases)
    return {"layout": layout, **k.to_json()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "scripts/results/probe_judge_layout.jsonl"))
    a = ap.parse_args()
    done = set()
    out = Path(a.out)
    if out.exists():
        done = {(r["set"], r["layout"]) for r in map(json.loads, out.read_text().splitlines())}
    for name, path in SETS.items():
        for layout in ("as shipped", "reference named"):
            if (name, layout) in done:
                continue
            row = {"set": name, "cases": a.cases, **asyncio.run(probe(layout, path, a.cases))}
            print(json.dumps(row), flush=True)
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
