"""Batch re-optimization: many prompt/model jobs from a YAML file, warm-started from their previous best.

    defaults:                    # optional, merged into every job
      metric: contains
      budget: {max_calls: 600, max_trials: 8}
      tolerance: 0.02
    jobs:
      - name: reviews
        dataset: data/reviews.jsonl   # relative to the jobs file
        prompt: prompts/reviews.md
        model: openai/gpt-4o-mini     # or models: [a, b]

Each invocation runs one *round*. A round that was interrupted is resumed (finished jobs are skipped, the
interrupted run continues); once a round is complete, the next invocation starts a new round in which every job
starts from its previous best prompt, re-tunes, and is flagged as a regression when its best test score falls
below the previous round's by more than its tolerance. Responses are cached per round, so a provider's update
of a model behind the same id is measured afresh.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import SEED_MAX, Budget, OptimizeConfig, optimize_config
from .errors import ConfigError, InputFileError, ReflexoptError
from .events import Event
from .parallel import map_threads
from .paths import hold_lock, home_dir
from .store import read_json
from .yamlfile import load_yaml


class JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    dataset: str
    prompt: str
    model: str | None = None
    models: list[str] | None = None
    api_base: str | None = None
    judge: str | None = None
    judge_criteria: str | None = None
    metric: str | None = None
    reasoning_model: str | None = None
    max_tokens: int | None = Field(None, gt=0)
    input_field: str | None = None
    ideal_field: str | None = None
    budget: Budget = Budget(max_trials=8)
    tolerance: float = Field(0.02, ge=0, le=1)
    strategy: str = "reflex"
    seed: int = Field(0, ge=0, le=SEED_MAX)

    def model_ids(self) -> list[str]:
        return list(self.models or ([self.model] if self.model else ["local/smollm2"]))


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """YAML path -> 1-based line, for error messages."""
    out: dict[tuple[Any, ...], int] = {}

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                out[path + (k.value,)] = k.start_mark.line + 1
                walk(v, (*path, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def job_config(j: JobSpec, model: str, *, prompt: Path | None = None, cache_tag: str | None = None,
               storage: str | None = None) -> OptimizeConfig:
    """The optimize config of one job on one model. Every model (task, judge, reasoning) takes `ID@settings`."""
    return optimize_config(j.dataset, prompt or j.prompt, model=model, api_base=j.api_base, max_tokens=j.max_tokens,
                           cache_tag=cache_tag, reasoning_model=j.reasoning_model, judge=j.judge,
                           rubric=j.judge_criteria, metric=j.metric, input_field=j.input_field,
                           ideal_field=j.ideal_field, budget=j.budget, seed=j.seed, storage=storage,
                           strategy=j.strategy)


def check_job(j: JobSpec) -> list[str]:
    """Everything about a job that can be checked before any model call: model ids and settings, the dataset,
    the prompt and its placeholders, the metric or the judge and its rubric. Problems as one-line texts."""
    from .data import load_dataset
    from .evaluate import make_scorer
    from .models import resolve_backend
    from .prompt import load_prompt
    from .strategies import get_strategy

    problems: list[str] = []
    try:
        configs = [job_config(j, m) for m in j.model_ids()]
        get_strategy(j.strategy)
    except (ValueError, ReflexoptError) as e:
        return [" ".join(str(e).split())]
    cfg = configs[0]
    try:
        cases = load_dataset(cfg.data.path, input_field=cfg.data.input_field, ideal_field=cfg.data.ideal_field)
        load_prompt(cfg.prompt_path).check_fields(cases)
        make_scorer(cfg.scorer, cases)
    except ReflexoptError as e:
        problems.append(str(e))
    for spec in [c.model for c in configs] + [x for x in (cfg.reasoning, cfg.scorer.judge) if x is not None]:
        if spec.is_local:
            continue
        try:
            resolve_backend(spec)
        except ReflexoptError as e:
            problems.append(str(e))
    return problems


def load_jobs(path: str | Path) -> list[JobSpec]:
    """Read and validate a jobs file; every problem is reported with its line, in one error."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such jobs file", fix="check the path")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputFileError(p, f"bytes are not UTF-8 (offset {e.start})",
                             fix="re-save the jobs file as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputFileError(p, f"not valid YAML ({getattr(e, 'problem', e)})",
                             line=None if line is None else line + 1, fix="fix the YAML syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise InputFileError(p, "expected a mapping with a non-empty `jobs:` list", line=1,
                             fix="see `reflexopt batch --help` for the format")
    unknown = set(data) - {"defaults", "jobs"}
    lines = _line_index(text)
    problems: list[str] = [f"{p}:{lines.get((k,), 1)}: unknown top-level key `{k}` (use defaults, jobs)"
                           for k in sorted(unknown)]
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"{p}:{lines.get(('defaults',), 1)}: `defaults` must be a mapping")
        defaults = {}
    jobs: list[JobSpec] = []
    names: set[str] = set()
    folders: dict[str, str] = {}
    for i, raw in enumerate(data["jobs"]):
        where = lines.get(("jobs", i), 0)
        if not isinstance(raw, dict):
            problems.append(f"{p}:{where}: jobs[{i}] must be a mapping")
            continue
        merged = {**defaults, **raw}
        if isinstance(defaults.get("budget"), dict) and isinstance(raw.get("budget"), dict):
            merged["budget"] = {**defaults["budget"], **raw["budget"]}
        label = f"jobs[{i}]" + (f" ({raw.get('name')})" if raw.get("name") else "")
        job: JobSpec | None = None
        try:
            job = JobSpec.model_validate(merged)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                line = lines.get(("jobs", i) + loc) or lines.get(("defaults",) + loc) or where
                problems.append(f"{p}:{line}: {label}.{'.'.join(map(str, loc))}: {err['msg']}")
        for field in ("dataset", "prompt"):
            value = merged.get(field)
            if isinstance(value, str) and not (p.parent / value).is_file():
                line = lines.get(("jobs", i, field)) or where
                problems.append(f"{p}:{line}: {label}.{field}: no such file {value!r} (relative to the jobs file)")
        if merged.get("model") and merged.get("models"):
            problems.append(f"{p}:{where}: {label}: give `model` or `models`, not both")
        name = str(merged.get("name"))
        if name in names:
            problems.append(f"{p}:{where}: {label}: duplicate job name {name!r}")
        names.add(name)
        if job is not None and job.models is not None and not job.models:
            problems.append(f"{p}:{lines.get(('jobs', i, 'models')) or where}: {label}.models: the list is empty "
                            "(name at least one model, or drop `models` for the embedded model)")
            job = None
        if job is not None:
            job = job.model_copy(update={"dataset": str((p.parent / job.dataset).resolve()),
                                         "prompt": str((p.parent / job.prompt).resolve())})
            if (p.parent / job.dataset).is_file() and (p.parent / job.prompt).is_file():
                problems += [f"{p}:{where}: {label}: {x}" for x in check_job(job)]
            jobs.append(job)
            for model in job.model_ids():  # two keys with one folder would share a run and its prompt file
                slug = Unit(job, model).slug
                if slug in folders and folders[slug] != job.name:
                    problems.append(f"{p}:{where}: {label}: its folder would be {slug!r}, as for job "
                                    f"{folders[slug]!r} (names differ only in characters a folder cannot hold)")
                folders[slug] = job.name
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the jobs file: " + " | ".join(problems),
                          fix="correct each location listed")
    return jobs


@dataclass(frozen=True)
class Unit:
    job: JobSpec
    model: str

    @property
    def key(self) -> str:
        return self.job.name if len(self.job.model_ids()) == 1 else f"{self.job.name} @ {self.model}"

    @property
    def slug(self) -> str:
        """The unit's folder name: its key in safe characters, never "." or ".." (a leading dot becomes "_")."""
        return re.sub(r"^\.", "_", re.sub(r"[^A-Za-z0-9._-]+", "_", self.key))


class Batch:
    def __init__(self, jobs_path: str | Path, *, storage: str | None = None, parallel: int = 1,
                 on_event: Event | None = None, strategy: str | None = None) -> None:
        from .strategies import get_strategy

        self.jobs_path = Path(jobs_path).resolve()
        self.jobs = load_jobs(self.jobs_path)
        if strategy is not None:
            get_strategy(strategy)
            self.jobs = [j.model_copy(update={"strategy": strategy}) for j in self.jobs]
        self.storage = storage
        self.parallel = parallel
        self.on_event: Event = on_event or (lambda kind, data: None)
        tag = hashlib.sha256(str(self.jobs_path).encode()).hexdigest()[:8]
        self.root = home_dir() / "batch" / f"{self.jobs_path.stem}-{tag}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {}  # read by run(), under the batch's lock

    # ----------------------------------------------------------------- state
    def _load(self) -> dict[str, Any]:
        f = self.root / "state.json"
        if f.exists():
            return read_json(f, fix="restore it, or delete it: the batch then starts again at round 1, and a job "
                                    "whose round-1 run finished is read back from it at no cost")
        return {"jobs_file": str(self.jobs_path), "rounds": []}

    def _save(self) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2), encoding="utf-8")
        tmp.replace(self.root / "state.json")

    def units(self) -> list[Unit]:
        return [Unit(j, m) for j in self.jobs for m in j.model_ids()]

    def _current_round(self) -> dict[str, Any]:
        rounds = self.state["rounds"]
        if rounds and not rounds[-1]["done"]:
            return dict(rounds[-1])
        rnd = {"n": len(rounds) + 1, "started": time.time(), "done": False, "units": {}}
        rounds.append(rnd)
        self._save()
        return rnd

    def _previous(self, unit: Unit, n: int) -> dict[str, Any] | None:
        for rnd in reversed(self.state["rounds"][: n - 1]):
            u = rnd["units"].get(unit.key)
            if u and u.get("status") == "done":
                return dict(u)
        return None

    # ------------------------------------------------------------------- run
    def _run_unit(self, unit: Unit, rnd: dict[str, Any]) -> dict[str, Any]:
        from .optimizer import Optimizer

        n = rnd["n"]
        done = rnd["units"].get(unit.key)
        if done and done.get("status") == "done":
            self.on_event("skip", {"unit": unit.key})
            return dict(done, skipped=True)
        prev = self._previous(unit, n)
        start_prompt = Path(prev["best_prompt_file"]) if prev else Path(unit.job.prompt)
        run_dir = self.root / f"round-{n}" / unit.slug
        config = job_config(unit.job, unit.model, prompt=start_prompt, cache_tag=f"batch-{self.root.name}-r{n}",
                            storage=self.storage)
        self.on_event("unit_start", {"unit": unit.key, "round": n, "warm_start": bool(prev),
                                     "resume": (run_dir / "config.json").exists()})
        with self._lock:
            rnd["units"][unit.key] = {"status": "running", "run_dir": str(run_dir), "model": unit.model}
            self._commit(rnd)
        try:
            summary_file = run_dir / "summary.json"
            if summary_file.exists():
                result = read_json(summary_file)
            else:
                opt = Optimizer(config, run_dir=run_dir)
                result = opt.run().to_json()
        except Exception as e:  # noqa: BLE001 - a failing job is recorded; the others go on
            entry: dict[str, Any] = {"status": "failed", "run_dir": str(run_dir), "model": unit.model,
                     "error": f"{type(e).__name__}: {e}"[:400]}
        else:
            best_file = self.root / "prompts" / f"{unit.slug}-r{n}.md"
            best_file.parent.mkdir(parents=True, exist_ok=True)
            best_file.write_text(result["best_prompt"], encoding="utf-8")
            previous_best = prev["best_test"] if prev else None
            entry = {
                "status": "done", "run_dir": str(run_dir), "run_id": result["run_id"], "model": unit.model,
                "warm_start": bool(prev), "previous_best": previous_best,
                "new_baseline": result["baseline_test"], "new_best": result["best_test"],
                "best_test": result["best_test"], "significant": result["significant"],
                "model_calls": result["model_calls"], "cost_usd": result["cost_usd"],
                "best_prompt_file": str(best_file), "tolerance": unit.job.tolerance,
                "regression": previous_best is not None and result["best_test"] < previous_best - unit.job.tolerance,
            }
        with self._lock:
            rnd["units"][unit.key] = entry
            self._commit(rnd)
        self.on_event("unit_done", {"unit": unit.key, **entry})
        return entry

    def _commit(self, rnd: dict[str, Any]) -> None:
        self.state["rounds"][rnd["n"] - 1] = rnd
        self._save()

    def run(self) -> dict[str, Any]:
        lock = hold_lock(self.root / "lock", f"batch {self.jobs_path} is running in another process",
                         fix="wait for it to finish, or stop it and run the batch again to resume")
        try:
            self.state = self._load()  # what the process that held the lock last committed
            return self._run()
        finally:
            lock.release()

    def _run(self) -> dict[str, Any]:
        rnd = self._current_round()
        self.on_event("round", {"round": rnd["n"], "resumed": bool(rnd["units"]), "state_dir": str(self.root)})
        units = self.units()
        entries = map_threads(lambda u: self._run_unit(u, rnd), units, self.parallel)
        with self._lock:
            rnd["done"] = all(e["status"] == "done" for e in entries)
            self._commit(rnd)
        rows = [{"job": u.key, **{k: v for k, v in e.items() if k != "best_prompt_file"}}
                for u, e in zip(units, entries)]
        return {"round": rnd["n"], "state_dir": str(self.root), "jobs": rows,
                "regressions": [r["job"] for r in rows if r.get("regression")],
                "failed": [r["job"] for r in rows if r["status"] == "failed"], "complete": rnd["done"]}


def run_batch(jobs_path: str | Path, *, storage: str | None = None, parallel: int = 1,
              on_event: Event | None = None, strategy: str | None = None) -> dict[str, Any]:
    """Run (or resume) one round of a jobs file (the Python API behind `reflexopt batch`). `strategy`
    overrides every job's own."""
    return Batch(jobs_path, storage=storage, parallel=parallel, on_event=on_event, strategy=strategy).run()
