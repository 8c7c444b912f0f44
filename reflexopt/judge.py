"""LLM judge: a rubric plus input, output and reference -> a structured verdict normalised to 0..1.

A verdict that does not parse is retried with a reminder, then recorded as a judge error (value None) and
counted, never turned into a middle score.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .data import Case
from .errors import RubricError
from .metrics import Score
from .models import ModelClient
from .prompts import inert, meta_prompt
from .yamlfile import load_yaml

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?", re.S)
_SCALE = re.compile(r"(?:score|rate|grade)[^\n]{0,60}?\b(\d{1,2})\s*(?:-|–|to)\s*(\d{1,3})\b", re.I)


@dataclass(frozen=True)
class Rubric:
    name: str
    text: str
    low: int = 1
    high: int = 5
    pass_score: float = 4

    def normalise(self, raw: float) -> float:
        return (raw - self.low) / (self.high - self.low)


def rubric_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "rubrics", here.parent / "rubrics"]


def available_rubrics() -> list[str]:
    names: set[str] = set()
    for d in rubric_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.md"))
    return sorted(names)


def load_rubric(ref: str) -> Rubric:
    """A rubric from a file path, or by name from the shipped `rubrics/`."""
    path = Path(ref)
    if not path.is_file():
        found = [d / f"{ref}.md" for d in rubric_dirs() if (d / f"{ref}.md").is_file()]
        if not found:
            raise RubricError(ref, "no such rubric file or shipped rubric name",
                              fix=f"pass a markdown file or one of: {', '.join(available_rubrics())}")
        path = found[0]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RubricError(path, "bytes are not UTF-8", fix="re-save the rubric as UTF-8") from None
    meta: dict[str, object] = {}
    m = _FRONT.match(text)
    if m:
        try:
            meta = load_yaml(m.group(1)) or {}
        except yaml.YAMLError:
            raise RubricError(path, "front matter is not valid YAML", line=1, fix="fix the --- block") from None
        if not isinstance(meta, dict):
            raise RubricError(path, "front matter must be a mapping", line=1, fix="use `key: value` lines, "
                              "such as `scale: [1, 5]` and `pass: 4`")
        text = text[m.end():]
    if not text.strip():
        raise RubricError(path, "the rubric is empty", fix="describe what a good answer is and how to score it")
    low, high = 1, 5
    if "scale" in meta:
        try:
            low, high = (int(x) for x in meta["scale"])  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            raise RubricError(path, "scale must be [low, high]", line=1, fix="write `scale: [1, 5]`") from None
    elif sm := _SCALE.search(text):
        low, high = int(sm.group(1)), int(sm.group(2))
    if high <= low:
        raise RubricError(path, f"scale {low}..{high} is empty", fix="use a scale such as [1, 5]")
    default_pass = high - (high - low) * 0.25
    raw_pass = meta.get("pass", default_pass)
    if isinstance(raw_pass, bool) or not isinstance(raw_pass, (int, float)) or not low <= raw_pass <= high:
        raise RubricError(path, f"pass must be a number from {low} to {high}, got {raw_pass!r}", line=1,
                          fix=f"write `pass: {default_pass:g}` (the lowest passing score)")
    pass_score = float(raw_pass)
    return Rubric(name=path.stem, text=text.strip(), low=low, high=high, pass_score=pass_score)


def _fenced(text: str) -> str:
    """Graded text with the judge prompt's own delimiters made inert (`</response>` becomes `&lt;/response`): a
    response that closes its block and writes a forged task or verdict after it stays inside the block."""
    return inert(text, "input", "response", "reference")


def _json_objects(text: str) -> list[dict[str, object]]:
    """Every top-level JSON object in the text, left to right."""
    dec = json.JSONDecoder()
    out: list[dict[str, object]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = dec.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            out.append(obj)
        pos = text.find("{", end)
    return out


def parse_verdict(text: str, rubric: Rubric) -> tuple[float, str, str] | None:
    """(raw score, reasoning, category) or None when the reply is not a usable verdict.

    The verdict is the judge's own answer, which the judge prompt asks for last: the *last* JSON object with a
    score (a judge that quotes the graded response first may quote a score the response planted), else the
    last `score: N` in the text."""
    from json_repair import repair_json

    verdicts = [o for o in _json_objects(text) if "score" in o]
    if not verdicts:
        tail = text[text.rfind("{"):] if "{" in text else ""
        try:
            repaired = json.loads(repair_json(tail)) if tail else None
        except (ValueError, RecursionError):
            repaired = None
        if isinstance(repaired, dict) and "score" in repaired:
            verdicts = [repaired]
    score: object = None
    reasoning, category = "", ""
    if verdicts:
        obj = verdicts[-1]
        score = obj.get("score")
        reasoning = str(obj.get("reasoning", ""))
        category = str(obj.get("failure_category", obj.get("category", "")) or "")
    else:
        found = re.findall(r'"?score"?\s*[:=]\s*(-?\d+(?:\.\d+)?)', text, re.I)
        score = found[-1] if found else None
    if isinstance(score, bool):
        return None
    try:
        value = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if not rubric.low <= value <= rubric.high:
        return None
    return value, reasoning.strip(), category.strip().lower()


class JudgeScorer:
    """Scores outputs by asking a judge model to apply a rubric (temperature 0)."""

    kind = "judge"

    def __init__(self, client: ModelClient, rubric: Rubric, *, parse_retries: int = 2) -> None:
        self.client = client
        self.rubric = rubric
        self.parse_retries = parse_retries
        self.name = f"judge {client.spec.id} / {rubric.name}"
        self._structured: bool | None = None

    def describe(self) -> str:
        r = self.rubric
        return f"LLM judge {self.client.spec.id} with rubric {r.name} (scale {r.low}-{r.high})"

    def messages(self, case: Case, output: str) -> list[dict[str, str]]:
        ref = f"\n# Reference answer\n\n<reference>\n{_fenced(case.ideal)}\n</reference>\n" if case.ideal else ""
        user = meta_prompt("judge", rubric=self.rubric.text, input=_fenced(case.input_text), output=_fenced(output),
                           reference_block=ref, low=self.rubric.low, high=self.rubric.high)
        return [{"role": "system", "content": meta_prompt("judge_system").strip()}, {"role": "user", "content": user}]

    def response_format(self) -> dict[str, Any] | None:
        """The verdict's JSON schema, when the judge's provider supports structured output: the verdict then
        comes from a constrained field, not from text that may quote the graded response."""
        if self._structured is None:
            self._structured = self.client.supports_json_schema()
        if not self._structured:
            return None
        r = self.rubric
        schema = {"type": "object", "additionalProperties": False, "required": ["reasoning", "score",
                                                                                "failure_category"],
                  "properties": {"reasoning": {"type": "string"},
                                 "score": {"type": "integer", "minimum": r.low, "maximum": r.high},
                                 "failure_category": {"type": "string"}}}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}

    async def score(self, case: Case, output: str, *, sample: int = 0) -> Score:
        messages = self.messages(case, output)
        last_error = "no reply"
        calls = 0
        fmt = self.response_format()
        for attempt in range(self.parse_retries + 1):
            res = await self.client.complete(messages, sample=sample, temperature=0.0,
                                             max_tokens=self.client.cap(512), response_format=fmt)
            calls += 0 if res.cached or res.budget_exhausted else 1
            if not res.ok:
                return Score(None, None, error=f"judge call failed: {res.error}", calls=calls,
                             budget_exhausted=res.budget_exhausted)
            verdict = parse_verdict(res.text, self.rubric)
            if verdict is not None:
                raw, reasoning, category = verdict
                passed = raw >= self.rubric.pass_score
                cat = None if passed else (category if category not in ("", "none") else "unspecified")
                return Score(self.rubric.normalise(raw), passed, reasoning, cat, raw=raw, calls=calls)
            last_error = f"unparseable verdict: {res.text[:200]!r}"
            if attempt < self.parse_retries:
                messages = [*messages, {"role": "assistant", "content": res.text},
                            {"role": "user", "content": "That was not the JSON object asked for. Reply with only "
                             f'{{"reasoning": "...", "score": <integer {self.rubric.low}-{self.rubric.high}>, '
                             '"failure_category": "..."}'}]
        return Score(None, None, error=f"judge error: {last_error}", calls=calls)
