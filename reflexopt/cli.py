"""The command line: parse options, build config, call the library, render with rich. No logic here.

Heavy imports (litellm, numpy, the library) happen inside commands so `reflexopt --help` stays instant.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Evaluate and optimize LLM prompts on your own data, with your own judge.")
# piped output gets wide tables instead of rich's 80-column default
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ModelOpt = Annotated[str, typer.Option("-m", "--model", help="Task model: a litellm id, or local/smollm2 (offline); "
                                       "settings after @, e.g. local/smollm2@temperature=0.7,max_tokens=64.")]
ApiBase = Annotated[str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible endpoint.")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Judge model id; scores with a rubric.")]
RubricOpt = Annotated[str | None, typer.Option("--judge-criteria", help="Rubric file or shipped rubric name.")]
MetricOpt = Annotated[str | None, typer.Option("--metric", help="exact, contains, regex:P, f1, rouge-l, json, "
                                               "json-schema:FILE, max-length:N, or FILE.py:FUNCTION (your own)")]
InputField = Annotated[str | None, typer.Option("--input-field", help="Column holding the input.")]
IdealField = Annotated[str | None, typer.Option("--ideal-field", help="Column holding the reference answer.")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Cases in flight at once.")]
MaxTok = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Completion token limit for the task model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show each case's output and score as it comes.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Also write a self-contained HTML report here.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="Search strategy: reflex (reflexopt's own), mipro "
                                          "(DSPy MIPROv2) or gepa (DSPy GEPA).")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"reflexopt {version('reflexopt')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Evaluate and optimize LLM prompts on your own data, with your own judge."""


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(128 + signum)


def _stop_now(code: int) -> NoReturn:
    """End the process within seconds on Ctrl-C / SIGTERM: stop the local model server, then exit without
    joining worker threads (compare and batch run models in threads that may be mid-call). Nothing is lost:
    every run writes its calls, scores and trials as they happen, and resumes from them."""
    err.print("interrupted: work done so far is kept (run the same command, or --resume, to continue)")
    try:
        from .models.local import stop_all

        stop_all()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _optional_resume(argv: list[str]) -> list[str]:
    """`--resume` may stand alone (resume the latest run) or take a run id."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "latest")
            break
    return out


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    from .cliconfig import config_file, default_map
    from .errors import ReflexoptError

    try:
        args, config = config_file(_optional_resume(sys.argv[1:]))
        sys.argv[1:] = args
        defaults = default_map(config, typer.main.get_command(app)) if config else None
    except ReflexoptError as e:
        try:
            _fail(str(e))
        except typer.Exit as x:
            sys.exit(x.exit_code)
    try:
        app(default_map=defaults)
    except ReflexoptError as e:  # pragma: no cover - app() normally exits via SystemExit
        _fail(str(e))


def _guard(fn: Any) -> Any:
    """Turn library errors into one line and exit code 2; Ctrl-C into exit 130 (servers stop at exit)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import ReflexoptError

        try:
            return fn(*args, **kwargs)
        except ReflexoptError as e:
            _fail(str(e).replace("[", "\\["))
        except KeyboardInterrupt:
            _stop_now(130)
        except Interrupted as e:
            _stop_now(e.code)

    return wrapper


def _model_spec(model: str, api_base: str | None, max_tokens: int | None = None) -> Any:
    from pydantic import ValidationError

    from .config import ModelSpec

    try:
        return ModelSpec.parse(model, api_base=api_base, max_tokens=max_tokens)
    except ValidationError as e:
        _fail(f"invalid model options for {model!r}: {e.errors()[0]['msg']} (fix: correct the value)")
    except ValueError as e:
        _fail(f"{e} (fix: write -m ID or -m ID@temperature=0.7,max_tokens=64)")


@app.command("eval")
@_guard
def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="JSONL or CSV dataset.")],
    prompt: Annotated[Path, typer.Argument(help="Prompt file (markdown).")],
    model: ModelOpt = "local/smollm2",
    api_base: ApiBase = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    input_field: InputField = None,
    ideal_field: IdealField = None,
    concurrency: ConcOpt = None,
    max_tokens: MaxTok = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write per-case results (JSONL).")] = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score one prompt on one dataset with one model."""
    from .config import DataSpec, EvalConfig, ScorerSpec
    from .evaluate import eval_prompt
    from .render import case_line, eval_table, progress

    config = EvalConfig(
        data=DataSpec(path=str(dataset), input_field=input_field, ideal_field=ideal_field),
        prompt_path=str(prompt),
        model=_model_spec(model, api_base, max_tokens),
        scorer=ScorerSpec(metric=metric, judge=_model_spec(judge, api_base) if judge else None,
                          rubric=judge_criteria),
        concurrency=concurrency,
    )
    with progress(err, "evaluating", quiet=as_json) as bar:
        def on_result(r: Any) -> None:
            bar.advance(r)
            if verbose and not as_json:
                err.print(case_line({"case_id": r.case_id, "score": r.score, "output": r.output or r.error}),
                          highlight=False, markup=False)

        report = eval_prompt(config, on_result=on_result, on_note=lambda n: err.print(f"[dim]{n}[/]"),
                             on_total=bar.set_total)
    summary = report.summary()
    if output:
        report.write_jsonl(output)
        summary["cases_path"] = str(output)
    if as_json:
        summary.pop("by_role", None)
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        out.print(eval_table(summary, title=f"{prompt.name} on {dataset.name} with {model}"))
        if output:
            err.print(f"per-case results: {output}")


def _duration(text: str | None) -> float | None:
    import re

    if text is None:
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not m or not any(m.groups()):
        _fail(f"--max-time {text!r} is not a duration (fix: write e.g. 90s, 30m, 1h30m)")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + se


def _split(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        parts = tuple(float(x) for x in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p <= 0 for p in parts):
        _fail(f"--split {text!r} is not TRAIN/VAL/TEST (fix: write e.g. 30/30/40 or 0.3/0.3/0.4)")
    return parts  # type: ignore[return-value]


@app.command("optimize")
@_guard
def optimize_cmd(
    dataset: Annotated[Path | None, typer.Argument(help="JSONL or CSV dataset.")] = None,
    prompt: Annotated[Path | None, typer.Argument(help="Starting prompt file (markdown).")] = None,
    model: ModelOpt = "local/smollm2",
    api_base: ApiBase = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    reasoning_model: Annotated[str | None, typer.Option("--reasoning-model", help="Model that diagnoses and "
                                                        "rewrites (default: the task model).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the best prompt here.")] = None,
    target: Annotated[float | None, typer.Option("--target", min=0, max=1, help="Stop at this val score.")] = None,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Stop after N trials with no gain.")] = 10,
    max_calls: Annotated[int | None, typer.Option("--max-calls", min=1, help="Hard limit on paid calls.")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0, help="Hard limit in USD.")] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="e.g. 30m, 1h.")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", min=0, help="Candidates to try (default 24, or "
                          "no limit when --max-calls, --max-cost or --max-time is set).")] = None,
    split_opt: Annotated[str | None, typer.Option("--split", help="TRAIN/VAL/TEST, e.g. 30/30/40.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
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
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Optimize a prompt: diagnose failures, propose rewrites, search with Optuna, verify on held-out test."""
    from .config import Budget, DataSpec, OptimizeConfig, ScorerSpec
    from .optimizer import Optimizer
    from .render import LiveView, print_dry_run, print_optimize

    if resume is None and (dataset is None or prompt is None):
        _fail("DATASET and PROMPT are required (fix: give both, or --resume RUN_ID)")
    resume_ref = None if resume in (None, "latest") else resume
    config = OptimizeConfig(
        data=DataSpec(path=str(dataset or ""), input_field=input_field, ideal_field=ideal_field),
        prompt_path=str(prompt or ""),
        model=_model_spec(model, api_base, max_tokens),
        reasoning=_model_spec(reasoning_model, api_base) if reasoning_model else None,
        scorer=ScorerSpec(metric=metric, judge=_model_spec(judge, api_base) if judge else None, rubric=judge_criteria),
        budget=Budget(max_calls=max_calls, max_cost=max_cost, max_time_s=_duration(max_time), max_trials=max_trials,
                      patience=patience, target=target),
        split=_split(split_opt), seed=seed, concurrency=concurrency, pruning=not no_prune, storage=storage,
        output=str(output) if output else None, strategy=strategy,
    )
    if resume is not None:
        from .store import RunStore

        found = RunStore.open(resume_ref, run_dir=run_dir)
        opt = Optimizer(config, on_event=None, resume=str(found.root))
    else:
        opt = Optimizer(config, run_dir=run_dir)
    est = opt.estimate()
    if dry_run:
        if as_json:
            sys.stdout.write(json.dumps(est) + "\n")
        else:
            print_dry_run(out, err, est)
        return
    replacing = output is not None and output.exists()
    with LiveView(err, quiet=as_json, verbose=verbose) as view:
        opt.on_event = view.on_event
        result = opt.run()
    if replacing:
        err.print(f"[yellow]note:[/] {output} existed and now holds the new best prompt")
    data = result.to_json()
    if report is not None:
        from .report import write_report

        err.print(f"report: {write_report(Path(result.run_dir), report)}")
    if as_json:
        for k in ("baseline_prompt", "best_prompt", "usage"):
            data.pop(k, None)
        sys.stdout.write(json.dumps(data) + "\n")
        return
    print_optimize(out, result)


@app.command("worker")
@_guard
def worker_cmd(
    storage: Annotated[str, typer.Option("--storage", help="Optuna storage URL shared with the run, e.g. "
                                         "postgresql://user@host/db.")],
    study: Annotated[str | None, typer.Option("--study", help="Work on this study only (default: every "
                                              "running reflexopt study).")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to keep polling for a running study.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Join optimize runs in shared storage and evaluate their trials (run it on any number of machines)."""
    from .render import print_worker, worker_events
    from .worker import run_worker

    reports = run_worker(storage, study=study, wait_s=wait, on_event=worker_events(err, quiet=as_json))
    if as_json:
        sys.stdout.write(json.dumps([r.__dict__ for r in reports]) + "\n")
    else:
        print_worker(out, reports)


@app.command("compare")
@_guard
def compare_cmd(
    dataset: Annotated[Path, typer.Argument(help="JSONL or CSV dataset.")],
    prompt: Annotated[Path, typer.Argument(help="Starting prompt file (markdown).")],
    models: Annotated[list[str], typer.Option("-m", "--model", help="A model to compare (repeat: -m A -m B).")],
    api_base: ApiBase = None,
    judge: JudgeOpt = None,
    judge_criteria: RubricOpt = None,
    metric: MetricOpt = None,
    reasoning_model: Annotated[str | None, typer.Option(
        "--reasoning-model", help="Model that diagnoses and rewrites for every model (default: each model).")] = None,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Score the starting prompt only.")] = False,
    max_calls_per_model: Annotated[int | None, typer.Option("--max-calls-per-model", min=1)] = None,
    max_trials: Annotated[int, typer.Option("--max-trials", min=0, help="Candidates per model.")] = 12,
    target: Annotated[float | None, typer.Option("--target", min=0, max=1, help="Score that is good enough.")] = None,
    transfer: Annotated[bool, typer.Option("--transfer", help="Score every tuned prompt on every model.")] = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Models tuned at the same time.")] = 2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    concurrency: ConcOpt = None,
    max_tokens: MaxTok = None,
    report: ReportOpt = None,
    strategy: StrategyOpt = "reflex",
    as_json: JsonOpt = False,
) -> None:
    """Tune a prompt for each model, compare them on one test split, recommend the cheapest good one."""
    from .compare import compare
    from .config import Budget, CompareConfig, DataSpec, ScorerSpec
    from .render import compare_events, print_compare

    if len(models) < 1:
        _fail("give at least one model with -m (fix: -m MODEL_A -m MODEL_B)")
    config = CompareConfig(
        data=DataSpec(path=str(dataset)), prompt_path=str(prompt),
        models=tuple(_model_spec(m, api_base, max_tokens) for m in models),
        reasoning=_model_spec(reasoning_model, api_base) if reasoning_model else None,
        scorer=ScorerSpec(metric=metric, judge=_model_spec(judge, api_base) if judge else None, rubric=judge_criteria),
        budget=Budget(max_calls=max_calls_per_model, max_trials=max_trials, patience=max(1, max_trials)),
        tune=not no_tune, transfer=transfer, target=target, seed=seed, concurrency=concurrency, parallel=parallel,
        strategy=strategy)

    result = compare(config, on_event=compare_events(err, quiet=as_json, tuning=not no_tune)).to_json()
    if report is not None:
        from .report import write_report
        from .store import runs_root

        err.print(f"report: {write_report(runs_root() / result['compare_id'], report)}")
    if as_json:
        for r in result["rows"]:
            r.pop("tuned_prompt", None)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    print_compare(out, result)


@app.command("batch")
@_guard
def batch_cmd(
    jobs: Annotated[Path, typer.Argument(help="Jobs file (YAML): defaults + a list of jobs.")],
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Jobs run at the same time.")] = 1,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL for every job's study.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write one HTML report per job into this "
                                                "directory.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Search strategy for every job (overrides "
                                                 "the jobs file): reflex, mipro or gepa.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-optimize many prompt/model jobs; resumable; exit code 1 when a job regressed beyond its tolerance."""
    from .batch import run_batch
    from .render import batch_events, print_batch

    result = run_batch(jobs, storage=storage, parallel=parallel, on_event=batch_events(err, quiet=as_json),
                       strategy=strategy)
    if report is not None:
        from .report import write_report

        report.mkdir(parents=True, exist_ok=True)
        for row in result["jobs"]:
            if row.get("run_dir") and Path(row["run_dir"], "config.json").exists():
                slug = Path(row["run_dir"]).name
                write_report(Path(row["run_dir"]), report / f"{slug}.html")
        err.print(f"reports: {report}")
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        print_batch(out, result)
    if result["regressions"] or result["failed"]:
        raise typer.Exit(1)


runs_app = typer.Typer(help="Run history: list, show and diff runs (optimize, compare, batch).",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
@_guard
def runs_list(as_json: JsonOpt = False) -> None:
    """Every run: id, date, dataset, model, baseline -> best on test, significance, calls, cost, status."""
    from .render import runs_table
    from .runs import list_runs

    runs = list_runs()
    if as_json:
        sys.stdout.write(json.dumps([r.to_json() for r in runs]) + "\n")
        return
    out.print(runs_table(runs, out.width))


@runs_app.command("show")
@_guard
def runs_show(run: Annotated[str, typer.Argument(help="Run id (or prefix) or directory.")],
              as_json: JsonOpt = False) -> None:
    """Config, trajectory, best prompt and summary of one run."""
    from .render import print_run
    from .runs import show

    data = show(run)
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    print_run(out, data)


@runs_app.command("diff")
@_guard
def runs_diff(a: Annotated[str, typer.Argument(help="First run.")],
              b: Annotated[str, typer.Argument(help="Second run.")], as_json: JsonOpt = False) -> None:
    """Prompt diff of two runs' best prompts, and the test cases whose score changed."""
    from .render import print_diff
    from .runs import diff

    d = diff(a, b)
    if as_json:
        sys.stdout.write(json.dumps(d) + "\n")
        return
    print_diff(out, d)


@app.command("report")
@_guard
def report_cmd(run: Annotated[str, typer.Argument(help="Run id (or prefix), compare id, or directory.")],
               output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write.")] = None,
               ) -> None:
    """Write a self-contained HTML report (opens offline; plots inline)."""
    from .report import write_report
    from .runs import find

    path = write_report(find(run), output)
    out.print(f"report: {path}")
