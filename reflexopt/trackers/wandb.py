"""Weights & Biases tracking (`--track wandb`, extra `reflexopt[wandb]`): the only module that imports wandb.

W&B's own settings apply: `WANDB_API_KEY` (or `wandb login`), `WANDB_MODE=offline` to log without a network
(sync later with `wandb sync`), `WANDB_DIR`, `WANDB_ENTITY`. The project is `--track-experiment`, else
`WANDB_PROJECT`, else "reflexopt". Nested runs (compare's models, batch's jobs) share their parent's group.
Per-trial metrics are logged against the `trial` axis; the verdict goes into the run summary.
"""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def _wandb() -> Any:
    os.environ.setdefault("WANDB_SILENT", "true")  # no banner or sync hints on the terminal
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import wandb
    except ImportError:
        raise ConfigError("--track wandb needs Weights & Biases, which is not installed",
                          fix='pip install "reflexopt[wandb]"') from None
    logging.getLogger("wandb").setLevel(logging.ERROR)
    return wandb


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbBackend:
    name = "wandb"

    def __init__(self, *, experiment: str | None = None) -> None:
        self.wandb = _wandb()
        self.project = experiment or os.environ.get("WANDB_PROJECT") or "reflexopt"
        self.mode = os.environ.get("WANDB_MODE", "online")
        if self.mode not in ("offline", "disabled", "dryrun") and not _has_key():
            raise ConfigError("--track wandb has no W&B API key (WANDB_API_KEY or `wandb login`)",
                              fix="log in, or set WANDB_MODE=offline to log locally and `wandb sync` later")
        self._runs: dict[str, Any] = {}
        self._names: dict[str, str] = {}

    def open(self, *, name: str, params: dict[str, str], tags: dict[str, str], resume: str | None,
             parent: str | None) -> str:
        group = self._names.get(parent, parent) if parent else None
        settings = self.wandb.Settings(console="off", silent=True, quiet=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = self.wandb.init(project=self.project, name=name, id=resume, resume="allow" if resume else None,
                                  config=params, group=group, job_type=tags.get("reflexopt.kind"),
                                  reinit="create_new", settings=settings)
        run.define_metric("trial")
        run.define_metric("*", step_metric="trial")
        run.summary.update(tags)
        self._runs[run.id] = run
        self._names[run.id] = name
        return str(run.id)

    def metrics(self, run: str, values: dict[str, float], step: int) -> None:
        self._runs[run].log({**values, "trial": step})

    def tags(self, run: str, values: dict[str, str]) -> None:
        self._runs[run].summary.update(values)

    def files(self, run: str, paths: Sequence[Path]) -> None:
        r = self._runs[run]
        art = self.wandb.Artifact(f"reflexopt-{run}", type="reflexopt-run")
        for p in paths:
            art.add_file(str(p), name=p.name)
        r.log_artifact(art)

    def note(self, run: str, text: str) -> None:
        self._runs[run].notes = text

    def register_prompt(self, run: str, name: str, text: str, message: str) -> str | None:
        return None

    def close(self, run: str, ok: bool) -> None:
        r = self._runs.pop(run, None)
        if r is not None:
            r.finish(exit_code=0 if ok else 1)


def backend(*, experiment: str | None = None) -> WandbBackend:
    return WandbBackend(experiment=experiment)
