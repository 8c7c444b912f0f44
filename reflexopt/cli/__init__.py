"""The command line: parse options, build a config through the library's builder, call the library, render
with rich (render.py). No logic here.

    app.py       the typer app, consoles, shared options, errors and interrupts
    commands.py  eval, optimize, worker, compare, batch
    history.py   runs list|show|diff, report
    align.py     align (a judge's rubric tuned to people's verdicts)
    config.py    reflexopt.yaml / --config defaults
"""

from __future__ import annotations

import importlib
import signal
import sys

import typer
import typer.main

from . import commands, history  # noqa: F401  (registers the commands on `app`)
from .app import app, fail, on_sigterm, optional_resume

importlib.import_module(f"{__name__}.align")  # registered after the core commands: `--help` lists them first

__all__ = ["app", "main"]


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    from ..errors import ReflexoptError
    from .config import config_file, default_map

    try:
        args, config = config_file(optional_resume(sys.argv[1:]))
        sys.argv[1:] = args
        defaults = default_map(config, typer.main.get_command(app)) if config else None
    except ReflexoptError as e:
        try:
            fail(str(e))
        except typer.Exit as x:
            sys.exit(x.exit_code)
    try:
        app(default_map=defaults)
    except ReflexoptError as e:  # pragma: no cover - app() normally exits via SystemExit
        fail(str(e))
    finally:
        # the command is over (its result printed, its files written): a SIGTERM while the process shuts down
        # changes nothing, and must not turn a finished command into one killed by a signal (exit -15)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
