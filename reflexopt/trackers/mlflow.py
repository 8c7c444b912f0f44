"""MLflow tracking (`--track mlflow`, extra `reflexopt[mlflow]`): the only module that imports mlflow.

Where runs go is MLflow's own setting: `MLFLOW_TRACKING_URI` (a server, `sqlite:///mlflow.db`, a `file:` store);
unset, MLflow's default (a `mlflow.db` SQLite store in the working directory). The experiment is
`--track-experiment`, else `MLFLOW_EXPERIMENT_NAME`, else "reflexopt".
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.base import redact


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and SQLAlchemy's deprecation and future warnings are not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _mlflow() -> Any:
    # MLflow reads these when it first makes a request: an unreachable server fails in seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        with _quiet():
            import mlflow
    except ImportError:
        raise ConfigError("--track mlflow needs MLflow, which is not installed",
                          fix='pip install "reflexopt[mlflow]"') from None
    for name in ("mlflow", "alembic"):  # migrations and store notes are not the user's business
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow


class MlflowBackend:
    name = "mlflow"
    registry = True

    def __init__(self, *, experiment: str | None = None) -> None:
        self.mlflow = _mlflow()
        from mlflow import MlflowClient

        uri = self.mlflow.get_tracking_uri()
        self.client = MlflowClient()
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "reflexopt"
        try:  # the pre-flight: the store answers (and the experiment exists) before any model call
            with _quiet():
                exp = self.client.get_experiment_by_name(name)
                self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(name)
        except Exception as e:  # noqa: BLE001 - any failure here means the tracking store cannot be used
            msg = redact(str(e)).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ConfigError(f"the MLflow tracking store {redact(uri)} cannot be used: {msg}",
                              fix="start the server or fix MLFLOW_TRACKING_URI (or drop --track mlflow)") from None

    def open(self, *, name: str, params: dict[str, str], tags: dict[str, str], resume: str | None,
             parent: str | None) -> str:
        with _quiet():
            return self._open(name, params, tags, resume, parent)

    def _open(self, name: str, params: dict[str, str], tags: dict[str, str], resume: str | None,
              parent: str | None) -> str:
        from mlflow.entities import Param, RunTag

        if resume:
            try:
                self.client.update_run(resume, status="RUNNING")
                return resume
            except Exception:  # noqa: BLE001 - the old run is gone (another store): start a new one
                pass
        all_tags = {**tags, "mlflow.runName": name, "mlflow.source.name": "reflexopt"}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        rid: str = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(rid, params=items[i:i + 100])
        self.client.log_batch(rid, tags=[RunTag("reflexopt.tracker", "mlflow")])
        return rid

    def metrics(self, run: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with _quiet():
            self.client.log_batch(run, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def tags(self, run: str, values: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        with _quiet():
            self.client.log_batch(run, tags=[RunTag(k, v) for k, v in values.items()])

    def files(self, run: str, paths: Sequence[Path]) -> None:
        with _quiet():
            for p in paths:
                self.client.log_artifact(run, str(p))

    def register_prompt(self, run: str, name: str, text: str, message: str) -> str | None:
        with _quiet():
            version = self.mlflow.genai.register_prompt(name=name, template=text, commit_message=message,
                                                        tags={"reflexopt.mlflow_run": run})
            self.client.link_prompt_version_to_run(run, version)  # the run's page lists it
        return f"prompts:/{version.name}/{version.version}"

    def note(self, run: str, text: str) -> None:
        self.tags(run, {"mlflow.note.content": text})  # the run's description in the UI

    def close(self, run: str, ok: bool) -> None:
        with _quiet():
            self.client.set_terminated(run, status="FINISHED" if ok else "FAILED")


def backend(*, experiment: str | None = None) -> MlflowBackend:
    return MlflowBackend(experiment=experiment)
