"""Failure analysis: the reasoning model reads failing train cases and returns structured categories.

Weak models return junk; the reply is parsed defensively and, when nothing usable comes back, the diagnosis
falls back to the scorer's own failure categories (recorded as such).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .evaluate import CaseResult
from .models import ModelClient
from .prompt import Prompt
from .prompts import inert, meta_prompt


@dataclass(frozen=True)
class FailureCategory:
    name: str
    root_cause: str = ""
    fix: str = ""
    cases: int = 0


@dataclass(frozen=True)
class Diagnosis:
    categories: tuple[FailureCategory, ...] = field(default=())
    source: str = "none"  # model | fallback | none
    raw: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.categories)

    def as_text(self) -> str:
        if not self.categories:
            return "(no diagnosis available)"
        return "\n".join(f"- {c.name}: {c.root_cause} Fix: {c.fix}".strip() for c in self.categories)


def format_cases(results: Sequence[CaseResult], limit: int = 6, width: int = 600) -> str:
    """Failing cases for a reasoning meta-prompt. Their text is data: a `<prompt>` tag in it is made inert, so a
    row or an output cannot pass itself off as the prompt the reply is read from."""
    blocks = []
    for i, r in enumerate(results[:limit], 1):
        lines = [f"## Case {i}", f"Input: {r.input[:width]}", f"Output: {r.output[:width] or '(empty)'}"]
        if r.ideal is not None:
            lines.append(f"Expected: {r.ideal[:width]}")
        if r.reasoning:
            lines.append(f"Grader: {r.reasoning[:300]}")
        if r.trace:  # a pipeline's own steps: which step went wrong is often visible here
            lines.append(f"Steps: {json.dumps(r.trace, ensure_ascii=False, default=str)[:width]}")
        blocks.append(inert("\n".join(lines), "prompt"))
    return "\n\n".join(blocks) if blocks else "(none)"


def _echoes_instructions(*parts: str) -> bool:
    """Weak models copy phrases of the meta-prompt back; such 'categories' carry no information."""
    template = meta_prompt("diagnose").lower()
    return any(p and (p.lower().strip(" .") in template) for p in parts)


def parse_diagnosis(text: str) -> tuple[FailureCategory, ...]:
    from json_repair import repair_json

    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return ()
    try:
        obj = json.loads(repair_json(m.group(0)))
    except ValueError:
        return ()
    cats = obj.get("categories") if isinstance(obj, dict) else None
    if not isinstance(cats, list):
        return ()
    out = []
    for c in cats[:6]:
        if not isinstance(c, dict):
            continue
        name = str(c.get("name") or "").strip()
        cause = str(c.get("root_cause") or "").strip()
        fix = str(c.get("fix") or "").strip()
        if not name or not (cause or fix) or len(name) > 120 or _echoes_instructions(name, cause, fix):
            continue
        try:
            n = int(c.get("cases") or 0)
        except (TypeError, ValueError):
            n = 0
        out.append(FailureCategory(name[:120], cause[:500], fix[:500], n))
    return tuple(out)


def fallback(results: Sequence[CaseResult]) -> Diagnosis:
    counts = Counter(r.category or "wrong output" for r in results if r.passed is False)
    cats = tuple(FailureCategory(name, "reported by the scorer", "", n) for name, n in counts.most_common(4))
    return Diagnosis(cats, "fallback" if cats else "none")


def general_fixes(free_text: bool) -> str:
    """The request for fixes that hold for every input (prompts/general_fixes.md), with its leading space, to
    append to a meta-prompt's sentence; '' on a label task, whose meta-prompts stay as they are."""
    return " " + meta_prompt("general_fixes").strip() if free_text else ""


async def diagnose(reasoner: ModelClient, prompt: Prompt, failing: Sequence[CaseResult], *,
                   free_text: bool = False) -> Diagnosis:
    """`free_text`: the references are free text, so the fixes are asked to be general (prompts/
    general_fixes.md). Shown each failing case's reference, the reasoner tends to quote it into the fix
    ("state the $1.5M impact from the reference answer"): a fix the model can never apply, since it never sees
    the references, and that fits one case at best. A label task's reference is a label, which a fix may name."""
    if not failing:
        return Diagnosis()
    text = meta_prompt("diagnose", prompt=prompt.to_markdown().strip(), cases=format_cases(failing),
                       general=general_fixes(free_text))
    res = await reasoner.complete([{"role": "user", "content": text}], temperature=0.0, max_tokens=reasoner.cap(768))
    if res.ok:
        cats = parse_diagnosis(res.text)
        if cats:
            return Diagnosis(cats, "model", res.text[:2000])
    fb = fallback(failing)
    return Diagnosis(fb.categories, fb.source, res.text[:2000] if res.ok else (res.error or ""))
