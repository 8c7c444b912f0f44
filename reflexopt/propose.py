"""Rewrite operators: turn a parent prompt into a candidate, recording the operator that ran and why.

LLM operators (fix, restructure, constraints, compress, merge, and on free text induce: an instruction worked
out from train inputs and their references) ask the reasoning model. The others need no LLM and always produce
something, so a weak reasoning model still gets help: a task instruction built from the task facts (several
phrasings), few-shot demos (how many, which, label balance, order, turns or inline), an answer cue (optionally
repeating the allowed labels), an output-format spec, and structure (instruction as system or user message). An
LLM rewrite whose reply is unusable falls back to a no-LLM operator, and the candidate is recorded under the
operator that actually ran. Each trial changes one thing, so the lineage of the best prompt explains the result
step by step. The operator table is in operators.py.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .data import Case
from .diagnose import Diagnosis, format_cases, general_fixes
from .evaluate import CaseResult
from .models import ModelClient
from .operators import BY_NAME, CUES, LLM_OPERATORS, N_PHRASINGS
from .prompt import Demo, Prompt
from .prompts import inert, meta_prompt
from .workload import TaskFacts

MAX_DEMO_CHARS = 6000
@dataclass(frozen=True)
class Proposal:
    text: str
    operator: str  # the operator that actually ran
    reasoning: str
    fallback: bool = False  # an LLM operator was asked and its reply was unusable
    reasoning_calls: int = 0


def _or_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


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


# Task instructions built from the facts alone (LM-BFF / APE style templates that name the label set); small
# models follow an explicit label list far better than a vague request. The last two are input-first
# templates (LM-BFF's "<input> It was [label]." form): the input comes first and the question about it last,
# all in one user message, where a small model's attention to the end of the prompt helps rather than hurts.
# Each says "the label", never "one word": labels may be several words ("not ironic"). On the embedded model the
# closing "Answer with one word: the label." of the fifth collapsed onto one label on customer_reviews (val 0.483
# on dev seeds 0-2); "Answer with the label only." scored 0.617, 0.700, 0.700 (scripts/results/dev_search_smollm2.md).
PHRASINGS: tuple[str, ...] = (
    "Classify the {kind} into one of these categories: {labels}.\nAnswer with the category name only.",
    "Read the {kind} and choose the label that fits it best.\nLabels: {labels}\nReply with one label and nothing "
    "else.",
    "Which of these labels describes the {kind}: {labels_or}? Answer with just the label.",
    "You are an expert annotator. Label each {kind} as {labels_or}. Output only the label, with no explanation.",
    "{Kind}: {{input}}\n\nIs this {kind} {labels_or}? Answer with the label only.",
    "{{input}}\n\nQuestion: which label fits the {kind} above ({labels})?\nAnswer with the label only.",
)
TEMPLATES = frozenset(i for i, p in enumerate(PHRASINGS) if "{{input}}" in p)
assert len(PHRASINGS) == N_PHRASINGS


def instruction_from_facts(facts: TaskFacts, phrasing: int) -> str:
    template = PHRASINGS[phrasing % len(PHRASINGS)]
    return template.format(kind=facts.kind, Kind=facts.kind.capitalize(), labels=", ".join(facts.labels),
                           labels_or=_or_list(facts.labels))


def _place(parent: Prompt, new: str, keep_parent: bool) -> tuple[str, str]:
    """A new instruction below the parent's text (when asked, and always when that text holds placeholders: they
    carry the input) or in its place; and how, for the proposal's reasoning."""
    if keep_parent or parent.placeholders:
        return f"{parent.text.rstrip()}\n\n{new}\n", "added below the parent's text"
    return new + "\n", "replacing the parent's text"


def apply_instruct(parent: Prompt, facts: TaskFacts, phrasing: int, keep_parent: bool) -> Proposal:
    """A fresh instruction from the task facts; the parent's text is kept above it when asked, and always when
    it holds placeholders (they carry the input). An input-first template replaces the text (it carries the
    input itself); it is not used on a parent whose own placeholders carry the input."""
    k = phrasing % len(PHRASINGS)
    if k in TEMPLATES and parent.placeholders:
        k = k % 4
    new = instruction_from_facts(facts, k)
    if k in TEMPLATES:
        return Proposal(new + "\n", "instruct", f"input-first template from the facts (phrasing {k}): the "
                        f"{facts.kind} comes first, then the question with the labels {', '.join(facts.labels)}")
    text, how = _place(parent, new, keep_parent)
    return Proposal(text, "instruct", f"task instruction from the facts (phrasing {k}, "
                    f"{how}): labels {', '.join(facts.labels)}; input kind '{facts.kind}'")


# Free-text task instructions from what the references do with their input (TaskFacts.form), for a vague
# starting prompt that never says what to write: the form, the length in sentences and words. The phrasing knob
# picks one; the parent's text is kept above it or replaced, as for a label task.
FREE_PHRASINGS: dict[str, tuple[str, ...]] = {
    "condense": ("Summarize the {kind} in {n} sentence{s}, about {w} words.",
                 "Write a short summary of the {kind}: {n} sentence{s}, about {w} words, with its main points only.",
                 "Read the {kind}, then state its main points in {n} sentence{s} (about {w} words)."),
    "rewrite": ("Rewrite the {kind} in about {w} words.",
                "Rewrite the {kind}, keeping most of its own words; reply with the rewritten text only.",
                "Give the {kind} back rewritten, in {n} sentence{s} of about {w} words, with no preamble."),
}


def apply_free_instruct(parent: Prompt, facts: TaskFacts, phrasing: int, keep_parent: bool) -> Proposal:
    """A free-text task instruction from the references' form (FREE_PHRASINGS), kept below the parent's text when
    asked, and always when that text holds placeholders (they carry the input)."""
    options = FREE_PHRASINGS[facts.form]
    k = phrasing % len(options)
    n = facts.sentences or 1
    new = options[k].format(kind=facts.kind, n=n, s="" if n == 1 else "s", w=facts.words or 20)
    text, how = _place(parent, new, keep_parent)
    return Proposal(text, "instruct", f"task instruction from the references' form ({facts.form}: {n} sentence(s), "
                    f"about {facts.words} words; phrasing {k}, {how})")


def answer_cue(name: str, facts: TaskFacts) -> str:
    """The text appended to the last user message. `options` repeats the allowed labels right before the
    answer: small models weigh the end of the prompt most."""
    if name == "none":
        return ""
    if name == "options" and facts.categorical:
        return f"Options: {', '.join(facts.labels)}\nAnswer:"
    return {"answer": "Answer:", "label": "Label:", "category": "Category:"}.get(name, "Answer:")


def choose_demos(train: Sequence[Case], k: int, seed: int, facts: TaskFacts, *, pick: str = "balanced",
                 order: str = "cycle") -> tuple[Demo, ...]:
    """k demos from train, seeded: `balanced` takes labels round-robin (categorical), `prior` round-robin too
    but each label only as often as its share of train gives it (prior_quota), `random` follows the data's own
    label mix by chance; `order` keeps the pick order (labels alternate), shuffles, or groups by label.
    The total length is bounded."""
    if k <= 0:
        return ()
    rng = random.Random(seed)
    pool = [c for c in train if c.ideal]
    if facts.categorical and pick in ("balanced", "prior"):
        by: dict[str, list[Case]] = defaultdict(list)
        for c in pool:
            by[c.ideal or ""].append(c)
        for v in by.values():
            rng.shuffle(v)
        labs = sorted(by)
        quota = prior_quota({lab: len(v) for lab, v in by.items()}, k) if pick == "prior" else {}
        rng.shuffle(labs)
        picked: list[Case] = []
        taken: dict[str, int] = defaultdict(int)
        while len(picked) < k and any(by[lab] and taken[lab] < quota.get(lab, k) for lab in labs):
            for lab in labs:
                if by[lab] and len(picked) < k and taken[lab] < quota.get(lab, k):
                    picked.append(by[lab].pop())
                    taken[lab] += 1
    else:
        picked = rng.sample(pool, min(k, len(pool)))
    if order == "shuffled":
        rng.shuffle(picked)
    elif order == "grouped":
        picked.sort(key=lambda c: c.ideal or "")
    demos: list[Demo] = []
    total = 0
    for c in picked:
        size = len(c.input_text) + len(c.ideal or "")
        if demos and total + size > MAX_DEMO_CHARS:
            break
        demos.append(Demo(c.input_text, c.ideal or ""))
        total += size
    return tuple(demos)


def prior_quota(counts: Mapping[str, int], k: int) -> dict[str, int]:
    """How many of k demos each label gets in proportion to its count (largest remainder; every label at least
    once while k allows): a demo set that carries the labels' prior, which a model that cannot tell the cases
    apart then follows (on an imbalanced set, towards the majority label a constant answer scores)."""
    total = sum(counts.values())
    labs = sorted(counts)
    if not total or k <= 0:
        return {lab: 0 for lab in labs}
    share = {lab: k * counts[lab] / total for lab in labs}
    q = {lab: max(1 if k >= len(labs) else 0, int(share[lab])) for lab in labs}
    while sum(q.values()) < k:
        q[max(labs, key=lambda lab: (share[lab] - q[lab], counts[lab], lab))] += 1
    while sum(q.values()) > k:
        q[max((lab for lab in labs if q[lab] > 1), key=lambda lab: (q[lab] - share[lab], lab))] -= 1
    return q


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


# a fix that points the model at the references ("use the value from the reference answer") asks for what it
# never sees; "the correct answer", "the expected output format" or "the reference text below" (a prompt's own
# input) are ordinary instructions
UNSEEN = re.compile(r"\b(?:reference|ideal|gold)\s+(?:answer|output|response|summary)s?\b"
                    r"|\bexpected\s+answers?\b|\bground[\s-]truth\b", re.I)


def points_at_references(text: str, parent: str) -> bool:
    """Does `text` send the model to the references (which it never sees), where its parent did not?"""
    return bool(UNSEEN.search(text)) and not UNSEEN.search(parent)


def plain_addition(text: str, parent: str) -> bool:
    """Can text the reasoning model wrote go into the prompt as it is (an amendment, an induced instruction)? Not
    already in the parent, no tags or placeholders of its own, and no pointer to the references."""
    return (text.lower() not in parent.lower() and "<" not in text and not re.search(r"\{[A-Za-z_]\w*\}", text)
            and not points_at_references(text, parent))


REDRAW_TEMPERATURE = 0.7


INDUCE_EXAMPLES = 5


def induction_examples(train: Sequence[Case], draw: str) -> str:
    """Up to INDUCE_EXAMPLES train inputs with their references, drawn by `draw` (seeded), for `induce`. The
    meta-prompt's own tags in them are made inert."""
    pool = [c for c in train if c.ideal]
    picked = random.Random(draw).sample(pool, min(INDUCE_EXAMPLES, len(pool)))
    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[:n].rstrip() + " [... cut here for this page]"

    text = "\n\n".join(f"## Example {i}\nInput:\n{cut(c.input_text, 700)}\n\nOutput:\n{cut(c.ideal or '', 500)}"
                       for i, c in enumerate(picked, 1))
    return inert(text, "instruction")


async def llm_induce(reasoner: ModelClient, parent: Prompt, facts: TaskFacts, examples: str,
                     sample: int = 0) -> tuple[str | None, str, int]:
    """(the induced instruction or None when unusable, raw reply, paid calls). The request shows the examples
    alone: shown the current prompt in a block to rewrite, a mid-size model copies that block back, and asked
    APE's "I gave a friend an instruction... what was it?", Qwen2.5-Coder-1.5B described the request instead."""
    general = general_fixes(not facts.categorical)
    res = await reasoner.complete([{"role": "user", "content": meta_prompt("propose_induce", examples=examples,
                                                                          facts=facts.as_text(), general=general)}],
                                  sample=sample, temperature=REDRAW_TEMPERATURE if sample else 0.0,
                                  max_tokens=reasoner.cap(256))
    calls = 0 if res.cached or res.budget_exhausted else 1
    if not res.ok:
        return None, res.error or "", calls
    text = induced(res.text)
    usable = 8 <= len(text) <= 1500 and plain_addition(text, parent.text) and not ECHO.search(text)
    return (text if usable else None), res.text, calls


# a reply that describes the question instead of answering it ("Your task is to write an instruction that
# describes these input-output pairs"), in the request's own words; an instruction that mentions an instruction
# or examples of its own ("if the message gives an instruction, ...") is an answer
ECHO = re.compile(r"input-output|these examples|the examples (?:above|below|given|shown)|write (?:an|the) "
                  r"instruction|the instruction (?:that|which|would)|outputs like these|a writer", re.I)


def induced(reply: str) -> str:
    """The instruction in an induce reply (its last <instruction> block); '' when the reply has none."""
    found = re.findall(r"<instruction>\s*(.*?)\s*</instruction>", reply, re.S | re.I)
    return found[-1].strip() if found else ""


async def llm_rewrite(op: str, reasoner: ModelClient, parent: Prompt, facts: TaskFacts, diagnosis: Diagnosis,
                      failing: Sequence[CaseResult], other: Prompt | None = None,
                      sample: int = 0) -> tuple[str | None, str, int]:
    """(new text or None, raw reply, paid calls). `sample` > 0: the same rewrite asked again, as another draw
    at temperature 0.7 (the first ask, at 0, would come back from the cache unchanged)."""
    # on free text a rewrite is asked for general fixes, as the diagnosis is (a label task's request is unchanged)
    values: dict[str, Any] = dict(prompt=parent.text.strip(), facts=facts.as_text(), diagnosis=diagnosis.as_text(),
                                  cases=format_cases(failing, limit=4), general=general_fixes(not facts.categorical))
    if op == "merge":
        values["other"] = (other or parent).text.strip()
    res = await reasoner.complete([{"role": "user", "content": meta_prompt(f"propose_{op}", **values)}],
                                  sample=sample, temperature=REDRAW_TEMPERATURE if sample else 0.0,
                                  max_tokens=reasoner.cap(max(512, 2 * len(parent.text) // 3)))
    calls = 0 if res.cached or res.budget_exhausted else 1
    if not res.ok:
        return None, res.error or "", calls
    text = extract_prompt(res.text, parent)
    if text is not None and not facts.categorical and points_at_references(text, parent.text):
        text = None  # on free text the whole rewrite is checked like an amendment (a label names no reference)
    return text, res.text, calls


AMENDS = ("fix", "constraints", "restructure")  # rewrites whose diagnosis can also be applied as added sentences


async def llm_amend(reasoner: ModelClient, parent: Prompt, facts: TaskFacts, diagnosis: Diagnosis,
                    failing: Sequence[CaseResult], sample: int = 0) -> tuple[str | None, str, int]:
    """(the sentences to add, or None when unusable; raw reply; paid calls): the smaller request made when a
    whole rewrite came back unusable."""
    values = dict(prompt=parent.text.strip(), facts=facts.as_text(), diagnosis=diagnosis.as_text(),
                  cases=format_cases(failing, limit=4), general=general_fixes(True))
    res = await reasoner.complete([{"role": "user", "content": meta_prompt("propose_amend", **values)}],
                                  sample=sample, temperature=REDRAW_TEMPERATURE if sample else 0.0,
                                  max_tokens=reasoner.cap(160))
    calls = 0 if res.cached or res.budget_exhausted else 1
    if not res.ok:
        return None, res.error or "", calls
    m = re.findall(r"<add>\s*(.*?)\s*</add>", res.text, re.S | re.I)
    added = " ".join((m[-1] if m else "").split())
    usable = (12 <= len(added) <= 600 and plain_addition(added, parent.text)
              and "sentences to add" not in added.lower())
    return (added if usable else None), res.text, calls


def _no_llm(op: str, params: dict[str, Any], parent: Prompt, train: Sequence[Case], facts: TaskFacts,
            diagnosis: Diagnosis) -> tuple[Prompt, Proposal]:
    """Apply one operator that needs no LLM."""
    if op == "instruct" and (facts.categorical or facts.form in FREE_PHRASINGS):
        build = apply_instruct if facts.categorical else apply_free_instruct
        prop = build(parent, facts, int(params.get("phrasing", 0)), bool(params.get("keep_parent", False)))
        return parent.with_(text=prop.text), prop
    if op == "demos":
        n = int(params.get("n_demos", 0))
        pick, order = str(params.get("demo_pick", "balanced")), str(params.get("demo_order", "cycle"))
        demos = choose_demos(train, n, int(params.get("demo_seed", 0)), facts, pick=pick, order=order)
        style = params.get("demo_style", parent.demo_style)
        labs = ", ".join(sorted({d.output for d in demos})) if facts.categorical else ""
        how = "chat turns" if style == "turns" else "examples inline"
        why = (f"{len(demos)} demos from train ({pick} pick, {order} order, seed {params.get('demo_seed', 0)}) as "
               f"{how}" + (f"; labels shown: {labs}" if labs else ""))
        return parent.with_(demos=demos, demo_style=style), Proposal(parent.text, "demos", why)
    if op == "cue" and facts.categorical:
        cue = answer_cue(str(params.get("cue", "answer")), facts)
        why = f"answer cue {cue!r} after the input" if cue else "no answer cue"
        return parent.with_(answer_cue=cue), Proposal(parent.text, "cue", why)
    if op == "structure":
        role = params.get("instruction_role", parent.instruction_role)
        style = params.get("demo_style", parent.demo_style)
        why = f"instruction as the {role} message" + (f"; demos as {style}" if parent.demos else "")
        return parent.with_(instruction_role=role, demo_style=style), Proposal(parent.text, "structure", why)
    if op == "constraints":
        prop = apply_constraints(parent.text, facts, diagnosis)
        return parent.with_(text=prop.text), prop
    prop = apply_format(parent.text, facts)
    return parent.with_(text=prop.text), prop


def vary(params: dict[str, Any], attempt: int, parent: Prompt) -> dict[str, Any]:
    """Other settings for the same no-LLM operator, for when the first ones rebuild a prompt the pool already
    has (TPE often re-suggests the parent's own setting): the next phrasing, cue or demo seed, the other role."""
    op, p = params["operator"], dict(params)
    if op == "instruct":
        p["phrasing"] = int(p.get("phrasing", 0)) + attempt
        p["keep_parent"] = bool(p.get("keep_parent", False)) ^ (attempt % 2 == 1)
    elif op == "cue":
        p["cue"] = CUES[(CUES.index(str(p.get("cue", "none"))) + attempt) % len(CUES)]
    elif op == "structure":
        roles = ("system", "user")
        p["instruction_role"] = roles[(roles.index(parent.instruction_role) + 1) % 2]
        if attempt > 1:
            p["demo_style"] = "inline" if parent.demo_style == "turns" else "turns"
    elif op == "demos":
        p["demo_seed"] = int(p.get("demo_seed", 0)) + 10 * attempt
    return p


def fallback_operator(facts: TaskFacts) -> str:
    """The no-LLM operator that stands in for an unusable LLM rewrite."""
    return "instruct" if facts.categorical else "format"


async def propose(params: dict[str, Any], parent: Prompt, *, train: Sequence[Case], facts: TaskFacts,
                  reasoner: ModelClient | None, diagnosis: Diagnosis, failing: Sequence[CaseResult],
                  other: Prompt | None, sample: int = 0) -> tuple[Prompt, Proposal]:
    """Apply the trial's operator (params["operator"]) with its settings to the parent; `sample` counts earlier
    asks of the same LLM rewrite of this parent (each is another draw)."""
    op = params["operator"]
    if op not in BY_NAME:
        raise ValueError(f"unknown operator {op!r}")
    if op not in LLM_OPERATORS or reasoner is None:
        return _no_llm(op, params, parent, train, facts, diagnosis)
    if op == "induce":
        examples = induction_examples(train, f"{params.get('phrasing', 0)}-{sample}")
        found, raw, calls = await llm_induce(reasoner, parent, facts, examples, sample)
        if found is not None:
            text, how = _place(parent, found, False)
            why = f"instruction induced from {examples.count('## Example')} train examples ({how}): {found!r}"
            return parent.with_(text=text), Proposal(text, op, why, reasoning_calls=calls)
    else:
        rewritten, raw, calls = await llm_rewrite(op, reasoner, parent, facts, diagnosis, failing, other, sample)
        if rewritten is not None:
            why = diagnosis.as_text() if op in ("fix", "constraints") else f"{op} by the reasoning model"
            return parent.with_(text=rewritten), Proposal(rewritten, op, why, reasoning_calls=calls)
    if op in AMENDS and diagnosis.categories and not facts.categorical:
        # a mid-size model that diagnoses well often cannot hand back a whole rewrite (it copies the prompt, or
        # echoes the request); it may still write the sentences that fix the problem: a usable diagnosis is
        # not wasted on a fallback. On free text only: a label task's fallback (a task instruction naming the
        # labels) is already strong
        added, raw2, more = await llm_amend(reasoner, parent, facts, diagnosis, failing, sample)
        calls += more
        if added is not None:
            text = parent.text.rstrip() + "\n\n" + added + "\n"
            why = f"{op}: the whole rewrite was unusable; amended with {added!r} ({diagnosis.as_text()})"
            return parent.with_(text=text), Proposal(text, op, why, reasoning_calls=calls)
        raw = f"{raw[:60]} | amend: {raw2[:60]}"
    cand, alt = _no_llm(fallback_operator(facts), params, parent, train, facts, diagnosis)
    return cand, Proposal(alt.text, alt.operator, f"{op}: reasoning model reply unusable ({raw[:120]!r}); "
                          f"fell back to {alt.operator}: {alt.reasoning}", fallback=True, reasoning_calls=calls)
