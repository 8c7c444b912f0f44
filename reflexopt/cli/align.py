"""`reflexopt align`: tune a judge's rubric to people's verdicts (the library's align.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..paths import check_writable
from .app import ApiBase, DataArg, JsonOpt, ReportOpt, VerboseOpt, app, err, fail, guard


@app.command("align")
@guard
def align_cmd(
    dataset: DataArg,
    responses: Annotated[str, typer.Option("--responses", help="Column holding the graded responses.")],
    human: Annotated[str, typer.Option("--human", help="Column of people's verdicts: pass/fail, or scores.")],
    judge: Annotated[str, typer.Option("--judge", help="Judge model id whose rubric is tuned.")],
    judge_criteria: Annotated[str, typer.Option("--judge-criteria", help="The rubric to tune: a file or a shipped "
                                                "rubric name.")],
    reasoning_model: Annotated[str | None, typer.Option("--reasoning-model", help="Model that reads the "
                                                        "disagreements and rewrites the rubric (default: the "
                                                        "judge).")] = None,
    api_base: ApiBase = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the tuned rubric here.")] = None,
    max_calls: Annotated[int | None, typer.Option("--max-calls", min=1, help="Hard limit on calls.")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", min=0, help="Candidates to try (default 24, "
                                                   "or no limit with --max-calls).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Same seed: same split and run.")] = 0,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Directory for this run.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an alignment run: its id, or none for "
                                               "the latest (it keeps its settings; --max-calls and --max-trials "
                                               "may change).")] = None,
    report: ReportOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Align a judge with people: tune its rubric so its pass/fail verdicts agree with theirs on held-out rows."""
    from ..config import Budget, align_config
    from ..optimizer import Optimizer
    from .commands import show_result
    from .render import LiveView

    if report is not None:
        check_writable(report, "--report", reads={"the dataset": dataset, "the -o file": output})
    config = align_config(dataset, judge=judge, rubric=judge_criteria, responses=responses, human=human,
                          reasoning_model=reasoning_model, api_base=api_base, output=output,
                          budget=Budget(max_calls=max_calls, max_trials=max_trials), seed=seed)
    budget = {k: v for k, v in (("max_calls", max_calls), ("max_trials", max_trials)) if v is not None}
    opt = Optimizer(config, run_dir=run_dir, resume=resume, changes={"budget": budget} if budget else None)
    if opt.resumed and opt.config.align is None:
        fail(f"run {opt.store.run_id if opt.store else resume} is not an alignment (fix: continue it with "
             "reflexopt optimize --resume)")
    with LiveView(err, quiet=as_json, verbose=verbose) as view:
        opt.on_event = view.on_event
        result = opt.run()
    show_result(result, report, as_json)
    if output is not None:
        err.print(f"tuned rubric: {output} (use it with --judge-criteria {output})")
