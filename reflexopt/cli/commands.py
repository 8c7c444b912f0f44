"""The working commands: eval, optimize, worker, compare, batch. Each builds a config through the library's
builder, calls the library, and renders with render.py. Heavy imports happen inside the commands so
`reflexopt --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from ..paths import check_writable
from .app import (
    ApiBase,
    BalancedOpt,
    ConcOpt,
    DataArg,
    IdealField,
    InputField,
    JsonOpt,
    JudgeOpt,
    MaxTok,
    MetricOpt,
    ModelOpt,
    PipelineOpt,
    PipelineTimeoutOpt,
    PricesOpt,
    PromptsOpt,
    RegisterOpt,
    ReportOpt,
    RubricOpt,
    StrategyOpt,
    TrackExpOpt,
    TrackOpt,
    VerboseOpt,
    app,
    err,
    fail,
    guard,
    out,
    print_json,
    show,
)


@app.command("eval")
@guard
def eval_cmd(
    dataset: DataArg,
    prompts: Annotated[list[Path] | None, typer.Argument(
        metavar="[PROMPT]...", help="Prompt file (markdown); not needed with --responses. Several: each scored on "
                                    "the same cases and compared with the first.")] = None,
    models: Annotated[list[str] | None, typer.Option(
        "-m", "--model", metavar="MODEL",
        help="Task model: a litellm id, or local/smollm2 (offline, the default); settings after @, e.g. "
             "local/smollm2@temperature=0.7,max_tokens=64. Repeat (-m A -m B) to score every prompt on each "
             "model: a table of prompts by models.")] = None,
    api_base: ApiBase = None,
    prices: PricesOpt = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    input_field: InputField = None,
    ideal_field: IdealField = None,
    concurrency: ConcOpt = None,
    max_tokens: MaxTok = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write per-case results (JSONL).")] = None,
    responses: Annotated[str | None, typer.Option(
        "--responses", help="Grade the responses recorded in this dataset column instead of calling a model.")] = None,
    human: Annotated[str | None, typer.Option(
        "--human", help="Dataset column of human scores or pass/fail labels: report the judge's agreement with "
                        "them (Spearman's rho, Cohen's kappa, the cases most apart).")] = None,
    self_agreement: Annotated[int, typer.Option(
        "--self-agreement", min=0, help="Cases the judge grades twice more (resampled, and paraphrased) to measure "
                                        "its self-agreement; 0 skips it.")] = 10,
    against: Annotated[list[str] | None, typer.Option(
        "--against", help="The prompt this one replaces (with --pipeline: NAME=FILE, repeated, for the prompts "
                          "whose old version differs): both answer the same cases, compared pair by pair; exit "
                          "code 1 when the new version is significantly worse.")] = None,
    pipeline: PipelineOpt = None,
    prompt_opts: PromptsOpt = None,
    pipeline_timeout: PipelineTimeoutOpt = None,
    fail_under: Annotated[float | None, typer.Option(
        "--fail-under", min=0.0, max=1.0, help="Exit code 1 when the mean score is below this (0..1).")] = None,
    track: TrackOpt = None,
    track_experiment: TrackExpOpt = None,
    report_path: ReportOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score a prompt on one dataset with one model (or grade recorded responses, and check the judge); with
    --against, check it against the prompt it replaces (a CI gate); with several prompts, compare them; with
    several models, score every prompt on each."""
    from ..config import eval_config, pipeline_spec, track_spec
    from ..eval_run import eval_prompt
    from .render import against_table, case_line, disagreement_table, eval_table, progress, variants_table

    prompt, variants = (prompts[0], prompts[1:]) if prompts else (None, [])
    model_ids = models or ["local/smollm2"]
    model = model_ids[0]

    reads: dict[str, str | Path | None] = {"the dataset": dataset, **{f"the prompt {p}": p for p in prompts or ()},
                                           **{f"the --against prompt {a}": a.rpartition("=")[2] for a in against or ()}}
    if output:
        check_writable(output, "-o", reads=reads)
    if report_path is not None:
        check_writable(report_path, "--report", reads={**reads, **({"the -o file": output} if output else {})})

    def config_for(model: str) -> Any:
        return eval_config(dataset, prompt, model=model, api_base=api_base, max_tokens=max_tokens, judge=judge,
                           rubric=judge_criteria, metric=metric, input_field=input_field, ideal_field=ideal_field,
                           concurrency=concurrency, responses=responses, human=human,
                           self_agreement=self_agreement, prices=prices, against=against, fail_under=fail_under,
                           track=track_spec(track, experiment=track_experiment),
                           pipeline=pipeline_spec(pipeline, prompt_opts or (), timeout_s=pipeline_timeout),
                           variants=variants)

    if len(model_ids) > 1:
        if report_path is not None:
            raise ConfigError("--report writes one eval's page, and several models make one eval each",
                              fix="drop --report: `reflexopt report RUN` writes each model's from the run history")
        _eval_models([config_for(m) for m in model_ids], dataset, output, verbose=verbose, as_json=as_json)
        return
    config = config_for(model)
    doing = ("evaluating both versions" if against else f"evaluating {len(prompts or ())} prompts" if variants
             else "evaluating")
    with progress(err, doing, quiet=as_json) as bar:
        def on_result(r: Any) -> None:
            bar.advance(r)
            if verbose and not as_json:
                err.print(case_line({"case_id": r.case_id, "score": r.score, "output": r.output or r.error}),
                          highlight=False, markup=False)

        report = eval_prompt(config, on_result=on_result, on_note=lambda n: err.print(f"[dim]{n}[/]"),
                             on_total=bar.set_total)
    summary = report.summary()
    first = (prompt.name + (f" and {len(variants)} more" if variants else "")) if prompt else pipeline
    what = (f"{first} on {dataset.name} with {model}" if prompt or pipeline
            else f"{responses!r} responses in {dataset.name}")
    if output:
        report.write_jsonl(output)
        summary["cases_path"] = str(output)
    if as_json:
        summary.pop("by_role", None)
        print_json(summary)
    else:
        out.print(eval_table(summary, title=what))
        if (summary.get("human_agreement") or {}).get("disagreements"):
            out.print(disagreement_table(summary["human_agreement"]))
        if report.against is not None:
            out.print(against_table(report.against, new=prompt.name if prompt else str(pipeline or "")))
        if report.variants:
            out.print(variants_table(report.variants))
        if output:
            err.print(f"per-case results: {output}")
    if report_path is not None:
        from ..paths import write_text_atomic
        from ..report import eval_report

        write_text_atomic(report_path, eval_report(report, title=f"reflexopt eval: {what}"))
        err.print(f"report: {report_path}")
    if report.results and not report.scored:  # nothing was scored: not a result a script may take as one
        first = next((r.error for r in report.results if r.error), None) or "no output"
        fail(f"every case failed, so there is no score (the first: {first.strip().splitlines()[-1][:300]})"
             + (f"; per-case results in {output}" if output else ""), code=1)
    if report.gate:
        fail("; ".join(report.gate), code=1)


def _eval_models(configs: list[Any], dataset: Path, output: Path | None, *, verbose: bool, as_json: bool) -> None:
    """`eval ... -m A -m B`: every prompt on each model (eval_run.eval_models), the table of prompts by models,
    and with -o every model's cases, each line naming its `model`."""
    from ..eval_run import eval_models
    from ..paths import write_text_atomic
    from .render import case_line, matrix_table, progress

    with progress(err, f"evaluating on {len(configs)} models", quiet=as_json) as bar:
        def on_result(r: Any) -> None:
            bar.advance(r)
            if verbose and not as_json:
                err.print(case_line({"case_id": r.case_id, "score": r.score, "output": r.output or r.error}),
                          highlight=False, markup=False)

        def on_note(n: str) -> None:  # eval_models names the model of a note that not every model's eval made
            err.print(n, style="dim", highlight=False, markup=False)

        reports, rows = eval_models(configs, on_result=on_result, on_note=on_note, on_total=bar.set_total)
    if output:
        write_text_atomic(output, "".join(json.dumps({"model": c.model.label, **row}, ensure_ascii=False) + "\n"
                                          for c, r in zip(configs, reports, strict=True) for row in r.case_rows()))
    summaries = [{"model": c.model.label, **r.summary()} for c, r in zip(configs, reports, strict=True)]
    if as_json:
        for s in summaries:
            s.pop("by_role", None)
        print_json({"models": summaries, "matrix": rows, **({"cases_path": str(output)} if output else {})})
    else:
        n = len(rows) // len(configs)
        out.print(matrix_table(rows, title=f"{n} prompt{'s' if n > 1 else ''} on {dataset.name}, by model"))
        for s in summaries:
            err.print(f"{s['model']}: run {s.get('run_dir')}", highlight=False, markup=False)
        if output:
            err.print(f"per-case results: {output}")
    failed = [s["model"] for s in summaries if s["n_cases"] and not s["n_scored"]]
    if failed:
        fail(f"every case failed on {', '.join(failed)}, so there is no score there (see its run's cases)", code=1)


# the option that sets each stored setting; a resume refuses a value that differs from the run's
RESUME_FIELDS = {"dataset": "data", "input_field": "data", "ideal_field": "data", "prompt": "prompt_path",
                 "model": "model", "api_base": "model", "prices": "model", "max_tokens": "model",
                 "reasoning_model": "reasoning",
                 "judge": "scorer", "judge_criteria": "scorer", "metric": "scorer", "split_opt": "split",
                 "balanced": "balanced",
                 "seed": "seed", "concurrency": "concurrency", "no_prune": "pruning", "strategy": "strategy",
                 "track": "track", "track_experiment": "track", "register_prompt": "track",
                 "objective": "objective", "max_prompt_tokens": "max_prompt_tokens",
                 "cost_margin": "cost_margin", "no_rewrites": "rewrites"}


def _setting(config: Any, field: str) -> Any:
    value = getattr(config, field)
    if field == "data":
        return value.model_copy(update={"path": str(Path(value.path).resolve())})
    return str(Path(value).resolve()) if field == "prompt_path" else value


def _given_options(ctx: typer.Context) -> dict[str, str]:
    """The command's parameters given on the command line (not left at their defaults): name -> how written."""
    out: dict[str, str] = {}
    for p in ctx.command.params:
        source = ctx.get_parameter_source(p.name) if p.name else None
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[str(p.name)] = p.opts[0] if p.param_type_name == "option" else str(p.name).upper()
    return out


@app.command("optimize")
@guard
def optimize_cmd(
    ctx: typer.Context,
    dataset: Annotated[Path | None, typer.Argument(metavar="DATASET", help="JSONL, JSON array or CSV dataset.")] = None,
    prompt: Annotated[Path | None, typer.Argument(metavar="PROMPT", help="Starting prompt file (markdown).")] = None,
    model: ModelOpt = "local/smollm2",
    api_base: ApiBase = None,
    prices: PricesOpt = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    reasoning_model: Annotated[str | None, typer.Option("--reasoning-model", help="Model that diagnoses and "
                                                        "rewrites (default: the judge when --judge is given, else "
                                                        "the task model).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the best prompt here.")] = None,
    target: Annotated[float | None, typer.Option("--target", min=0, max=1, help="Stop at this val score.")] = None,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Stop after N trials with no gain.")] = 10,
    max_calls: Annotated[int | None, typer.Option("--max-calls", min=1, help="Hard limit on calls (paid, or "
                                                  "answered by the cache in place of a paid one).")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0, help="Hard limit in USD.")] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="e.g. 30m, 1h.")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", min=0, help="Candidates to try (default 24, or "
                          "no limit when --max-calls, --max-cost or --max-time is set).")] = None,
    split_opt: Annotated[str | None, typer.Option("--split", help="TRAIN/VAL/TEST, e.g. 30/30/40 (default: 30/30/40 "
                                                  "from 100 rows, 30/35/35 below, thirds below 30).")] = None,
    balanced: BalancedOpt = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                       help="Same seed, data and models: same split and run.")] = 0,
    concurrency: ConcOpt = None,
    max_tokens: MaxTok = None,
    input_field: InputField = None,
    ideal_field: IdealField = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Directory for this run.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run: its id, or none for the "
                                               "latest.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL (default: SQLite in the "
                                                "run directory), e.g. postgresql://...")] = None,
    no_prune: Annotated[bool, typer.Option("--no-prune", help="Evaluate every candidate on all of val.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the estimated calls and cost, and stop.")] = False,
    report: ReportOpt = None,
    strategy: StrategyOpt = "reflex",
    pipeline: PipelineOpt = None,
    prompt_opts: PromptsOpt = None,
    pipeline_timeout: PipelineTimeoutOpt = None,
    track: TrackOpt = None,
    track_experiment: TrackExpOpt = None,
    register_prompt: RegisterOpt = None,
    objective: Annotated[str, typer.Option("--objective", help="score: return the best val score; cost: the "
                                           "cheapest prompt (tokens, or price) not worse than it on val.")] = "score",
    max_prompt_tokens: Annotated[int | None, typer.Option("--max-prompt-tokens", min=1, help="Return no prompt "
                                                          "that uses more prompt tokens per request.")] = None,
    cost_margin: Annotated[float, typer.Option("--cost-margin", min=0, max=1, help="With --objective cost: a "
                           "cheaper prompt must be shown (one-sided paired test on val, alpha 0.05) to lose less than "
                           "this against the best.")] = 0.05,
    no_rewrites: Annotated[bool, typer.Option("--no-rewrites", help="Never ask the reasoning model for a rewrite: "
                                              "the no-LLM operators only (reflex).")] = False,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Optimize a prompt: diagnose failures, propose rewrites, search with Optuna, verify on held-out test."""
    from ..config import Budget, optimize_config, parse_duration, parse_split, pipeline_spec, track_spec
    from ..optimizer import Optimizer
    from .render import LiveView, print_dry_run

    pipe = pipeline_spec(pipeline, prompt_opts or (), timeout_s=pipeline_timeout)
    if objective not in ("score", "cost"):
        fail(f"--objective {objective!r} is not one of score, cost (fix: --objective cost for the cheapest prompt "
             "not worse than the best)")
    if pipe is not None:
        if prompt is not None:
            fail(f"with --pipeline the prompts are given as --prompt NAME=FILE, not as {prompt} "
                 f"(fix: --prompt NAME={prompt})")
        prompt = Path(pipe.prompts[0][1])
    if resume is None and (dataset is None or prompt is None):
        fail("DATASET and PROMPT are required (fix: give both, or --resume RUN_ID; a pipeline takes "
             "--pipeline FILE.py:FUNCTION --prompt NAME=FILE)")
    given = _given_options(ctx)
    values = {"max_calls": max_calls, "max_cost": max_cost, "max_time_s": parse_duration(max_time),
              "max_trials": max_trials, "patience": patience, "target": target}
    budget = {k: v for k, v in values.items() if ("max_time" if k == "max_time_s" else k) in given}
    changes = {k: v for k, v in (("budget", budget), ("output", output)) if v}  # what a resume may change
    if report is not None:
        check_writable(report, "--report", reads={"the dataset": dataset, "the prompt": prompt, "the -o file": output})
    config = optimize_config(
        dataset or "", prompt or "", model=model, api_base=api_base, max_tokens=max_tokens,
        reasoning_model=reasoning_model, judge=judge, rubric=judge_criteria, metric=metric,
        input_field=input_field, ideal_field=ideal_field, output=output, prices=prices,
        budget=Budget(max_calls=max_calls, max_cost=max_cost, max_time_s=parse_duration(max_time),
                      max_trials=max_trials, patience=patience, target=target),
        split=parse_split(split_opt), balanced=balanced, seed=seed, concurrency=concurrency, pruning=not no_prune,
        storage=storage,
        strategy=strategy, pipeline=pipe,
        track=track_spec(track, experiment=track_experiment, register=register_prompt), objective=objective,
        max_prompt_tokens=max_prompt_tokens, cost_margin=cost_margin, rewrites=not no_rewrites)
    opt = Optimizer(config, resume=resume, run_dir=run_dir, changes=changes)
    if opt.resumed:  # the run goes on with the settings it started with; the same values may be given again
        differ = [flag for name, flag in given.items() if name in RESUME_FIELDS
                  and _setting(config, RESUME_FIELDS[name]) != _setting(opt.config, RESUME_FIELDS[name])]
        if differ:
            fail(f"a resumed run keeps the settings it started with; {', '.join(differ)} "
                  f"{'differs' if len(differ) == 1 else 'differ'} from them (fix: drop "
                  "them, or start a new run; a resume may change --max-calls, --max-cost, --max-time, --max-trials, "
                  "--patience, --target, -o and --report)")
    est = opt.estimate()
    if dry_run:
        if as_json:
            print_json(est)
        else:
            print_dry_run(out, err, est)
        return
    replacing = output is not None and output.exists()
    with LiveView(err, quiet=as_json, verbose=verbose) as view:
        opt.on_event = view.on_event
        result = opt.run()
    if replacing:
        err.print(f"[yellow]note:[/] {output} existed and now holds the new best prompt")
    show_result(result, report, as_json)


def show_result(result: Any, report: Path | None, as_json: bool) -> None:
    """An optimize run's end (`optimize`, `align`): its report, then one JSON object or the summary table."""
    from .render import print_optimize

    if report is not None:
        from ..report import write_report

        err.print(f"report: {write_report(Path(result.run_dir), report)}")
    if as_json:
        data = result.to_json()
        for k in ("baseline_prompt", "best_prompt", "usage"):
            data.pop(k, None)
        print_json(data)
        return
    print_optimize(out, result)


@app.command("worker")
@guard
def worker_cmd(
    storage: Annotated[str, typer.Option("--storage", help="Optuna storage URL shared with the run, e.g. "
                                         "postgresql://user@host/db.")],
    study: Annotated[str | None, typer.Option("--study", help="Work on this study only (default: every "
                                              "running reflexopt study).")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to keep polling for a running study.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Join optimize runs in shared storage and evaluate their trials (run it on any number of machines)."""
    from ..worker import run_worker
    from .render import print_worker, worker_events

    reports = run_worker(storage, study=study, wait_s=wait, on_event=worker_events(err, quiet=as_json))
    show([r.__dict__ for r in reports] if as_json else reports, print_worker, as_json=as_json)


@app.command("compare")
@guard
def compare_cmd(
    dataset: DataArg,
    prompt: Annotated[Path | None, typer.Argument(metavar="PROMPT", help="Starting prompt file (markdown).")] = None,
    models: Annotated[list[str] | None, typer.Option("-m", "--model", metavar="MODEL",
                                                     help="A model to compare (repeat: -m A -m B).")] = None,
    api_base: ApiBase = None,
    prices: PricesOpt = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    reasoning_model: Annotated[str | None, typer.Option(
        "--reasoning-model", help="Model that diagnoses and rewrites for every model (default: the judge when "
                                  "--judge is given, else each model).")] = None,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Score the starting prompt only.")] = False,
    max_calls_per_model: Annotated[int | None, typer.Option("--max-calls-per-model", min=1, help="Hard limit on "
                                                            "paid calls for each model's run.")] = None,
    max_trials: Annotated[int, typer.Option("--max-trials", min=0, help="Candidates per model.")] = 12,
    target: Annotated[float | None, typer.Option("--target", min=0, max=1, help="Score that is good enough.")] = None,
    margin: Annotated[float, typer.Option("--margin", min=0, max=1, help="A cheaper model counts as as good as the "
                                          "best when a TOST test shows it within this margin (default 0.05).")] = 0.05,
    max_p95: Annotated[str | None, typer.Option("--max-p95", help="Recommend no model whose latency p95 on test is "
                                                "above this, e.g. 2s or 1500ms.")] = None,
    max_cost_per_1k: Annotated[float | None, typer.Option("--max-cost-per-1k", min=0, help="Recommend no model "
                                                          "costing more (USD per 1,000 requests).")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", min=0, max=1, help="Recommend no model whose "
                                                    "tuned score is below this.")] = None,
    load: Annotated[str | None, typer.Option("--load", help="After tuning, send the test inputs at these "
                                             "concurrencies, e.g. 1,8,32 (real calls, no cache).")] = None,
    load_calls: Annotated[int, typer.Option("--load-calls", min=1, help="Calls per model and concurrency level "
                                            "of --load (its own budget).")] = 64,
    transfer: Annotated[bool, typer.Option("--transfer", help="Score every tuned prompt on every model.")] = False,
    balanced: BalancedOpt = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Models tuned at the same time.")] = 2,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                       help="Same seed, data and models: same split and run.")] = 0,
    concurrency: ConcOpt = None,
    max_tokens: MaxTok = None,
    report: ReportOpt = None,
    strategy: StrategyOpt = "reflex",
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Your own program as the task, run on each "
                                                 "model: FILE.py:FUNCTION.")] = None,
    prompt_opts: PromptsOpt = None,
    track: TrackOpt = None,
    track_experiment: TrackExpOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tune a prompt for each model, compare them on one test split, recommend the cheapest good one."""
    from ..compare import compare
    from ..config import Budget, compare_config, parse_levels, parse_seconds, pipeline_spec, track_spec
    from .render import compare_events, print_compare

    pipe = pipeline_spec(pipeline, prompt_opts or ())
    if pipe is not None:
        if prompt is not None:
            fail(f"with --pipeline the prompts are given as --prompt NAME=FILE, not as {prompt} "
                 f"(fix: --prompt NAME={prompt})")
        prompt = Path(pipe.prompts[0][1])
    if prompt is None:
        fail("PROMPT is required (fix: give the prompt file, or --pipeline FILE.py:FUNCTION --prompt NAME=FILE)")
    models = models or []
    if len(models) < 1:
        fail("give at least one model with -m (fix: -m MODEL_A -m MODEL_B)")
    if report is not None:
        check_writable(report, "--report", reads={"the dataset": dataset, "the prompt": prompt})
    config = compare_config(
        dataset, prompt, models, api_base=api_base, max_tokens=max_tokens, reasoning_model=reasoning_model,
        judge=judge, rubric=judge_criteria, metric=metric, prices=prices,
        budget=Budget(max_calls=max_calls_per_model, max_trials=max_trials, patience=max(1, max_trials)),
        tune=not no_tune, transfer=transfer, target=target, balanced=balanced, seed=seed, concurrency=concurrency,
        parallel=parallel,
        strategy=strategy, pipeline=pipe, track=track_spec(track, experiment=track_experiment), margin=margin,
        max_p95_s=parse_seconds(max_p95), max_cost_per_1k=max_cost_per_1k, min_score=min_score,
        load=parse_levels(load), load_calls=load_calls)

    result = compare(config, on_event=compare_events(err, quiet=as_json, tuning=not no_tune)).to_json()
    if report is not None:
        from ..report import write_report
        from ..store import runs_root

        err.print(f"report: {write_report(runs_root() / result['compare_id'], report)}")
    if as_json:
        for r in result["rows"]:
            r.pop("tuned_prompt", None)
        print_json(result)
        return
    print_compare(out, result)


@app.command("batch")
@guard
def batch_cmd(
    jobs: Annotated[Path, typer.Argument(help="Jobs file (YAML): defaults + a list of jobs.")],
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Jobs run at the same time.")] = 1,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL for every job's study.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write one HTML report per job into this "
                                                "directory.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Search strategy for every job (overrides "
                                                 "the jobs file): reflex, mipro, gepa or simba.")] = None,
    track: TrackOpt = None,
    track_experiment: TrackExpOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-optimize many prompt/model jobs; resumable; exit code 1 when a job regressed beyond its tolerance."""
    from ..batch import run_batch
    from ..config import track_spec
    from .render import batch_events, print_batch

    if report is not None:
        check_writable(report, "--report", directory=True)
    result = run_batch(jobs, storage=storage, parallel=parallel, on_event=batch_events(err, quiet=as_json),
                       strategy=strategy, track=track_spec(track, experiment=track_experiment))
    if report is not None:
        from ..report import write_batch_reports

        err.print(f"reports: {write_batch_reports(result, report)}")
    show(result, print_batch, as_json=as_json)
    if result["regressions"] or result["failed"]:
        raise typer.Exit(1)
