"""Development probe (dev sets, dev seeds, no task model): does `induce` name the task?

On the judge tables' sets, Qwen2.5-Coder-1.5B as the reasoning model wrote induced instructions that were code
tasks ("Write a function that takes a string as input and returns the same string with all vowels removed")
for English words and their French translations, on all three seeds (docs/benchmarks/judge_next.md). This
probe asks the reasoning model for the first induced instruction a run would ask for (train split of `--seed`,
the examples `induce` draws first), once per meta-prompt given with `--template`, through the operator's own
code (propose.llm_induce: the same request, the same rules for a usable reply), and records the instruction,
whether it was usable, whether it names the task (a pattern per set, written before the probe ran) and whether
it speaks of code. Nothing here reads a val or test split.

    python scripts/probe_induce.py --template scripts/results/induce_templates/before.md \
        scripts/results/induce_templates/relation.md --seeds 0 1 2 --out scripts/results/probe_induce.jsonl

Rows already in --out are skipped, so it resumes. The reasoning model is Qwen served by reflexopt
(`local/PATH.gguf`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REASONER = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"
# what an instruction that names the task says (written before the probe ran)
NAMES = {
    "antonyms": r"opposite|antonym",
    "translation_en_fr": r"french|translat",
    "num_to_verbal": r"in words|spell|written out|words",
    "taxonomy_animal": r"animal",
    "negation": r"negat|\bnot\b|opposite|contradict",
    "passive_voice": r"passive",
}
CODE = re.compile(r"\bfunction\b|\bcode\b|\bprogram\b|\bpython\b|\bstring\b", re.I)


async def probe(name: str, template: Path, seed: int) -> dict[str, Any]:
    from reflexopt import propose
    from reflexopt.config import model_spec
    from reflexopt.data import load_dataset, split
    from reflexopt.models import get_client
    from reflexopt.prompt import Prompt
    from reflexopt.prompts import meta_prompt
    from reflexopt.workload import task_facts

    text = template.read_text(encoding="utf-8")

    def patched(which: str, **values: object) -> str:
        from string import Template

        if which != "propose_induce":
            return meta_prompt(which, **values)
        return Template(text).safe_substitute({k: str(v) for k, v in values.items()})

    propose.meta_prompt = patched  # type: ignore[assignment]
    start = (ROOT / "scripts/handwritten" / name / "vague.md").read_text(encoding="utf-8")
    train = split(load_dataset(ROOT / "scripts/data" / f"{name}.jsonl"), seed=seed).train
    facts = task_facts(train, start)
    examples = propose.induction_examples(train, "0-0")  # the draw a run's first induce makes
    reasoner = get_client(model_spec(REASONER), role="reasoning")
    found, raw, _ = await propose.llm_induce(reasoner, Prompt(start), facts, examples)
    instruction = found or propose.induced(raw)
    return {"set": name, "seed": seed, "template": template.stem, "usable": found is not None,
            "names_task": bool(re.search(NAMES[name], instruction, re.I)), "code": bool(CODE.search(instruction)),
            "instruction": instruction, "reply": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", nargs="+", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=list(NAMES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "scripts/results/probe_induce.jsonl")
    a = ap.parse_args()
    done = set()
    if a.out.exists():
        done = {(r["set"], r["seed"], r["template"]) for r in map(json.loads, a.out.read_text().splitlines())}
    for seed in a.seeds:
        for name in a.sets:
            for t in a.template:
                if (name, seed, t.stem) in done:
                    continue
                row = asyncio.run(probe(name, t, seed))
                print(f"{name} seed {seed} {t.stem}: usable {row['usable']} names {row['names_task']} "
                      f"code {row['code']} | {row['instruction'][:160]!r}", flush=True)
                with a.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    rows = [json.loads(x) for x in a.out.read_text().splitlines()]
    for t in a.template:
        mine = [r for r in rows if r["template"] == t.stem]
        named = sum(r["usable"] and r["names_task"] for r in mine)
        print(f"{t.stem}: {len(mine)} asks, usable and naming the task {named}, speaking of code "
              f"{sum(r['code'] for r in mine)}")


if __name__ == "__main__":
    main()
