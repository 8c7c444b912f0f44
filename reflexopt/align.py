"""Judge alignment: tune a judge's rubric so that its pass/fail verdicts agree with people's (`reflexopt align`).

The optimizer runs unchanged on a workload made from graded responses: each case is one response people
labelled, its reference the people's verdict ("pass" or "fail"); the candidate prompt is the rubric's text; the
task (`JudgeTask`) asks the judge model for its verdict under that text; the metric is `contains`, so a case
scores 1 when the judge and the people agree. The split, the search, the gates, the verdict on test (agreement
of the starting against the tuned rubric, paired test) and the report are the optimizer's own.

What the search may change: the text (the reasoning model's rewrites, fed the cases where the judge and people
disagree, with the judge's reasons) and the examples (`demos`: responses from train with the people's verdict,
rendered into the rubric as graded examples). Label-task operators that write an answer format or a label
instruction would tell the judge to answer "pass" or "fail", so they are not offered.

The result is a rubric file: the starting rubric's front matter (scale, pass mark, flags) and the tuned text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import yaml

from .agreement import human_label, label_kind
from .config import AlignSpec
from .data import Case
from .errors import DataError
from .judge import JudgeScorer, Rubric, load_rubric
from .models import ChatResult, ModelClient
from .operators import LLM_OPERATORS
from .prompt import Prompt
from .promptset import PromptSet
from .task import OneModelTask, StartingPoint

PASS, FAIL = "pass", "fail"
OPERATORS = ("demos", *LLM_OPERATORS)  # what may change a rubric (see the module docstring)
EXAMPLES_HEADING = "Examples graded by people:"


def align_cases(cases: Sequence[Case], rubric: Rubric, *, responses: str, human: str) -> list[Case]:
    """The graded rows as alignment cases: the input is the response to grade, the reference the people's
    verdict; the graded row's own input and reference ride along for the judge. Rows with no human label are
    left out; a row with a label and no response is an error that names it."""
    labelled = [(c, lab) for c in cases if (lab := human_label(c.extra.get(human), human, c)) is not None]
    bools, on_scale = label_kind(labelled, human, rubric)
    if not (bools or on_scale):
        raise DataError(labelled[0][0].source, f"the human scores in {human!r} are not on the rubric's scale "
                        f"({rubric.low}-{rubric.high}), so their pass mark is unknown",
                        fix="give pass/fail labels, or scores on the rubric's scale")
    out: list[Case] = []
    for c, label in labelled:
        response = c.extra.get(responses)
        if not isinstance(response, str) or not response.strip():
            raise DataError(c.source, f"row has a human label and no response in {responses!r}", line=c.line,
                            fix=f"give every labelled row its response in {responses!r}, or name the column with "
                                "--responses")
        passed = float(label) >= (0.5 if bools else rubric.pass_score)
        out.append(replace(c, input=response, ideal=PASS if passed else FAIL,
                           extra={**c.extra, "_graded_input": c.input_text, "_graded_reference": c.ideal}))
    if len(out) < 6:
        source = cases[0].source if cases else "dataset"
        raise DataError(source, f"{len(out)} rows have a human label in {human!r}; alignment needs at least 6 "
                        "(train, val and test each need some)", fix=f"label more rows in {human!r}")
    return out


def starting_point(spec: AlignSpec, source: str) -> StartingPoint:
    """The run's start: the rubric's text as the one prompt, the graded rows as alignment cases."""
    rubric = load_rubric(spec.rubric)
    return StartingPoint(lambda: PromptSet.of(Prompt(rubric.text + "\n", source=source)),
                         aside=(spec.responses, spec.human),
                         transform=partial(align_cases, rubric=rubric, responses=spec.responses, human=spec.human))


def rubric_text(prompt: Prompt) -> str:
    """The rubric a candidate stands for: its text, then its demos as examples people graded."""
    text = prompt.text.strip()
    if not prompt.demos:
        return text
    shots = "\n\n".join(f"Response: {d.input.strip()}\nPeople's verdict: {d.output.strip()}" for d in prompt.demos)
    return f"{text}\n\n{EXAMPLES_HEADING}\n\n{shots}"


class JudgeTask(OneModelTask):
    """The alignment task: the judge model grades the case's response under the candidate's rubric; the output
    is its verdict, "pass" or "fail", and its score and reasons go in the trace (the diagnosis reads them)."""

    renders = False  # the judge's request is built by the judge, not from the prompt's roles and turns
    operators = OPERATORS

    def __init__(self, client: ModelClient, rubric: Rubric) -> None:
        self.client = client
        self.rubric = rubric
        self.names: tuple[str, ...] = ("prompt",)
        self.most_calls = 1  # the most judge calls one case has taken (parse retries; sizes the test reserve)
        self._judges: dict[str, JudgeScorer] = {}

    def check(self) -> None:
        """Nothing to check before a call."""

    def output_file(self, prompts: PromptSet) -> str:
        """What `-o` writes: the tuned rubric file."""
        return rubric_file(self.rubric, prompts.primary)

    def judge(self, prompt: Prompt) -> JudgeScorer:
        text = rubric_text(prompt)
        if text not in self._judges:  # one judge per rubric text: it keeps the server's structured form
            self._judges[text] = JudgeScorer(self.client, replace(self.rubric, text=text))
        return self._judges[text]

    async def run(self, prompts: PromptSet, case: Case) -> ChatResult:
        graded = Case(id=case.id, input=str(case.extra.get("_graded_input") or ""),
                      ideal=case.extra.get("_graded_reference"), source=case.source, line=case.line)
        s = await self.judge(prompts.primary).score(graded, case.input_text)
        self.most_calls = max(self.most_calls, s.calls)
        if s.value is None:
            return ChatResult("", self.client.spec.id, ok=False, error=s.error or "no verdict", paid_calls=s.calls,
                              cached=not s.calls, budget_exhausted=s.budget_exhausted)
        raw = s.raw if s.raw is not None else s.value
        return ChatResult(PASS if s.passed else FAIL, self.client.spec.id, paid_calls=s.calls, cached=not s.calls,
                          trace={"judge score": raw, "judge reasons": s.reasoning[:400]})


def rubric_file(rubric: Rubric, prompt: Prompt) -> str:
    """The tuned rubric as a file `--judge-criteria` reads: the starting rubric's front matter, the new text."""
    mark = int(rubric.pass_score) if rubric.pass_score.is_integer() else rubric.pass_score
    meta = {"scale": [rubric.low, rubric.high], "pass": mark, "fail_copies": rubric.fail_copies,
            "fail_restatements": rubric.fail_restatements, "pass_matches": rubric.pass_matches}
    front = yaml.safe_dump(meta, sort_keys=False, default_flow_style=None).strip()
    return f"---\n{front}\n---\n{rubric_text(prompt)}\n"
