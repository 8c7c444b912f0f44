"""Scorers: the protocol every scorer meets, and the one factory that builds the scorer a config asks for
(a judge with a rubric, a built-in or plug-in metric, a custom metric file, or the default for the data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .config import ScorerSpec
from .data import Case
from .errors import ConfigError
from .metrics import Score
from .models import ModelClient


class Scorer(Protocol):
    """Scores one output of the task model.

    Contract: `score(case, output)` returns a Score whose `value` is in 0..1, or None with `error` set when
    scoring failed (a failed judge call, an unparseable verdict): never a made-up middle score, never an
    exception for a bad output. `passed` says whether the output meets the bar; `category` names the failure
    when it does not; `calls` counts the paid model calls the scoring made (0 for metrics). The same case and
    output give the same value (metrics are deterministic; judges run at temperature 0 and are cached).
    `kind` is "metric" or "judge"; `describe()` is one line for the run header.
    """

    kind: str
    name: str

    def describe(self) -> str: ...

    async def score(self, case: Case, output: str) -> Score: ...


def make_scorer(spec: ScorerSpec, cases: Sequence[Case]) -> tuple[Scorer, str | None]:
    """The scorer a spec asks for, and a note when a default metric was chosen for the user."""
    from .judge import JudgeScorer, load_rubric
    from .metrics import MetricScorer, default_metric
    from .models import get_client

    if spec.judge is not None and spec.metric:
        raise ConfigError("--judge and --metric both given", fix="score with one: a judge model or a metric")
    if spec.judge is not None:
        name = spec.rubric or ("correctness" if all(c.ideal for c in cases) else "helpfulness")
        rubric = load_rubric(name)
        note = None if spec.rubric else f"no --judge-criteria given: the judge grades with the {name!r} rubric"
        return JudgeScorer(get_client(spec.judge, role="judge"), rubric), note
    if spec.rubric:
        raise ConfigError("--judge-criteria needs --judge MODEL", fix="add --judge MODEL, or drop the rubric")
    if spec.metric:
        return metric_scorer(spec.metric, cases), None
    name = default_metric(cases)
    scorer = MetricScorer(name, cases)
    return scorer, f"no --judge or --metric given: scoring with metric {name!r} ({scorer.explain()})"


def metric_scorer(spec: str, cases: Sequence[Case]) -> Scorer:
    """`--metric SPEC`: a user's own metric (a file `path.py:fn`, or a function given in code), or a metric
    registered under the entry-point group `reflexopt.scorers` (the built-ins register there too), called as
    `factory(spec, cases)`."""
    from .custom_metric import is_user_metric
    from .metrics import MetricScorer, canonical_name
    from .plugins import available, load

    name = spec.partition(":")[0].strip()
    if is_user_metric(spec) or canonical_name(name) not in available("reflexopt.scorers"):
        return MetricScorer(spec, cases)  # custom files, and unknown names: MetricScorer names the fix
    factory = load("reflexopt.scorers", canonical_name(name), what="metric", fix="use one of {names}")
    scorer: Scorer = factory(spec, cases)
    return scorer


def scorer_clients(scorer: Scorer) -> list[ModelClient]:
    """The model clients a scorer calls (a judge's), for accounting and the budget."""
    client = getattr(scorer, "client", None)
    return [client] if isinstance(client, ModelClient) else []
