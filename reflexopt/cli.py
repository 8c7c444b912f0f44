"""The command line: parse options, build config, call the library, render with rich. No logic here.

Heavy imports (litellm, numpy, the library) happen inside commands so `reflexopt --help` stays instant.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Evaluate and optimize LLM prompts on your own data, with your own judge.")
out = Console()
err = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("-m", "--model", help="Task model: a litellm id, or local/smollm2 (offline).")]
ApiBase = Annotated[str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible endpoint.")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Judge model id; scores with a rubric.")]
RubricOpt = Annotated[str | None, typer.Option("--judge-criteria", help="Rubric file or shipped rubric name.")]
MetricOpt = Annotated[str | None, typer.Option("--metric", help="exact, contains, regex:P, f1, rouge-l, json, "
                                               "json-schema:FILE, max-length:N")]
InputField = Annotated[str | None, typer.Option("--input-field", help="Column holding the input.")]
IdealField = Annotated[str | None, typer.Option("--ideal-field", help="Column holding the reference answer.")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Cases in flight at once.")]
MaxTok = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Completion token limit for the task model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


@app.callback()
def _root() -> None:
    """Evaluate and optimize LLM prompts on your own data, with your own judge."""


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    from .errors import ReflexoptError

    try:
        app()
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
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _model_spec(model: str, api_base: str | None, max_tokens: int | None = None) -> Any:
    from pydantic import ValidationError

    from .config import ModelSpec

    try:
        return ModelSpec(id=model, api_base=api_base, max_tokens=max_tokens)
    except ValidationError as e:
        _fail(f"invalid model options: {e.errors()[0]['msg']}")


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
    as_json: JsonOpt = False,
) -> None:
    """Score one prompt on one dataset with one model."""
    from .config import DataSpec, EvalConfig, ScorerSpec
    from .evaluate import eval_prompt
    from .render import eval_table, progress

    config = EvalConfig(
        data=DataSpec(path=str(dataset), input_field=input_field, ideal_field=ideal_field),
        prompt_path=str(prompt),
        model=_model_spec(model, api_base, max_tokens),
        scorer=ScorerSpec(metric=metric, judge=_model_spec(judge, api_base) if judge else None,
                          rubric=judge_criteria),
        concurrency=concurrency,
    )
    with progress(err, "evaluating", quiet=as_json) as bar:
        report = eval_prompt(config, on_result=lambda r: bar.advance(r), on_note=lambda n: err.print(f"[dim]{n}[/]"),
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
