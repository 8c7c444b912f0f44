"""How far a judge can be trusted: its agreement with itself, and with people.

Self-agreement: a sample of verdicts is asked again twice, at temperature 0.7, once with the judge prompt as it
is and once paraphrased with its sections reordered (`judge_alt`). Each redraw is its own request in the response
cache (another sample index), so a deterministic server cannot make the judge look noiseless by answering the
same request again. The SD of one verdict is estimated from the pairs of redraws (sqrt(mean(d^2) / 2), on the
0..1 scale); the search takes twice its standard error over val as the smallest gain it accepts.

Known answers: the judge asked about answers whose verdict is known, past the rubric's unjudged verdicts: each
sampled case's own reference (right: it should pass) and another case's reference that says something else
(wrong for this case: it should fail). Self-agreement says how much a verdict moves; this says whether it points
the right way. A judge that fails references or passes foils grades something other than what the reference
says (Qwen2.5-Coder-1.5B read negated sentences' inputs as their references), and the search would follow it.
Both are easy to get right, so three probes follow where a reference allows (`probes`): a list reference with its
items in another order (a judge that fails it grades the order, which many list tasks leave free: Qwen faulted
the animals' order on a taxonomy task while it passed every plain known answer); a near miss, the reference with
its last item or sentence swapped for another case's; and the reference padded with that item or sentence. The
last two should score below the reference: a judge that scores a near miss as high does not check what the answer
says, and one that scores a padded reference as high lets wrong additions through. Where the input is short and
the reference changes it, the input given back in a sentence (`The answer is "immature".` for *mature*) should
fail: Qwen2.5-Coder-1.5B passed all 8 such answers on two dev sets with a 5, "matches the reference exactly"
(scripts/results/probe_restated.md), so an answer about the input scores without doing the task.

Agreement with people: the judge's scores against labels the user collected for the same outputs (a column of
the dataset): Spearman's rho on the scores, Cohen's kappa on pass/fail, and the cases they disagree on most.

Copies of the input: answers that repeat their input unchanged where the reference changes it, and how many the
scorer passed. A judge that passes them grades the meaning, not the change the task asks for (an active sentence
says what its passive reference says), so a prompt that makes the model repeat the input scores without doing
the task. No calls: read from the scored cases, with any scorer. A judge's rubric fails them unjudged by default
(judge.py), so "passed" counts them for metrics and for rubrics with `fail_copies: false`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .data import Case
from .errors import DataError
from .judge import JudgeScorer, Rubric
from .metrics import changes_input, gives_input_back, normalize, repeats_input
from .stats import cohen_kappa, spearman

RESAMPLE_TEMPERATURE = 0.7


@dataclass(frozen=True)
class SelfAgreement:
    n: int  # cases whose two redraws both gave a verdict
    sd: float  # SD of one verdict on the 0..1 scale
    pass_agree: float | None  # share of those cases where the two redraws agree on pass/fail
    exact_agree: float | None  # share where they give the same score
    method: str = f"2 redraws per case at temperature {RESAMPLE_TEMPERATURE}, one with the judge prompt paraphrased"

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def text(self) -> str:
        if self.n < 2:
            return "judge self-agreement: not measured (fewer than 2 cases re-judged)"
        agree = f"; pass/fail agrees on {self.pass_agree:.0%}" if self.pass_agree is not None else ""
        return f"judge self-agreement: SD {self.sd:.3f} of one verdict (0..1, {self.n} cases re-judged){agree}"


async def self_agreement(scorer: JudgeScorer, items: Sequence[tuple[Case, str]]) -> SelfAgreement:
    """Re-judge each (case, output) twice (see the module's note) and measure how much the verdicts move. Copies
    of the input and matches of the reference, which the rubric settles unjudged, are left out: they have no
    verdict to redraw."""
    items = [(c, o) for c, o in items if scorer.unjudged(c, o) is None]

    async def redraws(case: Case, output: str) -> tuple[Any, Any]:
        return await asyncio.gather(
            scorer.score(case, output, sample=1, temperature=RESAMPLE_TEMPERATURE),
            scorer.score(case, output, sample=2, temperature=RESAMPLE_TEMPERATURE, variant="judge_alt"))

    outs = await asyncio.gather(*(redraws(c, o) for c, o in items))
    pairs = [(a, b) for a, b in outs if a.value is not None and b.value is not None]
    if len(pairs) < 2:
        return SelfAgreement(len(pairs), 0.0, None, None)
    sd = math.sqrt(sum((a.value - b.value) ** 2 for a, b in pairs) / (2 * len(pairs)))
    return SelfAgreement(len(pairs), sd, sum(a.passed == b.passed for a, b in pairs) / len(pairs),
                         sum(a.raw == b.raw for a, b in pairs) / len(pairs))


KNOWN_CASES = 5  # cases asked about: their reference and a foil, and where the reference allows, three probes
KNOWN_SAMPLE = 3  # the sample index of those requests in the response cache (the run's verdicts are 0)


@dataclass(frozen=True)
class KnownAnswers:
    n: int  # cases whose reference and foil both got a verdict
    references_passed: int
    foils_failed: int
    # the probes, where a reference allows them (`probes`), each counted when it got a verdict:
    reordered: int = 0  # a list reference with its items in another order (right if the order is free)
    reordered_passed: int = 0
    near_misses: int = 0  # the reference with its last item or sentence swapped for another case's
    near_misses_lower: int = 0  # ... scored below the reference
    padded: int = 0  # the reference with another case's item or sentence added (it says something wrong too)
    padded_lower: int = 0
    restated: int = 0  # the short input given back in a sentence, where the reference changes it (wrong)
    restated_failed: int = 0
    method: str = ("each case's own reference graded as its answer (should pass), and another case's reference "
                   "(should fail); a list reference reordered (should pass if the order is free), and the reference "
                   "with its last item or sentence swapped for another case's, or with one added (both should score "
                   "lower); a short input given back in a sentence where the reference changes it (should fail)")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "warning": self.warning(), "summary": known_summary(asdict(self))}

    def text(self) -> str:
        if not self.n:
            return "judge on known answers: not measured (no two cases with different references got verdicts)"
        return f"judge on known answers: {known_summary(asdict(self))}"

    def warning(self) -> str | None:
        """Set when more than a quarter of the known answers were judged the wrong way, when the judge failed most
        reordered lists, or when it scored most near misses, or most padded references, as high as their reference
        (at least 2 of each)."""
        out = []
        wrong = 2 * self.n - self.references_passed - self.foils_failed
        if self.n and wrong * 4 > 2 * self.n:
            out.append(f"the judge got {wrong} of {2 * self.n} known answers wrong (failed "
                       f"{self.n - self.references_passed} references, passed {self.n - self.foils_failed} other "
                       "cases' references): its scores may not track the reference on this task, and a search "
                       "follows them; try a stronger judge, a sharper rubric, or a metric")
        if self.reordered >= 2 and self.reordered_passed * 2 < self.reordered:
            out.append(f"the judge failed {self.reordered - self.reordered_passed} of {self.reordered} references "
                       "with their items in another order: if the order is free in this task, it grades the order "
                       "and a search follows it; say in the rubric that the order does not matter, or use a metric")
        if self.near_misses >= 2 and self.near_misses_lower * 2 < self.near_misses:
            out.append(f"the judge scored {self.near_misses - self.near_misses_lower} of {self.near_misses} "
                       "references with one item or sentence swapped for another case's as high as the reference: "
                       "it may not check what the answer says; try a stronger judge, a sharper rubric, or a metric")
        if self.restated >= 2 and self.restated_failed * 2 < self.restated:
            out.append(f"the judge passed {self.restated - self.restated_failed} of {self.restated} answers that only "
                       "give the input back in a sentence ('The answer is \"<input>\".') where the reference changes "
                       "it: it grades against the input, not the reference (answers that hold the input and not "
                       "the reference fail unjudged unless the rubric says `fail_restatements: false`, but answers "
                       "about the input in other words still reach it); try a stronger judge, or a metric")
        if self.padded >= 2 and self.padded_lower * 2 < self.padded:
            out.append(f"the judge scored {self.padded - self.padded_lower} of {self.padded} references with "
                       "another case's item or sentence added as high as the reference: it may pass answers that "
                       "add wrong content to a right one; say in the rubric that wrong additions count, or use a "
                       "metric")
        return "; ".join(out) or None


def known_summary(known: dict[str, Any]) -> str:
    """A judge's record on known answers in one line (a run's stored `known`, older runs' too)."""
    n = known.get("n") or 0
    if not n:
        return "not measured"
    out = f"passed {known['references_passed']} of {n} references, failed {known['foils_failed']} of {n} foils"
    if known.get("reordered"):
        out += f", passed {known['reordered_passed']} of {known['reordered']} reordered lists"
    if known.get("near_misses"):
        out += f", scored {known['near_misses_lower']} of {known['near_misses']} near misses below the reference"
    if known.get("padded"):
        out += f" and {known['padded_lower']} of {known['padded']} with a wrong part added"
    if known.get("restated"):
        out += f", failed {known['restated_failed']} of {known['restated']} answers that give the input back"
    return out


def second_opinion_text(record: dict[str, Any]) -> str:
    """` (5 given a second opinion, 3 of them turned between pass and fail)` after a judge record's
    contradictions (JudgeScorer: a verdict whose reasoning contradicts its score), '' when none was given."""
    n = record.get("second_opinions") or 0
    if not n:
        return ""
    return f" ({n} given a second opinion, {record.get('overturned', 0)} of them turned between pass and fail)"


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")


def _items(text: str) -> tuple[list[str], str] | None:
    """A reference's list items and their separator: 3 or more short parts (4 words or fewer, no sentence
    inside) separated by new lines, semicolons or commas."""
    text = text.strip().rstrip(".")
    if re.search(r"[.!?]\s", text):
        return None
    for sep, joiner in (("\n", "\n"), (";", "; "), (",", ", ")):
        parts = [re.sub(r"^(and|or)\s+", "", p.strip(), flags=re.I) for p in text.split(sep)]
        parts = [p for p in parts if p]
        bullet = re.match(r"[-*\u2022]\s+", parts[0]) if parts else None
        if bullet and all(p.startswith(bullet.group()) for p in parts):  # a bulleted list: the bullets kept
            parts = [p[bullet.end():] for p in parts]
            joiner = "\n" + bullet.group()
        if len(parts) >= 3 and all(len(p.split()) <= 4 for p in parts):
            return parts, joiner
    return None


def probes(reference: str, other: str) -> tuple[str | None, str | None, str | None]:
    """(the reference reordered, a near miss, the reference padded) for a reference and another case's (None
    where it does not allow one). A list is rotated by one item; its near miss has its last item swapped for one
    of the other's that it lacks, and its padded form that item added at the end. Prose of two or more sentences
    gets the other's first sentence in place of its last (near miss), or after it (padded)."""
    items = _items(reference)
    if items is not None:
        parts, joiner = items
        lead = joiner[1:] if joiner.startswith("\n") else ""
        turned = parts[1:] + parts[:1]
        reordered = lead + joiner.join(turned) if [normalize(p) for p in turned] != [normalize(p) for p in parts] \
            else None
        theirs = [re.sub(r"^([-*\u2022]|and|or)\s+", "", p.strip()) for p in re.split(r"[,;\n]", other.rstrip("."))]
        have = {normalize(p) for p in parts}
        swap = next((p for p in theirs if normalize(p) and normalize(p) not in have and len(p.split()) <= 4), None)
        if swap is None:
            return reordered, None, None
        return reordered, lead + joiner.join([*parts[:-1], swap]), lead + joiner.join([*parts, swap])
    sentences = _SENTENCE.split(reference.strip())
    theirs_s = _SENTENCE.split(other.strip())
    if len(sentences) >= 2 and normalize(theirs_s[0]) not in {normalize(s) for s in sentences}:
        return None, " ".join([*sentences[:-1], theirs_s[0]]), " ".join([*sentences, theirs_s[0]])
    return None, None, None


def restated(case: Case) -> str | None:
    """`The answer is "<input>".` where the scorer's restatement rule (`metrics.gives_input_back`) would call it
    a wrong answer that only gives the input back: a short input whose reference changes it and is not in that
    sentence. None otherwise. One definition for the rule and its known answer, so the warning speaks about the
    answers the rule lets through to the judge when a rubric turns it off."""
    answer = f'The answer is "{case.input_text.strip()}".'
    return answer if gives_input_back(case.input_text, case.ideal, answer) else None


def known_plan(cases: Sequence[Case], limit: int = KNOWN_CASES) -> list[tuple[Case, list[str | None]]]:
    """The answers `known_answers` asks about, per case: the first `limit` cases with a reference, each with
    [that reference, the next case's reference that says something else, the reordered probe, the near miss, the
    padded reference, the input given back] (a probe None where the case does not allow it; see `probes` and
    `restated`)."""
    pool = [(c, c.ideal) for c in cases if c.ideal and normalize(c.ideal)]
    plan: list[tuple[Case, list[str | None]]] = []
    for i, (case, ref) in enumerate(pool):
        foil = next((o for _, o in pool[i + 1:] + pool[:i] if normalize(o) != normalize(ref)), None)
        if foil is not None and len(plan) < limit:
            plan.append((case, [ref, foil, *probes(ref, foil), restated(case)]))
    return plan


def known_calls(cases: Sequence[Case], limit: int = KNOWN_CASES) -> int:
    """The judge calls `known_answers` makes on these cases (no calls to count them)."""
    return sum(sum(a is not None for a in answers) for _, answers in known_plan(cases, limit))


async def known_answers(scorer: JudgeScorer, cases: Sequence[Case], limit: int = KNOWN_CASES) -> KnownAnswers:
    """Ask the judge, at temperature 0, about the answers `known_plan` lists (see the module's note)."""
    async def asked(case: Case, answer: str | None) -> Any:
        return None if answer is None else await scorer.ask(case, answer, sample=KNOWN_SAMPLE)

    outs = await asyncio.gather(*(asyncio.gather(*(asked(c, a) for a in answers))
                                  for c, answers in known_plan(cases, limit)))
    both = [o for o in outs if o[0].passed is not None and o[1].passed is not None]
    turned = [o[2] for o in outs if o[2] is not None and o[2].passed is not None]

    def below(k: int) -> list[bool]:  # the probe in place k scored below its reference (both with a verdict)
        return [o[k].raw < o[0].raw for o in outs if o[k] is not None and o[k].raw is not None and o[0].raw is not None]

    near, padded = below(3), below(4)
    given_back = [o[5] for o in outs if o[5] is not None and o[5].passed is not None]
    return KnownAnswers(len(both), sum(bool(o[0].passed) for o in both), sum(not o[1].passed for o in both),
                        reordered=len(turned), reordered_passed=sum(bool(t.passed) for t in turned),
                        near_misses=len(near), near_misses_lower=sum(near), padded=len(padded),
                        padded_lower=sum(padded), restated=len(given_back),
                        restated_failed=sum(not g.passed for g in given_back))


_PASS = {"pass": True, "passed": True, "yes": True, "true": True, "good": True, "correct": True, "1": True,
         "fail": False, "failed": False, "no": False, "false": False, "bad": False, "incorrect": False, "0": False}


@dataclass(frozen=True)
class HumanAgreement:
    column: str
    n: int  # cases with both a human label and a judge score
    kind: str  # "pass/fail" or "scores"
    spearman: float | None
    kappa: float | None
    judge_pass_rate: float | None
    human_pass_rate: float | None
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # most apart first
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


async def judge_checks(scorer: Any, cases: Sequence[Case], results: Sequence[Any], *, sample: int,
                       human: str | None, grades_own: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A judged eval's checks: the judge's record (self-agreement on the first `sample` scored cases, known
    answers on up to KNOWN_CASES of them, verdicts, contradictions, parse errors, the form verdicts were asked
    in) and, with `human` (a column), its agreement with those labels. `sample` 0 skips both measures."""
    judge: JudgeScorer = scorer
    by_id = {c.id: c for c in cases}
    scored = [r for r in results if r.score is not None]
    first = scored[:sample]
    agreement = (await judge.self_agreement([(by_id[r.case_id], r.output) for r in first])).to_json() \
        if first else None
    known = (await judge.known_answers([by_id[r.case_id] for r in scored[:max(sample, KNOWN_CASES + 1)]])).to_json() \
        if first else None
    record = judge.report(agreement, known=known, grades_own_answers=grades_own)
    if not human:
        return record, None
    r = judge.rubric
    raws = {x.case_id: (r.low + x.score * (r.high - r.low), x.reasoning) for x in scored}
    return record, human_agreement(human, cases, raws, r, {x.case_id: x.output for x in scored}).to_json()


def human_label(value: Any, column: str, case: Case) -> float | bool | None:
    """A human label as pass/fail (bool) or a score (float); None when the row has none."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    word = str(value).strip().lower()
    if word in _PASS:
        return _PASS[word]
    try:
        return float(word)
    except ValueError:
        raise DataError(case.source, f"human label {column!r} is {value!r}: neither a number nor pass/fail",
                        line=case.line, fix="write a score, or pass/fail (true/false, yes/no, 1/0)") from None


def label_kind(labelled: Sequence[tuple[Case, float | bool]], column: str,
               rubric: Rubric | None) -> tuple[bool, bool]:
    """What a column's human labels are: (pass/fail, scores on the rubric's scale). Pass/fail: every label is
    one, or every label is 0 or 1 off the rubric's scale (a human pass is then 1); on the scale, a human pass is
    the rubric's pass mark or more; neither: scores whose pass mark is unknown. Mixed kinds are an error."""
    values = [lab for _, lab in labelled]
    on_scale = rubric is not None and all(not isinstance(v, bool) and rubric.low <= v <= rubric.high
                                          for v in values)
    bools = all(isinstance(v, bool) for v in values) or (all(v in (0.0, 1.0) for v in values) and not on_scale)
    if not bools and any(isinstance(v, bool) for v in values):
        first = next(c for c, v in labelled if isinstance(v, bool))
        raise DataError(first.source, f"human labels in {column!r} mix pass/fail and scores", line=first.line,
                        fix="use one kind in the column: scores, or pass/fail")
    return bools, on_scale


def human_agreement(column: str, cases: Sequence[Case], scored: dict[str, tuple[float, str]],
                    rubric: Rubric | None, outputs: dict[str, str] | None = None) -> HumanAgreement:
    """The judge's scores (`scored`: case id -> (raw score, reasoning)) against the human labels in `column`.

    Pass/fail labels: kappa of the judge's pass (score at or above the rubric's pass mark) against them, and rho
    of the judge's score against pass = 1. Score labels: rho against the judge's score; kappa where the labels lie
    on the rubric's scale (a human pass is the rubric's pass mark or more)."""
    labelled = [(c, lab) for c in cases if (lab := human_label(c.extra.get(column), column, c)) is not None]
    if not labelled:
        raise DataError(cases[0].source if cases else "dataset", f"no row has a human label in column {column!r}",
                        fix=f"add a {column!r} field (a score or pass/fail) to the rows a person graded")
    bools, on_scale = label_kind(labelled, column, rubric)
    both = [(c, float(lab), scored[c.id]) for c, lab in labelled if c.id in scored]
    judge_raw = [s[0] for _, _, s in both]
    human = [h for _, h, _ in both]
    pass_mark = rubric.pass_score if rubric is not None else 0.5
    judge_pass = [r >= pass_mark for r in judge_raw]
    note = ""
    human_pass: list[bool] | None = None
    if bools:
        human_pass = [h >= 0.5 for h in human]
    elif on_scale and rubric is not None:
        human_pass = [h >= rubric.pass_score for h in human]
    else:
        note = "no kappa: the human scores are not on the rubric's scale, so their pass mark is unknown"
    j_lo, j_hi = (rubric.low, rubric.high) if rubric is not None else (0.0, 1.0)
    h_lo, h_hi = ((0.0, 1.0) if bools else (j_lo, j_hi) if on_scale
                  else (min(human, default=0.0), max(human, default=1.0)))

    def gap(j: float, h: float) -> float:
        return abs((j - j_lo) / ((j_hi - j_lo) or 1) - (h - h_lo) / ((h_hi - h_lo) or 1))

    apart = sorted(both, key=lambda t: -gap(t[2][0], t[1]))
    worst = [{"case_id": c.id, "line": c.line, "judge": s[0], "human": (h >= 0.5) if bools else h,
              "reasoning": s[1][:300], "input": c.input_text[:200], "output": (outputs or {}).get(c.id, "")[:300]}
             for c, h, s in apart[:5] if gap(s[0], h) > 0]
    n = len(both)
    return HumanAgreement(
        column=column, n=n, kind="pass/fail" if bools else "scores", spearman=spearman(judge_raw, human),
        kappa=cohen_kappa(judge_pass, human_pass) if human_pass is not None else None,
        judge_pass_rate=sum(judge_pass) / n if n else None,
        human_pass_rate=sum(human_pass) / n if human_pass is not None and n else None,
        disagreements=worst, note=note)


def echo_figures(results: Sequence[Any]) -> dict[str, Any] | None:
    """Of the scored cases (evaluate.CaseResult) whose reference changes the input, the `echoes` whose answer
    repeats the input unchanged, and how many of those the scorer `passed`; None when no answer does (or no
    reference differs from its input)."""
    changed = [r for r in results if changes_input(r.input, r.ideal)]
    hits = [r for r in changed if repeats_input(r.input, r.ideal, r.output or "")]
    if not hits:
        return None
    return {"echoes": len(hits), "of": len(changed), "passed": sum(bool(r.passed) for r in hits)}


def echo_warnings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """compare's rows (`model`, `echo`) whose tuned prompt's copies of the input the scorer passed, one line each
    (its table and its report)."""
    return [f"{r['model']}: {echo_text(r['echo'])}: its score may be the scorer's, not the task's" for r in rows
            if (r.get("echo") or {}).get("passed")]


def echo_text(e: dict[str, Any]) -> str:
    """How the views say it: `repeats the input unchanged on 11 of 21 cases whose reference changes it (all 11
    passed by the scorer)`."""
    n = e["passed"]
    by = "" if not n else (f" (all {n} passed by the scorer)" if n == e["echoes"] else f" ({n} passed by the scorer)")
    return f"repeats the input unchanged on {e['echoes']} of {e['of']} cases whose reference changes it{by}"
