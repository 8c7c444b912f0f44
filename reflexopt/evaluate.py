"""Run a candidate over cases concurrently (a Task makes each output) and score each output -> per-case results
and a summary."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .agreement import echo_figures
from .config import ModelSpec, ScorerSpec
from .data import Case
from .models import ModelClient
from .models.base import CallCost
from .prompt import Prompt
from .promptset import PromptSet
from .scoring import Scorer, make_scorer, scorer_clients
from .stats import mean_ci, paired_compare, percentile
from .task import PromptTask, Task, task_spec


@dataclass(frozen=True)
class CaseResult(CallCost):
    """One case scored: the task model's output, its score, and what its calls cost."""

    case_id: str
    input: str
    output: str
    ideal: str | None
    score: float | None
    passed: bool | None
    reasoning: str = ""
    category: str | None = None
    error: str | None = None
    calls: int = 0  # paid model calls this case cost (task + judge)
    flag: str | None = None  # the judge's reasoning contradicts its score: why
    trace: Any = None  # a pipeline's record of its steps

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {**{k: d.pop(k) for k in ("case_id", "input", "output", "ideal", "score", "passed")}, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


CACHED_LATENCY = "every answer came from the cache: latency as measured when each was paid for"


def latency_sample(results: Sequence[CaseResult], *, failed: bool = True) -> tuple[list[float], bool]:
    """The latencies a p50 and p95 are read from, and whether they come from the cache: those of the calls this
    command made (failed calls too, unless `failed` is False; never a call the budget refused), else, when the
    cache answered every case, how long each of those answers took when it was paid for (a cache written before
    it kept latencies has none). A second `eval` of the same prompt, or a `compare` run again with other
    limits, still has a latency to show and to check."""
    live = [r.latency_s for r in results if not r.cached and not r.budget_exhausted
            and (failed or r.error is None)]
    if live:
        return live, False
    first = [r.latency_s for r in results if r.cached and r.latency_s > 0]
    return first, bool(first)


def task_failed(r: CaseResult) -> bool:
    """The task produced no output (its call or the user's program failed), as opposed to a scorer failure or a
    call the budget refused."""
    return (r.score is None and not r.output and not r.budget_exhausted
            and (r.error or "").startswith(("model call failed", "the task failed")))


def case_score(r: CaseResult) -> float | None:
    """How a case counts in a prompt's score, on val as on test: its score; 0 where the task failed (a prompt
    whose program or call fails on the hard cases must not score as if they were not there); None where it was
    not scored (the judge failed, or the budget refused the call)."""
    if r.score is not None:
        return r.score
    return 0.0 if task_failed(r) else None


def case_scores(results: Sequence[CaseResult]) -> dict[str, float]:
    """A prompt's case scores by case id (`case_score`), the one rule behind every score over cases (a candidate's
    val, `eval`'s mean, a compared model's row and transfer cell); none at all when no case produced an output: a
    task that failed on every case is an outage or a broken candidate, not a prompt that scores 0."""
    if not any(r.score is not None for r in results):
        return {}
    return {r.case_id: s for r in results if (s := case_score(r)) is not None}


def counted_failures(results: Sequence[CaseResult]) -> int:
    """The task failures `case_scores` counts as 0 (none when no case produced an output: then nothing is counted)."""
    return sum(1 for r in results if task_failed(r)) if any(r.score is not None for r in results) else 0


def pass_flags(results: Sequence[CaseResult]) -> list[bool]:
    """Pass or fail per case, as `case_scores` counts the cases: a task failure fails; a case not scored is left
    out."""
    counted = any(r.score is not None for r in results)
    return [bool(r.passed) for r in results if r.passed is not None or (counted and task_failed(r))]


def mean_tokens(results: Iterable[CaseResult]) -> tuple[float, float] | None:
    """Mean prompt and completion tokens per case over the answered cases (a pipeline's case sums its steps);
    None when no case was answered."""
    rows = [(r.prompt_tokens, r.completion_tokens) for r in results if r.error is None]
    if not rows:
        return None
    return sum(p for p, _ in rows) / len(rows), sum(c for _, c in rows) / len(rows)


def money(results: Sequence[CaseResult], price: tuple[float, float] | None, *,
          per_request: float | None = None) -> dict[str, Any] | None:
    """What the task's answers cost at a price per token (or at a flat `per_request` cost, such as a GPU-hour
    rate through a measured throughput): USD per 1,000 requests, and per successful task (per passing case: the
    cost of every request, failures included, over the ones that passed). From the tokens each answer used, so an
    answer served from the cache counts at what it cost when paid. None: price unknown."""
    tokens = mean_tokens(results)
    if tokens is None or (price is None and per_request is None):
        return None
    if per_request is None:
        assert price is not None
        per_request = tokens[0] * price[0] + tokens[1] * price[1]
    passing = sum(1 for r in results if r.passed)
    return {"cost_per_1k": round(1000 * per_request, 6), "passing": passing, "requests": len(results),
            "cost_per_success": round(per_request * len(results) / passing, 8) if passing else None}


def as_task(task: Task | ModelClient) -> Task:
    """A Task; a bare model client is the default task (render the prompt, call the model)."""
    return PromptTask(task) if isinstance(task, ModelClient) else task


async def run_case(case: Case, prompts: PromptSet, task: Task, scorer: Scorer) -> CaseResult:
    res = await task.run(prompts, case)
    base: dict[str, Any] = dict(case_id=case.id, input=case.input_text, ideal=case.ideal, **res.cost_fields())
    task_calls = res.paid_calls if res.paid_calls is not None else (0 if res.cached or res.budget_exhausted else 1)
    if res.trace is not None:
        base["trace"] = res.trace
    if not res.ok:
        what = "model call failed" if res.paid_calls is None else "the task failed"
        return CaseResult(output="", score=None, passed=None, error=f"{what}: {res.error}",
                          budget_exhausted=res.budget_exhausted, calls=task_calls, **base)
    s = await scorer.score(case, res.text)
    return CaseResult(output=res.text, score=s.value, passed=s.passed, reasoning=s.reasoning, category=s.category,
                      error=s.error, flag=s.flag, calls=task_calls + s.calls, budget_exhausted=s.budget_exhausted,
                      **base)


async def iter_results(cases: Sequence[Case], prompt: Prompt | PromptSet, task: Task | ModelClient, scorer: Scorer,
                       *, concurrency: int | None = None,
                       stop: asyncio.Event | None = None) -> AsyncGenerator[CaseResult, None]:
    """Yield results as they complete, keeping at most `concurrency` cases in flight. Once `stop` is set no new
    case starts, but the cases in flight are still awaited and yielded: their calls are paid for, so their
    answers are recorded and cached rather than thrown away."""
    task, prompts = as_task(task), PromptSet.of(prompt)
    limit = max(1, concurrency or task.concurrency)
    pending: set[asyncio.Task[CaseResult]] = set()
    it = iter(cases)
    try:
        while True:
            while len(pending) < limit and not (stop is not None and stop.is_set()):
                case = next(it, None)
                if case is None:
                    break
                pending.add(asyncio.ensure_future(run_case(case, prompts, task, scorer)))
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # every finished case's outcome is taken, so an error that stops the command (a refused key) is
            # raised once, after the results that came with it, and never logged again by the loop as "never
            # retrieved"
            failed = [e for e in (t.exception() for t in done) if e is not None]
            for t in done:
                if t.exception() is None:
                    yield t.result()
            if failed:
                raise failed[0]
    finally:
        for t in pending:
            t.cancel()
            t.add_done_callback(take_outcome)


def take_outcome(t: asyncio.Future[Any]) -> None:
    """Take a cancelled or failed case's outcome, so the loop never logs it as "never retrieved" (the command
    is already stopping for the first error)."""
    if not t.cancelled():
        t.exception()


@dataclass(frozen=True)
class EvalReport:
    results: tuple[CaseResult, ...]
    scorer: str
    usage: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] | None = None  # a judge's record: self-agreement, contradictions, parse errors, form
    human: dict[str, Any] | None = None  # the judge against human labels: rho, kappa, the cases most apart
    money: dict[str, Any] | None = None  # the task's cost per 1,000 requests and per success, and the price's source
    labels: dict[str, Any] | None = None  # a label metric's figures over the set: macro-F1, F1 by label
    constant: dict[str, Any] | None = None  # a label metric: answering the most common label, against the prompt
    echo: dict[str, Any] | None = None  # answers that repeat their input where the reference changes it
    against: dict[str, Any] | None = None  # the prompt this one replaces, compared case by case (regression.py)
    gate: list[str] | None = None  # with --against or --fail-under: why the prompt fails the gate (empty: passes)
    against_results: tuple[CaseResult, ...] = ()  # with --against, the old prompt's cases (for the report)
    prompt_text: str = ""  # the prompts evaluated (PromptSet.to_markdown: a pipeline's as name -> markdown)
    against_text: str | None = None  # with --against, the prompts they replace, the same way
    run_dir: str | None = None  # the eval's folder in the run history
    variants: list[dict[str, Any]] | None = None  # with more prompt files: every prompt's row (regression.py)
    variant_results: tuple[tuple[str, tuple[CaseResult, ...]], ...] = ()  # and every prompt's cases, by name
    variant_texts: tuple[tuple[str, str], ...] = ()  # and every prompt's text, by name (the first's: prompt_text)

    @property
    def scored(self) -> list[float]:
        """The scores the mean is taken over (`case_scores`: a task failure counts 0; a case the judge could not
        score is left out)."""
        return list(case_scores(self.results).values())

    @property
    def mean(self) -> float:
        s = self.scored
        return sum(s) / len(s) if s else float("nan")

    def summary(self) -> dict[str, Any]:
        s = self.scored
        lo, hi = mean_ci(s)
        passed = pass_flags(self.results)
        cats = Counter(r.category for r in self.results if r.category)
        lat, from_cache = latency_sample(self.results)
        out: dict[str, Any] = {
            "score": round(self.mean, 4) if s else None,
            "ci95": [round(lo, 4), round(hi, 4)] if s else None,
            "n_cases": len(self.results),
            "n_scored": len(s),
            "task_failures": counted_failures(self.results),
            "pass_rate": round(sum(passed) / len(passed), 4) if passed else None,
            "errors": sum(1 for r in self.results if r.error),
            "failure_categories": dict(cats.most_common()),
            "scorer": self.scorer,
            "latency_p50_s": _r(percentile(lat, 50)),
            "latency_p95_s": _r(percentile(lat, 95)),
        }
        if from_cache:
            out["latency_from_cache"] = True
        out.update(self.usage)
        if self.labels is not None:
            out["labels"] = self.labels
        if self.constant is not None:
            out["constant"] = self.constant
        if self.echo is not None:
            out["echo"] = self.echo
        if self.money is not None:
            out["money"] = self.money
        if self.judge is not None:
            out["judge"] = self.judge
        if self.human is not None:
            out["human_agreement"] = self.human
        if self.against is not None:
            out["against"] = self.against
        if self.gate is not None:
            out["gate"] = {"passed": not self.gate, "reasons": self.gate}
        if self.variants is not None:
            out["variants"] = self.variants
        if self.run_dir is not None:
            out["run_dir"] = self.run_dir
        return out

    def write_jsonl(self, path: str | Path) -> None:
        """The scored cases, one JSON line each; with several prompts, every prompt's, each line naming its
        prompt (`prompt`) first."""
        from .paths import write_text_atomic

        rows = self.case_rows()
        write_text_atomic(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    def case_rows(self) -> list[dict[str, Any]]:
        """The scored cases as JSON rows (what `write_jsonl` writes)."""
        return ([{"prompt": name, **r.to_json()} for name, results in self.variant_results for r in results]
                if self.variant_results else [r.to_json() for r in self.results])


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def usage_of(*clients: ModelClient) -> dict[str, Any]:
    """Totals over several clients (task + judge), plus a per-role breakdown."""
    total: dict[str, Any] = {"model_calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                             "cost_usd": 0.0}
    by_role: dict[str, Any] = {}
    seen: set[int] = set()
    for c in clients:
        if id(c) in seen:
            continue
        seen.add(id(c))
        snap = c.meter.snapshot()
        by_role[c.role] = snap
        for k in total:
            total[k] += snap[k]
    total["cost_usd"] = round(total["cost_usd"], 6)
    total["by_role"] = by_role
    return total


async def evaluate_async(cases: Sequence[Case], prompt: Prompt | PromptSet, task: Task | ModelClient,
                         scorer: Scorer, *,
                         concurrency: int | None = None,
                         on_result: Callable[[CaseResult], None] | None = None) -> EvalReport:
    order = {c.id: i for i, c in enumerate(cases)}
    results: list[CaseResult] = []
    async for r in iter_results(cases, prompt, task, scorer, concurrency=concurrency):
        results.append(r)
        if on_result:
            on_result(r)
    results.sort(key=lambda r: order[r.case_id])
    return EvalReport(tuple(results), scorer.describe(), usage_of(*as_task(task).clients, *scorer_clients(scorer)),
                      labels=corpus_figures(scorer, results), echo=echo_figures(results))


def corpus_figures(scorer: Scorer, results: Sequence[CaseResult]) -> dict[str, Any] | None:
    """The scorer's figures over a whole set of answers (macro-F1 for a label metric), if it has any: a failed
    task call counts as an answer naming no label."""
    corpus = getattr(scorer, "corpus", None)
    return corpus([r.output or "" for r in results], [r.ideal for r in results]) if corpus else None


async def constant_by_case(scorer: Scorer, train: Sequence[Case],
                           cases: Sequence[Case]) -> tuple[str, dict[str, float]] | None:
    """The train split's most common label and what answering it scores on each of `cases`, by case id (no
    model call); None with fewer than two labels in train, or nothing scored."""
    counts = Counter(c.ideal for c in train if c.ideal)
    if len(counts) < 2 or not cases:
        return None
    label = min(counts, key=lambda k: (-counts[k], k))
    values = {c.id: v for c in cases if (v := (await scorer.score(c, label)).value) is not None}
    return (label, values) if values else None


async def constant_scores(scorer: Scorer, train: Sequence[Case],
                          cases: Sequence[Case]) -> tuple[str, list[float]] | None:
    """constant_by_case's scores as a list, in the order of `cases`."""
    hit = await constant_by_case(scorer, train, cases)
    return (hit[0], list(hit[1].values())) if hit else None


async def constant_answer(scorer: Scorer, train: Sequence[Case], test: Sequence[Case]) -> dict[str, Any] | None:
    """On a label task, what a prompt that answers the train split's most common label to every case scores on
    test, by the run's own scorer (no model call): the bar a tuned prompt must clear to show that the task model
    tells the cases apart at all. A model that cannot collapses onto one label, and on an imbalanced set the
    majority label alone can beat every prompt a search finds. None with fewer than two labels in train."""
    return constant_figures(await constant_by_case(scorer, train, test))


def constant_figures(hit: tuple[str, Mapping[str, float]] | None) -> dict[str, Any] | None:
    """constant_by_case's answer as the figures a view shows: the label, its mean score and the cases."""
    if hit is None:
        return None
    label, values = hit
    return {"label": label, "score": round(sum(values.values()) / len(values), 4), "n": len(values)}


async def constant_against(scorer: Any, train: Sequence[Case], test: Sequence[Case],
                           best: Sequence[CaseResult]) -> dict[str, Any] | None:
    """What constant_answer gives, with a prompt's answers (`best`: the tuned prompt's, or eval's) compared against
    it on the same cases (a paired test, as the gain over the starting prompt is): on a small or imbalanced test
    split a prompt can be a little above the constant answer by chance, which says no more than being below it
    does."""
    hit = await constant_by_case(scorer, train, test)
    const = constant_figures(hit)
    if const is None or hit is None:
        return const
    tuned = {r.case_id: s for r in best if (s := case_score(r)) is not None}
    ids = [i for i in hit[1] if i in tuned]
    if not ids:
        return const
    cmp = paired_compare([hit[1][i] for i in ids], [tuned[i] for i in ids])
    return {**const, "tuned_delta": round(cmp.delta, 4), "tuned_p": cmp.p_value, "tuned_n": len(ids)}


def constant_text(constant: Mapping[str, Any]) -> str:
    """`answering 'neutral' to every case scores 0.512`."""
    return f"answering {constant['label']!r} to every case scores {constant['score']:.3f}"


async def constant_with(spec: ScorerSpec, scorer_cases: Sequence[Case], train: Sequence[Case],
                        test: Sequence[Case]) -> dict[str, Any] | None:
    """constant_answer with the scorer a spec asks for, when it is a label metric (None for a judge or any other
    scorer: a constant answer is a bar on label tasks only, and a judge would cost calls)."""
    if spec.judge is not None:
        return None
    scorer, _ = make_scorer(spec, scorer_cases)
    return await constant_answer(scorer, train, test) if getattr(scorer, "corpus", None) else None


def evaluate(cases: Sequence[Case], prompt: Prompt | PromptSet, task: Task | ModelClient, scorer: Scorer, *,
             concurrency: int | None = None, on_result: Callable[[CaseResult], None] | None = None) -> EvalReport:
    """Synchronous entry point: evaluate `prompt` on `cases`."""
    return asyncio.run(evaluate_async(cases, prompt, task, scorer, concurrency=concurrency, on_result=on_result))


async def score_with(cases: Sequence[Case], prompt: Prompt | PromptSet, model: ModelSpec, scorer: ScorerSpec, *,
                     scorer_cases: Sequence[Case], concurrency: int | None = None) -> EvalReport:
    """Score a prompt with one model (the default task) on `cases`; the scorer is built from `scorer_cases`."""
    from .models import get_client

    built, _ = make_scorer(scorer, scorer_cases)
    return await evaluate_async(cases, prompt, get_client(model, role="task"), built, concurrency=concurrency)


def check_specs(models: Sequence[ModelSpec | None], scorer: ScorerSpec, cases: Sequence[Case]) -> None:
    """Everything that can fail before a call: every model id, setting and API key, the metric or rubric.
    Raises reflexopt's own errors; makes no call."""
    from .models import resolve_backend

    make_scorer(scorer, cases)
    for spec in models:
        if spec is not None:
            resolve_backend(spec)


@dataclass(frozen=True)
class LoadLevel:
    """One concurrency level of a load test: what was sent, what came back, how fast."""

    concurrency: int
    requests: int  # logical calls
    http_requests: int  # attempts, retries included: what the server saw
    errors: int
    rate_limited: int  # attempts answered 429
    wall_s: float
    throughput_rps: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 4)}


async def load_test(spec: ModelSpec, prompt: Prompt | PromptSet, cases: Sequence[Case], levels: Sequence[int],
                    calls_per_level: int) -> list[LoadLevel]:
    """Send the cases' inputs (cycled to `calls_per_level`) at each concurrency, bypassing the response cache
    (the same inputs were just answered in the verdict): latency percentiles, throughput, errors and 429s, from
    calls that really reached the model."""
    spec = task_spec(spec, cases, None)[0]  # the completion cap the run used (it fits the references)
    return [await _load_level(spec, PromptSet.of(prompt), cases, level, calls_per_level) for level in levels]


async def _load_level(spec: ModelSpec, prompts: PromptSet, cases: Sequence[Case], level: int,
                      n: int) -> LoadLevel:
    import time

    from .models import get_client

    client = get_client(spec.model_copy(update={"concurrency": level}), role="load", cache=False)  # in flight
    start = time.perf_counter()
    try:
        results = await asyncio.gather(*(client.complete(prompts.primary.render(cases[i % len(cases)]))
                                         for i in range(n)))
    finally:
        await client.aclose()
    wall = time.perf_counter() - start
    lat = [r.latency_s for r in results if r.ok]
    pct = [None if (v := percentile(lat, q)) is None else round(v, 4) for q in (50, 95, 99)]
    return LoadLevel(level, len(results), sum(r.attempts for r in results), sum(not r.ok for r in results),
                     client.meter.rate_limited, round(wall, 3), round(len(results) / wall, 3) if wall > 0 else 0.0,
                     pct[0], pct[1], pct[2])
