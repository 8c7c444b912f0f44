"""Development probe (dev sets, dev seeds, val only): do demos pay more on the starting prompt than on a task
instruction built from the facts?

Reflex adds demos to its current best, which on a label task is soon an `instruct` prompt; its Pareto parents never
include a starting prompt that scores 0 on val. MIPROv2's winners on customer_reviews were the vague starting
prompt with 4 demos as chat turns. For each dev set and seed this scores on val, with the embedded model:
the starting prompt and the input-first instruction (phrasing 5, what reflex's first `instruct` trial built on
these sets), each alone and with the same demo draws (reflex's first demos setting: every label, balanced, cycle,
as chat turns; draws 0-2), and with demos drawn the same way from only the train cases that the instruction
answers right ("boot", MIPROv2's bootstrapped demos). No search; nothing here decides by test.

    REFLEXOPT_HOME=/tmp/probe-home python scripts/probe_demo_base.py [--out scripts/results/probe_demo_base.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from reflexopt.config import ModelSpec, ScorerSpec  # noqa: E402
from reflexopt.data import load_dataset, split  # noqa: E402
from reflexopt.evaluate import evaluate_async  # noqa: E402
from reflexopt.models import get_client  # noqa: E402
from reflexopt.prompt import load_prompt  # noqa: E402
from reflexopt.propose import apply_instruct, choose_demos  # noqa: E402
from reflexopt.scoring import make_scorer  # noqa: E402
from reflexopt.space import suggest  # noqa: E402
from reflexopt.workload import task_facts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETS = {"customer_reviews": ROOT.parent / "shared/data/customer_reviews.jsonl",
        "trec_questions": ROOT.parent / "shared/data/trec_questions.jsonl"}


async def probe(name: str, seed: int, draws: int) -> list[dict]:
    cases = load_dataset(SETS[name])
    sp = split(cases, None, seed)
    vague = load_prompt(ROOT / f"scripts/handwritten/{name}/vague.md")
    facts = task_facts(sp.train, vague.text)
    instr = vague.with_(text=apply_instruct(vague, facts, 5, True).text)
    n = suggest(None, 0, "demos", n_train=len(sp.train), n_labels=len(facts.labels), first=True)["n_demos"]
    client = get_client(ModelSpec.parse("local/smollm2"), role="task")
    scorer, _ = make_scorer(ScorerSpec(metric="contains"), list(cases))
    # bootstrapped (MIPROv2's word): demos drawn only from the train cases the instruction answers right
    on_train = await evaluate_async(sp.train, instr, client, scorer)
    right = {r.case_id for r in on_train.results if r.passed}
    boot_pool = [c for c in sp.train if c.id in right]
    rows = []
    for base_name, base in (("start", vague), ("instruct5", instr)):
        for pick, pool in (("balanced", sp.train), ("boot", boot_pool)):
            for draw in [None, *range(draws)] if pick == "balanced" else range(draws):
                p = base if draw is None else base.with_(demos=choose_demos(pool, n, draw, facts), demo_style="turns")
                rep = await evaluate_async(sp.val, p, client, scorer)
                scores = [r.score or 0.0 for r in rep.results]
                rows.append({"set": name, "seed": seed, "base": base_name, "pick": pick, "draw": draw,
                             "n_demos": len(p.demos), "boot_pool": len(boot_pool),
                             "val": round(sum(scores) / len(scores), 4), "per_case": scores})
                print(name, seed, base_name, pick, draw, rows[-1]["val"], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="scripts/results/probe_demo_base.jsonl")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--sets", default=",".join(SETS))
    a = ap.parse_args()
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {(r["set"], r["seed"]) for r in map(json.loads, out.read_text().splitlines()) if "pick" in r}
    for seed in map(int, a.seeds.split(",")):
        for name in a.sets.split(","):
            if (name, seed) in done:
                continue
            rows = asyncio.run(probe(name, seed, a.draws))
            with out.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
