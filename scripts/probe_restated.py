"""Development probe (dev sets, no task model): does the judge pass an answer that only gives the input back?

On the judge tables' one-word sets, SmolLM2's wrong answers were often the input word restated in a sentence
('The correct spelling of the word is "cover."' for *couverture*), and Qwen2.5-Coder-1.5B passed many of them.
This probe asks the judge, through its own code (JudgeScorer.ask, past the unjudged verdicts, at the known
answers' sample index), about the first 5 cases of each dev set given: the answer `agreement.restated` builds
(`The answer is "<input>".`), and records the verdict. A case whose reference is its input (translation's "jury")
gets no such foil in a run (agreement.restated returns None); it is asked here anyway and marked.

    python scripts/probe_restated.py antonyms translation_en_fr --out scripts/results/probe_restated.jsonl

The judge is Qwen served by reflexopt (`local/PATH.gguf`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUDGE = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--out", type=Path, default=ROOT / "scripts/results/probe_restated.jsonl")
    ap.add_argument("--judge", default=JUDGE)
    args = ap.parse_args()

    from reflexopt.agreement import KNOWN_SAMPLE, restated
    from reflexopt.config import model_spec
    from reflexopt.data import load_dataset
    from reflexopt.judge import JudgeScorer, load_rubric
    from reflexopt.models import get_client

    scorer = JudgeScorer(get_client(model_spec(args.judge), role="judge"), load_rubric("correctness"))
    with args.out.open("w", encoding="utf-8") as f:
        for name in args.sets:
            for case in load_dataset(ROOT / "scripts" / "data" / f"{name}.jsonl")[:5]:
                answer = restated(case) or f'The answer is "{case.input_text}".'
                s = asyncio.run(scorer.ask(case, answer, sample=KNOWN_SAMPLE))
                row = {"set": name, "input": case.input_text, "ideal": case.ideal, "answer": answer,
                       "foil_in_a_run": restated(case) is not None, "raw": s.raw, "passed": s.passed,
                       "reasoning": s.reasoning[:150]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                print(f"{name} {case.input_text!r} (ref {case.ideal!r}): {s.raw}", flush=True)


if __name__ == "__main__":
    main()
