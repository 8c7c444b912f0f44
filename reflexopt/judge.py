"""LLM judge: a rubric plus input, output and reference -> a structured verdict normalised to 0..1.

The verdict is asked for with a JSON schema wherever the judge's server takes one (`ModelClient.response_formats`:
OpenAI's form, then llama.cpp's, then none); a server that refuses a form is asked the next one, once per judge.
A verdict that does not parse is retried with a reminder, then recorded as a judge error (value None) and
counted, never turned into a middle score. A verdict whose reasoning restates a rubric level far from its score
(or names no failure but fails, or says the response does not match and passes it) is flagged as a
contradiction, counted and shown, never silently trusted. Where the reasoning is what contradicts the score, the
judge gives a second opinion on a paraphrase of the request (`judge_alt`, a request of its own) and the mean of
the two scores stands: asked again in the same conversation, Qwen2.5-Coder-1.5B kept its score on all 19 such
verdicts of a dev table; asked the paraphrase, it failed 11 of the 14 wrong-answer passes among them
(scripts/results/probe_reconcile.md).

An answer that repeats its input unchanged where the reference changes it fails without a verdict (the rubric's
lowest score, category "copy of the input"): it has not made the change the task asks for, and a judge that
grades the meaning passes it (Qwen2.5-Coder-1.5B passed most active sentences given back for their passive
references). A rubric whose task may keep the input as it is says `fail_copies: false` in its front matter.
Its wider form: an answer that holds a short input (a word, a phrase) but not the reference, where the reference
changes the input, fails the same way (category "input given back"): `The word "legitimate" is a verb` for
*illegitimate*. Qwen2.5-Coder-1.5B passed 26 such answers in a dev table's runs, none of them right, and passed
every `The answer is "<input>".` it was shown (scripts/results/probe_restated.md). A task with several right
answers that may name the input beside another right one ("the opposite of hot is chilly" for *cold*) says
`fail_restatements: false` (and one with `fail_copies: false`, whose task may keep the input, gets neither rule).

Its twin: an answer that says exactly what the reference says (normalised the same way) passes without a verdict,
at the rubric's highest score. A judge can only get it wrong: Qwen2.5-Coder-1.5B failed 3 of the 4 negated
sentences SmolLM2 wrote word for word as their references, reading the input as the reference. A rubric under
which even the reference's own words may fall short says `pass_matches: false`.

How far a judge's verdicts track the reference is measured on answers whose verdict is known
(`agreement.known_answers`, asked through `ask`, past both unjudged verdicts).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .data import Case
from .errors import RubricError
from .metrics import Score, gives_input_back, matches_reference, repeats_input
from .models import ModelClient
from .prompts import inert, meta_prompt
from .yamlfile import load_yaml

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?", re.S)
_ANCHOR = re.compile(r"^\s*(?:[-*]\s*)?\**\s*(\d{1,2})\s*\**\s*(?:[—–:=.)]|-(?!\d))\s*(\S.*)$")
_SCALE = re.compile(r"(?:score|rate|grade)[^\n]{0,60}?\b(\d{1,2})\s*(?:-|–|to)\s*(\d{1,3})\b", re.I)


@dataclass(frozen=True)
class Rubric:
    name: str
    text: str
    low: int = 1
    high: int = 5
    pass_score: float = 4
    fail_copies: bool = True  # an answer that repeats its input where the reference changes it fails unjudged
    fail_restatements: bool = True  # ... and one that gives a short input back without the reference (both on)
    pass_matches: bool = True  # an answer that says exactly what the reference says passes unjudged

    def normalise(self, raw: float) -> float:
        return (raw - self.low) / (self.high - self.low)

    @cached_property
    def levels(self) -> dict[int, str]:
        """The rubric's own description of each score (`5 — Covers every key point ...`), where it has them."""
        out: dict[int, str] = {}
        current: int | None = None
        for line in self.text.splitlines():
            m = _ANCHOR.match(line)
            if m and self.low <= int(m.group(1)) <= self.high and int(m.group(1)) not in out:
                current = int(m.group(1))
                out[current] = m.group(2).strip()
            elif current is not None and line.startswith((" ", "\t")) and line.strip():
                out[current] += " " + line.strip()  # an indented continuation of the level's text
            else:
                current = None
        return out


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
    flags: dict[str, bool] = {}
    for key, what in (("fail_copies", "answers that repeat the input"),
                      ("fail_restatements", "answers that give the input back without the reference"),
                      ("pass_matches", "answers that say exactly what the reference says")):
        value = meta.get(key, True)
        if not isinstance(value, bool):
            raise RubricError(path, f"{key} must be true or false, got {value!r}", line=1,
                              fix=f"write `{key}: false` to have the judge grade {what}")
        flags[key] = value
    return Rubric(name=path.stem, text=text.strip(), low=low, high=high, pass_score=pass_score, **flags)


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


_STOP = frozenset("a an the of to and or in on for with this that is are be it its as by at from has have was "
                  "e.g eg".split())
_NEG = re.compile(r"\b(?:not|no|never|none|without|lacks?|lacking|missing|fails?|failed|cannot)\b|n't\b")


def _terms(text: str) -> frozenset[str]:
    """A clause's content words, cut to 5 letters (`summary` and `summarize` meet), with negation as one term."""
    low = text.lower()
    words = {w[:5] for w in re.findall(r"[a-z0-9]+", _NEG.sub(" ", low)) if w not in _STOP}
    return frozenset(words | ({"<not>"} if _NEG.search(low) else set()))


def _clauses(text: str) -> list[frozenset[str]]:
    """A level's description cut into clauses (`,` `;` `.` `(` and "or"), each with at least two content words."""
    parts = re.split(r"[,;.:()/]|\bor\b|\bOR\b", text)
    return [t for t in (_terms(p) for p in parts) if len(t) >= 2]


# a sentence that says the response does not match, is not correct or is not the same (a negation at most two
# words before the claim), and one that concedes something ("but", "minor"): a denial with no concession
_DENIAL = re.compile(r"(?:\b(?:not|never|fails? to)|n't)\s+(?:\w+\s+){0,2}?(?:match\w*|correct\w*|right|accurate"
                     r"\w*|the same|same as|equivalent)\b", re.I)
_CONCEDES = re.compile(r"\b(?:but|however|although|though|except|while|yet|minor|slight\w*|mostly|main point|"
                       r"partly|partial\w*|essentially|otherwise)\b", re.I)


def contradiction(rubric: Rubric, raw: float, reasoning: str, category: str) -> str | None:
    """Why a verdict contradicts its score, or None: it names no failure ("none") yet scores below the pass mark
    (category_contradiction), or its reasoning contradicts the score (reasoning_contradiction)."""
    return category_contradiction(rubric, raw, category) or reasoning_contradiction(rubric, raw, reasoning)


def category_contradiction(rubric: Rubric, raw: float, category: str) -> str | None:
    """A verdict that names no failure ("none") yet scores below the pass mark: why, or None."""
    if category == "none" and raw < rubric.pass_score:
        return f"names no failure, yet scores {raw:g} (below the pass mark {rubric.pass_score:g})"
    return None


def reasoning_contradiction(rubric: Rubric, raw: float, reasoning: str) -> str | None:
    """Why a verdict's reasoning contradicts its score, or None: the reasoning restates (in one sentence, with
    the same negation) a clause of the rubric's description of a level at least two points (and 40% of the
    scale) from the score, and of no level near it; or it passes while its first sentence says, conceding
    nothing, that the response does not match or is not correct (Qwen2.5-Coder-1.5B's "The AI response does not
    match the reference answer." with a 4 of 5: 14 of 63 distinct passes in judge_next's runs, all but one of
    them wrong answers). Such a verdict gets a second opinion (JudgeScorer._score); one that only names
    no failure does not (a category left "none" says less than a reasoning does)."""
    first = re.split(r"(?<=[.!?;])\s+|\n", reasoning.strip(), maxsplit=1)[0]
    if raw >= rubric.pass_score and _DENIAL.search(first) and not _CONCEDES.search(first):
        return f"says the response is not a match ({first[:80]!r}) yet passes it with {raw:g}"
    levels = rubric.levels
    if not levels or not reasoning:
        return None
    far = max(2.0, 0.4 * (rubric.high - rubric.low))
    sentences = [_terms(x) for x in re.split(r"(?<=[.!?;])\s+|\n", reasoning) if x.strip()]
    near, hit = False, None
    for level, text in levels.items():
        for clause in _clauses(text):
            if any(clause <= sent and ("<not>" in clause) == ("<not>" in sent) for sent in sentences):
                if abs(level - raw) >= far:
                    hit = hit or (level, text)
                else:
                    near = True
    if hit is None or near:
        return None
    level, text = hit
    return f"reasoning restates level {level} ({text[:80]!r}) but scores {raw:g}"


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


# the reference block's heading says what it is: as "# Reference answer", Qwen2.5-Coder-1.5B passed 17 of 20
# references (negation, passive_voice) given as answers, reading the input as the reference; so, 19 of 20
# (scripts/results/probe_judge_layout.md)
REFERENCE_HEADING = "# Reference answer (a right response: grade the response against this, not against the input)"
COPY_REASON = "repeats the input unchanged where the reference changes it (failed without asking the judge)"
RESTATE_REASON = ("gives the input back without the reference, where the reference changes it (failed without "
                  "asking the judge)")
MATCH_REASON = "says exactly what the reference says (passed without asking the judge)"


class JudgeScorer:
    """Scores outputs by asking a judge model to apply a rubric (temperature 0 unless resampled).

    `stats` counts this judge's verdicts in the run: verdicts, contradictions, parse errors (unparseable after
    the retries), and the structured form the server accepted (`schema`); `flagged` keeps the first
    contradictions with their case, score and reason."""

    kind = "judge"

    def __init__(self, client: ModelClient, rubric: Rubric, *, parse_retries: int = 2) -> None:
        self.client = client
        self.rubric = rubric
        self.parse_retries = parse_retries
        self.name = f"judge {client.spec.id} / {rubric.name}"
        self._formats: list[dict[str, Any]] | None = None
        self._settled = False  # the server has answered a request in the form asked now (or is asked for text)
        self._probes: dict[int, asyncio.Lock] = {}
        self.stats: Counter[str] = Counter()
        self.flagged: list[dict[str, Any]] = []
        self._counted: set[tuple[str, int]] = set()  # (case, output) pairs already counted: each verdict once

    def describe(self) -> str:
        r = self.rubric
        return f"LLM judge {self.client.spec.id} with rubric {r.name} (scale {r.low}-{r.high})"

    def messages(self, case: Case, output: str, *, variant: str = "judge") -> list[dict[str, str]]:
        """The judge's request; `variant="judge_alt"` is the same request paraphrased, its sections reordered
        (self-agreement asks both)."""
        ref = f"\n{REFERENCE_HEADING}\n\n<reference>\n{_fenced(case.ideal)}\n</reference>\n" if case.ideal else ""
        user = meta_prompt(variant, rubric=self.rubric.text, input=_fenced(case.input_text), output=_fenced(output),
                           reference_block=ref, low=self.rubric.low, high=self.rubric.high)
        return [{"role": "system", "content": meta_prompt("judge_system").strip()}, {"role": "user", "content": user}]

    def schema(self) -> dict[str, Any]:
        r = self.rubric
        return {"type": "object", "additionalProperties": False,
                "required": ["reasoning", "score", "failure_category"],
                "properties": {"reasoning": {"type": "string"},
                               "score": {"type": "integer", "minimum": r.low, "maximum": r.high},
                               "failure_category": {"type": "string"}}}

    def response_format(self) -> dict[str, Any] | None:
        """The structured form asked for now: the verdict then comes from a constrained field, not from text
        that may quote the graded response. None: parse the text."""
        if self._formats is None:
            self._formats = self.client.response_formats("verdict", self.schema())
        return self._formats[0] if self._formats else None

    @property
    def structured(self) -> str:
        """How verdicts are asked for: `json_schema`, `json_object+schema`, or `text` (parsed)."""
        fmt = self.response_format()
        return "text" if fmt is None else fmt["type"] + ("+schema" if "schema" in fmt else "")

    def _first(self, case: Case, output: str, sample: int, variant: str) -> bool:
        """A verdict of the run (not a self-agreement redraw) on an output not counted before: two candidates
        that give one case the same output get one verdict (the second from the cache), counted once."""
        if sample != 0 or variant != "judge":
            return False
        key = (case.id, hash(output))
        if key in self._counted:
            return False
        self._counted.add(key)
        return True

    def _refused(self, fmt: dict[str, Any], error: str) -> bool:
        """The server refused this structured form (an error naming it, such as llama-cpp-python's HTTP 500
        "Input should be 'text' or 'json_object'" for OpenAI's form, or a 422): use the next one."""
        if not re.search(r"\b422\b|response_format|json_schema|json_object|schema|grammar", error, re.I):
            return False
        if self._formats and self._formats[0] is fmt:
            self._formats.pop(0)
            self.stats["schema_refused"] += 1
        return True

    def unjudged(self, case: Case, output: str) -> Score | None:
        """The verdict this rubric gives without asking the judge (see the module's note), or None: a copy of
        the input where the reference changes it fails at the lowest score; an answer that says exactly what the
        reference says passes at the highest."""
        r = self.rubric
        if r.fail_copies and repeats_input(case.input_text, case.ideal, output):
            return Score(0.0, False, COPY_REASON, "copy of the input", raw=float(r.low))
        if r.fail_copies and r.fail_restatements and gives_input_back(case.input_text, case.ideal, output):
            return Score(0.0, False, RESTATE_REASON, "input given back", raw=float(r.low))
        if r.pass_matches and matches_reference(case.ideal, output):
            return Score(1.0, True, MATCH_REASON, None, raw=float(r.high))
        return None

    async def score(self, case: Case, output: str, *, sample: int = 0, temperature: float = 0.0,
                    variant: str = "judge") -> Score:
        """One verdict: the rubric's own where it gives one unjudged (counted as copies or matches), else the
        judge's."""
        settled = self.unjudged(case, output)
        if settled is not None:
            if self._first(case, output, sample, variant):
                self.stats["matches" if settled.passed else "copies" if settled.category == "copy of the input"
                           else "restatements"] += 1
            return settled
        return await self.ask(case, output, sample=sample, temperature=temperature, variant=variant)

    async def ask(self, case: Case, output: str, *, sample: int = 0, temperature: float = 0.0,
                  variant: str = "judge") -> Score:
        """The judge's verdict, asked whatever the answer. Until the server has answered one request in a
        structured form, requests go one at a time: a server that refuses a form refuses it once (with its
        retries), not once per case in flight."""
        if not self._settled and self.response_format() is not None:
            loop = id(asyncio.get_running_loop())
            probe = self._probes.setdefault(loop, asyncio.Lock())
            async with probe:
                if not self._settled:
                    return await self._score(case, output, sample, temperature, variant)
        return await self._score(case, output, sample, temperature, variant)

    async def _score(self, case: Case, output: str, sample: int, temperature: float, variant: str) -> Score:
        messages = self.messages(case, output, variant=variant)
        last_error = "no reply"
        calls = 0
        attempt = 0
        while attempt <= self.parse_retries:
            fmt = self.response_format()
            res = await self.client.complete(messages, sample=sample, temperature=temperature,
                                             max_tokens=self.client.cap(512), response_format=fmt)
            calls += 0 if res.cached or res.budget_exhausted else 1
            if res.ok:
                self._settled = True
            if not res.ok:
                if fmt is not None and not res.budget_exhausted and self._refused(fmt, res.error or ""):
                    continue  # the same request in the next form (a refusal is not a parse attempt)
                return Score(None, None, error=f"judge call failed: {res.error}", calls=calls,
                             budget_exhausted=res.budget_exhausted)
            verdict = parse_verdict(res.text, self.rubric)
            if verdict is not None:
                raw, reasoning, category = verdict
                said = reasoning_contradiction(self.rubric, raw, reasoning)  # asks for a second opinion
                flag = category_contradiction(self.rubric, raw, category) or said  # as `contradiction`
                first, second = raw, None
                if said and variant == "judge":
                    second = await self._score(case, output, sample, temperature, "judge_alt")
                    calls += second.calls
                    if second.raw is None:
                        second = None
                    else:  # the mean of the two opinions stands
                        raw = (raw + second.raw) / 2
                        flag = f"{flag}; a second opinion (the request paraphrased) scored {second.raw:g}, so {raw:g}"
                        reasoning += f" [second opinion, {second.raw:g}: {second.reasoning}]"
                        category = category if category not in ("", "none") else (second.category or "")
                passed = raw >= self.rubric.pass_score
                cat = None if passed else (category if category not in ("", "none") else "unspecified")
                if self._first(case, output, sample, variant):  # the run's verdicts, once each
                    self.stats["verdicts"] += 1
                    if flag:
                        self.stats["contradictions"] += 1
                        self._flag(case, raw, reasoning, flag)
                    if second is not None:
                        self.stats["second_opinions"] += 1
                        self.stats["overturned"] += passed != (first >= self.rubric.pass_score)
                return Score(self.rubric.normalise(raw), passed, reasoning, cat, raw=raw, calls=calls, flag=flag)
            last_error = f"unparseable verdict: {res.text[:200]!r}"
            if attempt < self.parse_retries:
                messages = [*messages, {"role": "assistant", "content": res.text},
                            {"role": "user", "content": "That was not the JSON object asked for. Reply with only "
                             f'{{"reasoning": "...", "score": <integer {self.rubric.low}-{self.rubric.high}>, '
                             '"failure_category": "..."}'}]
            attempt += 1
        if self._first(case, output, sample, variant):
            self.stats["parse_errors"] += 1
        return Score(None, None, error=f"judge error: {last_error}", calls=calls)

    def _flag(self, case: Case, raw: float, reasoning: str, why: str) -> None:
        if len(self.flagged) < 20:
            self.flagged.append({"case_id": case.id, "score": raw, "reasoning": reasoning[:300], "why": why})

    async def self_agreement(self, items: list[tuple[Case, str]]) -> Any:
        """How much this judge's verdicts move when asked again (agreement.SelfAgreement)."""
        from .agreement import self_agreement

        return await self_agreement(self, items)

    async def known_answers(self, cases: list[Case]) -> Any:
        """How often this judge gets answers with a known verdict right (agreement.KnownAnswers)."""
        from .agreement import known_answers

        return await known_answers(self, cases)

    def report(self, self_agreement: dict[str, Any] | None = None, *, known: dict[str, Any] | None = None,
               grades_own_answers: bool = False) -> dict[str, Any]:
        """This judge's record in a run or an eval: its self-agreement and its verdicts on known answers (as
        measured), verdicts, copies of the input failed and matches of the reference passed without a verdict,
        contradictions (with the first few), parse errors, the form verdicts were asked in, and whether it graded
        its own answers."""
        return {"self_agreement": self_agreement, "known": known, "verdicts": self.stats["verdicts"],
                "copies": self.stats["copies"], "restatements": self.stats["restatements"],
                "matches": self.stats["matches"],
                "contradictions": self.stats["contradictions"], "second_opinions": self.stats["second_opinions"],
                "overturned": self.stats["overturned"], "parse_errors": self.stats["parse_errors"],
                "structured": self.structured, "flagged": list(self.flagged), "grades_own_answers": grades_own_answers}
