"""The typer app, the consoles, the shared options, and how a command ends: a library error becomes one line
and exit 2; Ctrl-C and SIGTERM stop the process within seconds."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import typer.main

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Evaluate and optimize LLM prompts on your own data, with your own judge.")


class _Console:
    """A rich Console made on first use: `--help` and argument errors never import rich (about 25 ms)."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # piped output gets wide tables instead of rich's 80-column default
            self._console = Console(stderr=self._stderr, width=None if stream.isatty() else 160)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def __enter__(self) -> Console:  # rich's Live enters its console; dunders are not found by __getattr__
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


out: Console = _Console()  # type: ignore[assignment]
err: Console = _Console(stderr=True)  # type: ignore[assignment]

ModelOpt = Annotated[str, typer.Option("-m", "--model", help="Task model: a litellm id, or local/smollm2 (offline); "
                                       "settings after @, e.g. local/smollm2@temperature=0.7,max_tokens=64.")]
PricesOpt = Annotated[Path | None, typer.Option(
    "--prices", help="YAML/JSON file of prices per model id: price_in/price_out (USD per million tokens) or gpu_hour "
                     "(USD per hour of a self-hosted model's machine).")]
ApiBase = Annotated[str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible endpoint.")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Judge model id; scores with a rubric.")]
RubricOpt = Annotated[str | None, typer.Option("--judge-criteria", help="Rubric file or shipped rubric name.")]
MetricOpt = Annotated[str | None, typer.Option("--metric", help="exact, contains, regex:P, f1, rouge-l, json, "
                                               "json-schema:FILE, max-length:N, or FILE.py:FUNCTION (your own)")]
InputField = Annotated[str | None, typer.Option("--input-field", help="Column holding the input.")]
IdealField = Annotated[str | None, typer.Option("--ideal-field", help="Column holding the reference answer.")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Cases in flight at once (default: 8 for "
                                             "an API model, 2 for the embedded model).")]
BalancedOpt = Annotated[bool, typer.Option("--balanced", help="Label tasks: val and test hold as many cases of "
                                           "each label (the rest go to train), so the score weighs every label "
                                           "alike (accuracy becomes balanced accuracy) and answering one label "
                                           "scores one over the number of labels.")]
DataArg = Annotated[Path, typer.Argument(metavar="DATASET", help="JSONL, JSON array or CSV dataset.")]
MaxTok = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Completion token limit for the task model.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show each case's output and score as it comes.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Also write a self-contained HTML report here.")]
PipelineOpt = Annotated[str | None, typer.Option("--pipeline", help="Your own program as the task: FILE.py:FUNCTION, "
                                                "called as FUNCTION(input, prompts).")]
PromptsOpt = Annotated[list[str] | None, typer.Option("--prompt", help="A prompt your pipeline reads, as NAME=FILE "
                                                      "(repeat for each).")]
PipelineTimeoutOpt = Annotated[float | None, typer.Option("--pipeline-timeout", min=1, help="Seconds a pipeline may "
                                                          "take on one case (default 300).")]
TrackOpt = Annotated[list[str] | None, typer.Option("--track", help="Log the run to an experiment tracker: mlflow or "
                                                   "wandb (repeat for both; extras reflexopt[mlflow], [wandb]).")]
TrackExpOpt = Annotated[str | None, typer.Option("--track-experiment", help="MLflow experiment / W&B project "
                                                 "(default: MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT, else reflexopt).")]
RegisterOpt = Annotated[str | None, typer.Option("--register-prompt", help="Register the best prompt as a new "
                                                 "version of this name in MLflow's prompt registry.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="Search strategy: reflex (reflexopt's own), mipro "
                                          "(DSPy MIPROv2), gepa (DSPy GEPA) or simba (DSPy SIMBA).")]


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


def fail(message: str, code: int = 2) -> NoReturn:
    """One error line. Every message is redacted first: a key given on the command line (`-m ID@api_key=...`)
    is never echoed back."""
    from ..models.base import redact

    text = re.sub(r"(?<!\\)\[redacted\]", r"\\[redacted]", redact(message))  # shown as written, not as markup
    err.print(f"[bold red]error:[/] {text}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C's KeyboardInterrupt is. A KeyboardInterrupt because asyncio
    lets only that (and SystemExit) out of its loop: raised while the loop runs a task (a DSPy strategy's calls),
    any other exception was kept in that task and the run went on."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(128 + signum)


def _stop_now(code: int) -> NoReturn:
    """End the process within seconds on Ctrl-C / SIGTERM: stop the local model server, then exit without
    joining worker threads (compare and batch run models in threads that may be mid-call). Nothing is lost:
    every run writes its calls, scores and trials as they happen, and resumes from them."""
    err.print("interrupted: work done so far is kept (run the same command, or --resume, to continue)")
    try:
        from ..models.local import stop_all

        stop_all()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def optional_resume(argv: list[str]) -> list[str]:
    """`--resume` may stand alone (resume the latest run) or take a run id."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "latest")
            break
    return out


def guard(fn: Any) -> Any:
    """Turn library errors into one line and exit code 2; Ctrl-C into exit 130 (servers stop at exit)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import ReflexoptError, disk_full

        try:
            return fn(*args, **kwargs)
        except ReflexoptError as e:
            fail(str(e).replace("[", "\\["))
        except Exception as e:  # a full disk is the user's to fix, in one line; anything else is a bug to show
            where = disk_full(e)
            if where is None:
                raise
            from ..paths import home_dir

            place = os.path.dirname(where) if where else home_dir()
            fail(f"the disk is full (writing in {place}) (fix: free some space there, then run the same command "
                 "again: a run continues where it stopped with --resume, and nothing written so far is lost)")
        except Interrupted as e:
            _stop_now(e.code)
        except KeyboardInterrupt:
            _stop_now(130)

    return wrapper



def print_json(data: object) -> None:
    """`--json`: one JSON object on stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def show(data: Any, render: Callable[[Console, Any], None], *, as_json: bool) -> None:
    """A command's result: one JSON object with `--json`, else rendered on stdout."""
    if as_json:
        print_json(data)
    else:
        render(out, data)
