"""Rewrite operators: turn a parent prompt into a candidate, recording the operator and the reasoning.

LLM operators (fix, restructure, constraints, compress, merge) ask the reasoning model; operators that need
no LLM (format spec, few-shot demos, structure: instruction role and answer cue) always work, so a weak
reasoning model still gets help. An LLM rewrite that is unusable falls back to the format operator.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from .data import Case, is_categorical, labels
from .diagnose import Diagnosis, format_cases
from .evaluate import CaseResult
from .models import ModelClient
from .prompt import Demo, Prompt
from .prompts import meta_prompt

LLM_OPERATORS = ("fix", "restructure", "constraints", "compress", "merge")
MAX_DEMO_CHARS = 6000


@dataclass(frozen=True)
class TaskFacts:
    labels: tuple[str, ...]
    categorical: bool
    sentences: int | None  # typical number of sentences in references (free text)
    words: int | None

    def as_text(self) -> str:
        if self.categorical:
            return f"The answer is one label out of: {', '.join(self.labels)}."
        if self.sentences:
            return f"Reference answers are free text, typically {self.sentences} sentence(s), about {self.words} words."
        return "The answer is free text."


def task_facts(train: Sequence[Case]) -> TaskFacts:
    if is_categorical(train):
        return TaskFacts(tuple(labels(train)), True, None, None)
    ideals = [c.ideal for c in train if c.ideal]
    if not ideals:
        return TaskFacts((), False, None, None)
    sents = [len([s for s in re.split(r"(?<=[.!?])\s+", x.strip()) if s]) for x in ideals]
    words = [len(x.split()) for x in ideals]
    return TaskFacts((), False, int(median(sents)), int(median(words)))


@dataclass(frozen=True)
class Proposal:
    text: str
    operator: str
    reasoning: str
    fallback: bool = False
    reasoning_calls: int = 0


def format_spec(facts: TaskFacts) -> str:
    if facts.categorical:
        return (f"Answer with exactly one of these labels: {', '.join(facts.labels)}. "
                "Reply with the label only, with no explanation.")
    if facts.sentences:
        n = facts.sentences
        return (f"Reply in exactly {n} sentence{'s' if n != 1 else ''} (about {facts.words} words), "
                "plain prose, with no preamble, headings or lists.")
    return "Reply with the answer only, with no preamble."


def apply_format(parent_text: str, facts: TaskFacts) -> Proposal:
    spec = format_spec(facts)
    if spec in parent_text:
        return Proposal(parent_text, "format", "output format already specified")
    return Proposal(f"{parent_text.rstrip()}\n\n{spec}\n", "format", f"added an explicit output format: {spec}")


def apply_constraints(parent_text: str, facts: TaskFacts, diagnosis: Diagnosis) -> Proposal:
    """No-LLM constraint emphasis: the diagnosis' fixes (or the format) as closing imperative rules."""
    rules = [c.fix for c in diagnosis.categories if c.fix][:3] or [format_spec(facts)]
    block = "Important:\n" + "\n".join(f"- {r}" for r in rules)
    if block in parent_text:
        return Proposal(parent_text, "constraints", "constraints already present")
    return Proposal(f"{parent_text.rstrip()}\n\n{block}\n", "constraints", "emphasised: " + "; ".join(rules))


def choose_demos(train: Sequence[Case], k: int, seed: int, facts: TaskFacts) -> tuple[Demo, ...]:
    """k demos from train: round-robin over labels when categorical, seeded; bounded total length."""
    if k <= 0:
        return ()
    rng = random.Random(seed)
    pool = [c for c in train if c.ideal]
    if facts.categorical:
        by: dict[str, list[Case]] = defaultdict(list)
        for c in pool:
            by[c.ideal or ""].append(c)
        for v in by.values():
            rng.shuffle(v)
        order = sorted(by)
        rng.shuffle(order)
        picked: list[Case] = []
        while len(picked) < k and any(by.values()):
            for lab in order:
                if by[lab] and len(picked) < k:
                    picked.append(by[lab].pop())
    else:
        picked = rng.sample(pool, min(k, len(pool)))
    demos: list[Demo] = []
    total = 0
    for c in picked:
        size = len(c.input_text) + len(c.ideal or "")
        if demos and total + size > MAX_DEMO_CHARS:
            break
        demos.append(Demo(c.input_text, c.ideal or ""))
        total += size
    return tuple(demos)


def extract_prompt(reply: str, parent: Prompt) -> str | None:
    """The rewritten prompt from a reasoning-model reply, or None when it is unusable."""
    m = re.findall(r"<prompt>\s*(.*?)\s*</prompt>", reply, re.S | re.I)
    text = m[-1] if m else ""
    if not text:
        return None
    text = text.strip()
    if len(text) < 8 or len(text) > 8000 or text == parent.text.strip():
        return None
    needed = set(parent.placeholders)
    have = set(re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})", text))
    if needed != have:
        return None
    return text + "\n"


async def llm_rewrite(op: str, reasoner: ModelClient, parent: Prompt, facts: TaskFacts, diagnosis: Diagnosis,
                      failing: Sequence[CaseResult], other: Prompt | None = None) -> tuple[str | None, str, int]:
    """(new text or None, raw reply, paid calls)."""
    values: dict[str, Any] = dict(prompt=parent.text.strip(), facts=facts.as_text(), diagnosis=diagnosis.as_text(),
                                  cases=format_cases(failing, limit=4))
    if op == "merge":
        values["other"] = (other or parent).text.strip()
    res = await reasoner.complete([{"role": "user", "content": meta_prompt(f"propose_{op}", **values)}],
                                  temperature=0.0)
    calls = 0 if res.cached or res.budget_exhausted else 1
    if not res.ok:
        return None, res.error or "", calls
    return extract_prompt(res.text, parent), res.text, calls


async def propose(params: dict[str, Any], parent: Prompt, *, train: Sequence[Case], facts: TaskFacts,
                  reasoner: ModelClient | None, diagnosis: Diagnosis, failing: Sequence[CaseResult],
                  other: Prompt | None) -> tuple[Prompt, Proposal]:
    """Apply the trial's operator, then its structural settings, to the parent."""
    op = params["operator"]
    prop: Proposal
    if op == "format":
        prop = apply_format(parent.text, facts)
    elif op == "demos":
        prop = Proposal(parent.text, "demos", f"{params['n_demos']} demos from train (seed {params['demo_seed']})")
    elif op in LLM_OPERATORS and reasoner is not None:
        text, raw, calls = await llm_rewrite(op, reasoner, parent, facts, diagnosis, failing, other)
        if text is not None:
            why = diagnosis.as_text() if op in ("fix", "constraints") else f"{op} by the reasoning model"
            prop = Proposal(text, op, why, reasoning_calls=calls)
        else:
            alt = apply_constraints(parent.text, facts, diagnosis) if op == "constraints" else \
                apply_format(parent.text, facts)
            prop = Proposal(alt.text, alt.operator, f"{op}: reasoning model reply unusable ({raw[:120]!r}); "
                            f"fell back to {alt.operator}: {alt.reasoning}", fallback=True, reasoning_calls=calls)
    else:
        prop = apply_format(parent.text, facts)
    n = int(params.get("n_demos", 0))
    demos = choose_demos(train, n, int(params.get("demo_seed", 0)), facts) if n else parent.demos
    cue = {"none": "", "answer": "Answer:"}[params.get("answer_cue", "none")]
    cand = parent.with_(text=prop.text, instruction_role=params.get("instruction_role", parent.instruction_role),
                        answer_cue=cue, demos=demos, demo_style=params.get("demo_style", parent.demo_style))
    return cand, prop
