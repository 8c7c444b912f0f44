"""One `eval` run, the library side of the command: load the data and the prompt, answer and score every case
(evaluate.py), price the answers, check a judge (agreement.py), and with `--against`, the prompt it replaces on
the same cases (regression.py) and the gate. Where the run is kept (its folder, the trackers): eval_history.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .agreement import judge_checks
from .config import EvalConfig, check_models
from .eval_history import recorded
from .evaluate import CaseResult, EvalReport, constant_against, evaluate_async, money, usage_of
from .promptset import PromptSet
from .scoring import make_scorer, scorer_clients
from .task import RecordedTask, make_task, task_spec


def eval_models(configs: Sequence[EvalConfig], *, on_result: Callable[[CaseResult], None] | None = None,
                on_note: Callable[[str], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> tuple[list[EvalReport], list[dict[str, Any]]]:
    """The same prompt files on several models (`eval A.md B.md -m M1 -m M2`; one config per model, alike but
    for it): each model's eval in turn, kept in the run history as one eval each, and the matrix of every prompt
    on every model (regression.model_matrix). Settings that judge one prompt against a bar or another version
    (--against, --fail-under), recorded responses and pipelines are refused before any call: they are one
    model's questions. The evals' notes come after the last: one that every model's eval made once, and the others
    each prefixed with its model's label."""
    from .regression import model_matrix

    check_models(configs)
    first = configs[0]
    done = [0]
    reports: list[EvalReport] = []

    def total(n: int) -> None:  # the bar counts every model's cases
        if on_total:
            on_total(done[0] + n * (len(configs) - len(reports)))

    notes: list[list[str]] = []
    for config in configs:
        said: list[str] = []
        report = eval_prompt(config, on_result=on_result, on_note=said.append, on_total=total)
        done[0] += len(report.results) * (1 + len(config.variants))
        reports.append(report)
        notes.append(said)
    if on_note:  # once all are in: a note every model's eval made once, the others naming their model
        shared = [n for n in dict.fromkeys(notes[0]) if all(n in other for other in notes[1:])]
        for n in shared:
            on_note(n)
        for config, said in zip(configs, notes, strict=True):
            for n in dict.fromkeys(said):
                if n not in shared:
                    on_note(f"{config.model.label}: {n}")
    assert first.prompt_path is not None
    return reports, model_matrix([(c.model.label, first.prompt_path, r)
                                  for c, r in zip(configs, reports, strict=True)])


def eval_prompt(config: EvalConfig, *, on_result: Callable[[CaseResult], None] | None = None,
                on_note: Callable[[str], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> EvalReport:
    """Load data and prompt from a config, evaluate, and return the report. With a judge, the report also
    carries its self-agreement on `config.self_agreement` cases, its contradictions and parse errors, and with
    `config.human`, its agreement with the human labels in that column. With `config.against`, the prompt it
    replaces answers the same cases too, and the report compares the two (regression.py); with it or
    `config.fail_under`, `gate` says why the prompt fails (empty: it passes). The eval is kept in the run history
    and logged to the trackers (eval_history.py)."""
    note = on_note or (lambda _: None)
    return asyncio.run(recorded(config, lambda: _evaluate(config, on_result=on_result, on_note=note,
                                                         on_total=on_total), on_note=note))


async def _evaluate(config: EvalConfig, *, on_result: Callable[[CaseResult], None] | None,
                    on_note: Callable[[str], None], on_total: Callable[[int], None] | None) -> EvalReport:
    from .data import load_dataset
    from .models import get_client, spec_price

    aside = [f for f in (config.responses, config.human) if f]
    cases = load_dataset(config.data.path, input_field=config.data.input_field, ideal_field=config.data.ideal_field,
                         aside=aside)
    notes: list[str | None] = []
    task: Any
    old: PromptSet | None = None  # with --against, the prompts these replace
    others: list[PromptSet] = []  # more prompt files, compared with the first
    if config.responses:
        prompts = PromptSet.parse("{input}", "recorded responses")
        task = RecordedTask(config.responses)
    else:
        if config.pipeline is not None:
            prompts = PromptSet.load_named(config.pipeline.prompts)
        else:
            assert config.prompt_path is not None
            prompts = PromptSet.load(config.prompt_path)
            prompts.primary.check_fields(cases)
            notes += prompts.primary.brace_warnings()
        old = _replaced(prompts, config.against, cases, check=config.pipeline is None)
        others = [PromptSet.load(path) for path in config.variants]
        for other in others:
            other.primary.check_fields(cases)
            notes += other.primary.brace_warnings()
        spec, cap_note = task_spec(config.model, cases, config.concurrency, cap=config.pipeline is None)
        task = make_task(config, get_client(spec, role="task"))
        if config.pipeline is not None:
            task.check()  # the user's module imports and its function takes (input, prompts), before any call
        notes += [cap_note, config.scorer.self_grading_warning(config.model)]
    scorer, note = make_scorer(config.scorer, cases)
    for n in (note, *notes):
        if n:
            on_note(n)
    if on_total:
        on_total(len(cases) * (1 + (old is not None) + len(others)))
    try:
        report = await evaluate_async(cases, prompts, task, scorer, concurrency=config.concurrency,
                                      on_result=on_result)
        before = None if old is None else await evaluate_async(cases, old, task, scorer,
                                                               concurrency=config.concurrency, on_result=on_result)
        variants = [await evaluate_async(cases, other, task, scorer, concurrency=config.concurrency,
                                         on_result=on_result) for other in others]
    finally:
        if hasattr(task, "aclose"):  # a pipeline's endpoint and worker processes
            await task.aclose()
    read = getattr(task, "read", None)  # a pipeline: the prompt names its function read
    unread = [n for n in prompts.names if read is not None and task.cases_run and n not in read]
    if unread:
        on_note(f"the pipeline never read prompt {', '.join(map(repr, unread))} on {task.cases_run} cases: read it "
                "as prompts[NAME] in your function, or drop that --prompt")
    if not config.responses:
        price, source = spec_price(config.model)
        report = replace(report, money={**(money(report.results, price) or {}), "price_source": source},
                         prompt_text=prompts.to_markdown())
        variants = [replace(v, money={**(money(v.results, price) or {}), "price_source": source}) for v in variants]
    if variants:
        from .regression import compare_variants

        assert config.prompt_path is not None
        rows = compare_variants(report, config.prompt_path, list(zip(config.variants, variants, strict=True)),
                                cases=cases, scorer_kind=getattr(scorer, "kind", ""))
        report = replace(report, variants=rows, usage=usage_of(*task.clients, *scorer_clients(scorer)),
                         variant_results=((config.prompt_path, report.results),
                                          *((name, v.results) for name, v in zip(config.variants, variants,
                                                                                 strict=True))),
                         variant_texts=((config.prompt_path, prompts.to_markdown()),
                                        *((name, o.to_markdown()) for name, o in zip(config.variants, others,
                                                                                     strict=True))))
    if before is not None and old is not None:
        from .regression import compare_change

        label = ", ".join(p if n == "prompt" else f"{n}={p}" for n, p in config.against)
        change = compare_change(before.results, report.results, old_prompt=label, cases=cases,
                                scorer_kind=getattr(scorer, "kind", ""))
        report = replace(report, against=change, usage=before.usage, against_results=before.results,
                         against_text=old.to_markdown())  # usage: both prompts' totals
    if config.against or config.fail_under is not None:
        from .regression import gate_reasons

        s = report.scored
        report = replace(report, gate=gate_reasons(report.mean if s else None, report.against, config.fail_under))
    if report.labels is not None:  # a label metric: the majority answer of these references, against the prompt
        report = replace(report, constant=await constant_against(scorer, cases, cases, report.results))
    if getattr(scorer, "kind", "") != "judge":
        return report
    grades_own = not config.responses and config.scorer.self_grading_warning(config.model) is not None
    judge, human = await judge_checks(scorer, cases, report.results, sample=config.self_agreement,
                                      human=config.human, grades_own=grades_own)
    clients = [*task.clients, *scorer_clients(scorer)]
    return replace(report, judge=judge, human=human, usage=usage_of(*clients) if clients else report.usage)


def _replaced(prompts: PromptSet, against: tuple[tuple[str, str], ...], cases: Any, *, check: bool) -> PromptSet | None:
    """The prompts with `against`'s old versions in their place (None without --against)."""
    if not against:
        return None
    old = prompts
    for name, path in against:
        was = PromptSet.load(path).primary
        if check:
            was.check_fields(cases)
        old = old.replace(name, was)
    return old

