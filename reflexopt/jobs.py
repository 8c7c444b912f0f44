"""The batch jobs file: its schema (JobSpec), the parser that names every problem with its file and line, and
the optimize config each job and model becomes. The rounds that run the jobs are batch.py's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import SEED_MAX, Budget, OptimizeConfig, optimize_config
from .errors import ConfigError, InputFileError, ReflexoptError
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
    balanced: bool = False  # optimize --balanced: val and test with as many cases of each label
    pipeline: str | None = None  # refused with its fix (check_job): batch rounds re-tune prompt files

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
                           ideal_field=j.ideal_field, budget=j.budget, seed=j.seed, balanced=j.balanced,
                           storage=storage, strategy=j.strategy)


def check_job(j: JobSpec) -> list[str]:
    """Everything about a job that can be checked before any model call: model ids and settings, the dataset,
    the prompt and its placeholders, the metric or the judge and its rubric. Problems as one-line texts."""
    from .data import load_dataset
    from .models import resolve_backend
    from .prompt import load_prompt
    from .scoring import make_scorer
    from .strategies import get_strategy

    problems: list[str] = []
    if j.pipeline is not None:
        return ["batch does not run pipelines (its rounds warm-start from one tuned prompt file per job): run "
                f"`reflexopt optimize DATASET --pipeline {j.pipeline} --prompt NAME=FILE ...` for this job instead"]
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


