"""Run history: `runs list|show|diff` and `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import JsonOpt, app, err, guard, out, print_json
from .app import show as show_result

runs_app = typer.Typer(help="Run history: list, show and diff runs (optimize, compare, eval, batch).",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
@guard
def runs_list(as_json: JsonOpt = False) -> None:
    """Every run: id, date, dataset, model, baseline -> best on test, significance, calls, cost, status."""
    from ..runs import list_runs
    from .render import runs_table

    runs = list_runs()
    if as_json:
        print_json([r.to_json() for r in runs])
        return
    out.print(runs_table(runs, out.width))


@runs_app.command("show")
@guard
def runs_show(run: Annotated[str, typer.Argument(help="Run id (or prefix) or directory.")],
              as_json: JsonOpt = False) -> None:
    """Config, trajectory, best prompt and summary of one run."""
    from ..runs import show
    from .render import print_run

    show_result(show(run), print_run, as_json=as_json)


@runs_app.command("diff")
@guard
def runs_diff(a: Annotated[str, typer.Argument(help="First run.")],
              b: Annotated[str, typer.Argument(help="Second run.")],
              prompt: Annotated[str | None, typer.Option(
                  "--prompt", help="Of an eval of several prompts, the one to compare (its path or file name; "
                                   "default: the first).")] = None,
              as_json: JsonOpt = False) -> None:
    """Prompt diff of two runs' best prompts (an eval's prompt), and the test cases whose score changed."""
    from ..runs import diff
    from .render import print_diff

    show_result(diff(a, b, prompt), print_diff, as_json=as_json)


@app.command("report")
@guard
def report_cmd(run: Annotated[str, typer.Argument(help="Run id (or prefix), compare id, or directory.")],
               output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write.")] = None,
               ) -> None:
    """Write a self-contained HTML report (opens offline; plots inline)."""
    from ..paths import check_writable
    from ..runs import find, write_run_report

    if output is not None:
        check_writable(output, "-o")
    out.print(f"report: {write_run_report(find(run), output)}")


@app.command("serve")
@guard
def serve_cmd(port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
              host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback lets "
                                                "others on the network read your runs.")] = "127.0.0.1",
              refresh: Annotated[int, typer.Option("--refresh", min=1, help="Seconds between reloads of a "
                                                   "running run's page.")] = 3) -> None:
    """Open the run history and every run's report in a browser; a running run's page updates as trials finish.
    Read-only: it starts nothing and reads only reflexopt's own folders."""
    from ..serve import is_loopback, serve

    if not is_loopback(host):
        err.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can read every prompt, dataset "
                  "row and output in your runs (there is no login)")
    try:
        serve(host, port, refresh_s=refresh,
              on_ready=lambda url: err.print(f"serving the runs in {runs_root_text()} at {url} (Ctrl-C stops)"))
    except KeyboardInterrupt:
        err.print("stopped")


def runs_root_text() -> str:
    from ..paths import home_dir

    return str(home_dir())
