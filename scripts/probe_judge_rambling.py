"""Development probe (dev sets only; no search, nothing scored on test): does the judge fail answers that talk
about the input without doing the task, once the rubric says that such an answer is wrong?

Qwen2.5-Coder-1.5B, the judge of the LLM-judge table, passed rambling answers that never negate ("Caffeine is a
stimulant found in many teas": 5, "does not contradict the reference") on negation, whose reference is the
negated sentence. The shipped `correctness` rubric ends "Extra true information that does not contradict the
reference is fine", which such a reasoning quotes. The known-answer check (another case's reference as a foil)
is too easy to see it. This probe asks the judge directly (`JudgeScorer.ask`, past the copy and match rules)
about three answers per case, whose right verdict is known without a judge:

- `reference`: the case's own reference (should pass);
- `right + extra`: the reference, then a true sentence about the input ("The sentence given was: INPUT")
  (should pass: extra true information beside a right answer);
- `rambling`: what SmolLM2 answers to the set's vague prompt ("Here is a sentence."), kept where it shares
  less than half its words with the reference (token F1 < 0.5) and is not the input repeated (should fail).

Rubrics, written before any run:
- `as shipped`: rubrics/correctness.md;
- `answer required`: the same, its last-but-one sentence replaced by WORDING below.

The rule, written before the run: adopt `answer required` if, on both sets, it fails at least as many rambling
answers and passes at least as many right answers (reference, right + extra) as the shipped rubric, and gets
more verdicts right in all.

    python scripts/probe_judge_rambling.py [--cases 8] [--out scripts/results/probe_judge_rambling.jsonl]

Run with nothing else on the machine, or pinned (`REFLEXOPT_LOCAL_THREADS=1 taskset -c N`); Qwen's GGUF at
~/.cache/reflexopt-bench/qwen/qwen.gguf, served by reflexopt (`local/PATH.gguf`) beside the embedded model.
The rows are resumed: a (set, rubric) pair already in --out is not asked again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
SETS = {"negation": ROOT / "scripts/data/negation.jsonl", "passive_voice": ROOT / "scripts/data/passive_voice.jsonl"}
JUDGE = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"
SHIPPED = "Extra true information that does not contradict the reference is fine."
WORDING = ("A response that does not give what the reference gives is wrong (1 or 2), however true or related it "
           "is: a remark on the input, a question back, or a description of the task is not an answer. Extra true "
           "information is fine beside an answer that gives what the reference gives.")
RUBRICS = ("as shipped", "answer required")


def rubric(name: str) -> Any:
    from reflexopt.judge import load_rubric

    r = load_rubric("correctness")
    if name == "as shipped":
        return r
    assert SHIPPED in r.text, "the shipped rubric changed: rewrite this probe"
    return replace(r, text=r.text.replace(SHIPPED, WORDING))


async def answers(path: Path, cases: int) -> list[dict[str, Any]]:
    """Each case's three answers and the verdict each should get (the rambling one from the embedded model)."""
    from reflexopt.config import model_spec
    from reflexopt.data import load_dataset
    from reflexopt.metrics import matches_reference, token_f1
    from reflexopt.models import get_client
    from reflexopt.prompt import load_prompt

    rows = load_dataset(path)[:cases]
    prompt = load_prompt(ROOT / "scripts/handwritten" / path.stem / "vague.md")
    task = get_client(model_spec("local/smollm2@max_tokens=64"))
    out = []
    for case in rows:
        said = await task.complete(prompt.render(case))
        out.append({"case": case, "kind": "reference", "answer": case.ideal, "should_pass": True})
        out.append({"case": case, "kind": "right + extra", "answer": f"{case.ideal} The sentence given was: "
                    f"{case.input_text}", "should_pass": True})
        text = said.text.strip()
        if said.ok and token_f1(text, case.ideal) < 0.5 and not matches_reference(case.input_text, text):
            out.append({"case": case, "kind": "rambling", "answer": text, "should_pass": False})
    return out


async def probe(name: str, asked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from reflexopt.config import model_spec
    from reflexopt.judge import JudgeScorer
    from reflexopt.models import get_client

    scorer = JudgeScorer(get_client(model_spec(JUDGE), role="judge"), rubric(name))
    rows = []
    for a in asked:
        s = await scorer.ask(a["case"], a["answer"])
        rows.append({"rubric": name, "case": a["case"].id, "kind": a["kind"], "answer": a["answer"],
                     "should_pass": a["should_pass"], "passed": s.passed, "raw": s.raw, "reasoning": s.reasoning,
                     "right": s.passed is not None and s.passed == a["should_pass"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "scripts/results/probe_judge_rambling.jsonl"))
    a = ap.parse_args()
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {(r["set"], r["rubric"]) for r in map(json.loads, out.read_text().splitlines())}
    for name, path in SETS.items():
        todo = [r for r in RUBRICS if (name, r) not in done]
        if not todo:
            continue
        asked = asyncio.run(answers(path, a.cases))
        for r in todo:
            rows = asyncio.run(probe(r, asked))
            with out.open("a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps({"set": name, "cases": a.cases, **row}, ensure_ascii=False) + "\n")
            for kind in ("reference", "right + extra", "rambling"):
                got = [x for x in rows if x["kind"] == kind]
                print(f"{name} · {r} · {kind}: {sum(x['right'] for x in got)} of {len(got)} right", flush=True)


if __name__ == "__main__":
    main()
