"""Run history: `runs list|show|diff|rm|prune` and `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import JsonOpt, app, err, guard, out, print_json
from .app import show as show_result

runs_app = typer.Typer(help="Run history: list, show, diff and remove runs (optimize, compare, eval, batch).",
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


@runs_app.command("rm")
@guard
def runs_rm(refs: Annotated[list[str], typer.Argument(help="Run ids (or prefixes) or directories.")],
            dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
            as_json: JsonOpt = False) -> None:
    """Remove runs from the history (the response cache is kept). A run of a batch, or one still running, is
    refused, and then nothing is removed."""
    from ..runs import remove

    _removed(remove(refs, dry_run=dry_run), dry_run, as_json)


@runs_app.command("prune")
@guard
def runs_prune(older_than: Annotated[float | None, typer.Option(
                   "--older-than", min=0, help="Only runs started more than this many days ago.")] = None,
               status: Annotated[list[str] | None, typer.Option(
                   "--status", help="Only runs with this status: done, failed, interrupted, unreadable (repeat).")]
               = None,
               keep: Annotated[int, typer.Option("--keep", min=0, help="Keep the newest N runs whatever else.")] = 0,
               dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")]
               = False,
               as_json: JsonOpt = False) -> None:
    """Remove old or failed runs from the history (batch runs and running ones are never touched; the response
    cache is kept)."""
    from ..runs import prune

    _removed(prune(older_than_days=older_than, statuses=status or (), keep=keep, dry_run=dry_run), dry_run,
             as_json)


def _removed(rows: list[dict[str, Any]], dry_run: bool, as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    verb = "would remove" if dry_run else "removed"
    for r in rows:
        out.print(f"{verb} {r['id']}", markup=False, highlight=False)
    size = sum(r["bytes"] for r in rows)
    out.print(f"{verb} {len(rows)} run{'' if len(rows) == 1 else 's'} ({size / 1e6:.1f} MB); the response cache "
              "is kept", highlight=False)


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
