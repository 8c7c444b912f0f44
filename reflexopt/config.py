"""Frozen configuration records, and the one builder that makes them from user-level values (`ID@settings` model
strings, duration and split texts). The CLI, the jobs file and the Python API all build through it; the rest
of the library only reads the records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

LOCAL_MODEL = "local/smollm2"
SEED_MAX = 2**32 - 1  # numpy (and so optuna) take seeds from 0 to this


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Frozen):
    """How to reach one model and how to call it."""

    id: str = Field(LOCAL_MODEL, description="litellm model id, `local/smollm2`, or a registered fake id")
    api_base: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="per-call timeout")
    concurrency: int | None = Field(None, gt=0, description="in-flight calls; None picks per provider")
    max_retries: int = Field(4, ge=0)
    cache_tag: str | None = Field(None, description="separates cached responses, e.g. per batch round, so a "
                                  "provider's update of a model behind the same id is measured afresh")
    price_in: float | None = Field(None, ge=0, description="USD per million prompt tokens (overrides litellm's "
                                                          "price map; for self-hosted or unlisted models)")
    price_out: float | None = Field(None, ge=0, description="USD per million completion tokens")
    gpu_hour: float | None = Field(None, ge=0, description="USD per hour of the machine serving a self-hosted "
                                   "model: compare converts it through the throughput it measures")
    price_from: str | None = Field(None, description="where the price settings came from (a prices file)")

    @field_validator("id")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model id is empty")
        return v.strip()

    @property
    def label(self) -> str:
        """The id plus any sampling settings, e.g. `local/smollm2@temperature=0.8` (tells specs of one id apart)."""
        extra = {k: v for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens)) if v is not None}
        return self.id + ("@" + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else "")

    @classmethod
    def parse(cls, text: str, **defaults: object) -> ModelSpec:
        """`ID` or `ID@key=value,...` with keys temperature, max_tokens, timeout_s, concurrency, and price_in /
        price_out (USD per million tokens, for a model litellm has no price for) or gpu_hour (USD per hour)."""
        model_id, _, settings = text.partition("@")
        values: dict[str, object] = {k: v for k, v in defaults.items() if v is not None}
        for part in filter(None, (x.strip() for x in settings.split(","))):
            key, eq, value = part.partition("=")
            if not eq or key not in ("temperature", "max_tokens", "timeout_s", "concurrency", "price_in",
                                     "price_out", "gpu_hour"):
                raise ValueError(f"bad model setting {part!r} in {text!r}: use temperature=, max_tokens=, "
                                 "timeout_s=, concurrency=, price_in= or price_out= (USD per million tokens), "
                                 "or gpu_hour= (USD per hour of a self-hosted model's machine)")
            values[key] = value
        return cls(id=model_id, **values)

    @property
    def is_local(self) -> bool:
        return self.id.startswith("local/")

    def params(self) -> dict[str, object]:
        """Sampling parameters that change the answer (and so belong in the cache key)."""
        out: dict[str, object] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        return out


class DataSpec(_Frozen):
    path: str
    input_field: str | None = None
    ideal_field: str | None = None


class ScorerSpec(_Frozen):
    """Either an LLM judge (judge + rubric) or a deterministic metric."""

    metric: str | None = None
    judge: ModelSpec | None = None
    rubric: str | None = None

    def self_grading_warning(self, task: ModelSpec) -> str | None:
        """A loud line when the judge is the model whose answers it grades (same id and server)."""
        j = self.judge
        if j is None or (j.id, j.api_base) != (task.id, task.api_base):
            return None
        return (f"WARNING: the judge is the task model ({task.id}): it grades its own answers, and models favour "
                "their own; pass a different, stronger --judge for scores you can trust")


class TrackSpec(_Frozen):
    """Experiment trackers a run logs to (`--track`), and where."""

    trackers: tuple[str, ...] = ()
    experiment: str | None = Field(None, description="MLflow experiment / W&B project (else the tool's default)")
    prompt_name: str | None = Field(None, description="register the best prompt under this name (MLflow)")


class PipelineSpec(_Frozen):
    """The user's own program as the task: `target` is `path/to/app.py:function`, called as
    `function(input, prompts)`; `prompts` names the prompt files it reads (name -> path), tuned together."""

    target: str
    prompts: tuple[tuple[str, str], ...]
    timeout_s: float = Field(300.0, gt=0, description="per-case limit; the case's worker process is stopped then")

    @field_validator("prompts")
    @classmethod
    def _named(cls, v: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        names = [n for n, _ in v]
        if not v:
            raise ValueError("a pipeline needs at least one --prompt NAME=FILE")
        if len(set(names)) != len(names):
            raise ValueError(f"prompt names repeat: {names}")
        return v


class EvalConfig(_Frozen):
    data: DataSpec
    prompt_path: str | None = None  # None: grade the recorded `responses`, or the `pipeline`'s prompts
    model: ModelSpec = ModelSpec()
    scorer: ScorerSpec = ScorerSpec()
    concurrency: int | None = Field(None, gt=0)
    responses: str | None = Field(None, description="grade this column's recorded responses; no task model call")
    human: str | None = Field(None, description="column of human scores or pass/fail labels to check the judge")
    self_agreement: int = Field(10, ge=0, description="cases re-judged twice to measure the judge's self-agreement")
    pipeline: PipelineSpec | None = None  # the user's program as the task, with the prompts it reads
    against: tuple[tuple[str, str], ...] = Field((), description="the prompts these replace (name, file; `prompt` "
                                                 "for a prompt file): both versions on the same cases, paired")
    fail_under: float | None = Field(None, ge=0, le=1, description="a mean score below this fails the gate")
    variants: tuple[str, ...] = Field((), description="more prompt files scored on the same cases, each compared "
                                      "with the first (paired, Holm-adjusted over the comparisons)")
    track: TrackSpec = TrackSpec()


class Budget(_Frozen):
    max_calls: int | None = Field(None, gt=0, description="hard limit on paid model calls, all roles")
    max_cost: float | None = Field(None, gt=0, description="hard limit in USD")
    max_time_s: float | None = Field(None, gt=0)
    max_trials: int | None = Field(None, ge=0, description="candidates to try; None: 24, or no limit when a "
                                   "call, cost or time budget is set (the budget decides)")
    patience: int = Field(10, ge=1, description="stop after this many trials without an accepted gain")
    target: float | None = Field(None, ge=0, le=1)

    @property
    def trial_limit(self) -> int:
        if self.max_trials is not None:
            return self.max_trials
        return 24 if self.max_calls is None and self.max_cost is None and self.max_time_s is None else 10_000


class AlignSpec(_Frozen):
    """`reflexopt align` (align.py): tune the rubric `rubric` (a file or a shipped name) so that the task model,
    as its judge, agrees with the people's verdicts in column `human` on the responses in column `responses`."""

    rubric: str
    responses: str
    human: str


class OptimizeConfig(_Frozen):
    data: DataSpec
    prompt_path: str
    model: ModelSpec = ModelSpec()
    reasoning: ModelSpec | None = None
    scorer: ScorerSpec = ScorerSpec()
    budget: Budget = Budget()
    split: tuple[float, float, float] | None = None
    balanced: bool = Field(False, description="label tasks: val and test hold as many cases of each label (the "
                           "rest go to train), so their mean score weighs every label alike")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="split and search seed (numpy takes 0 to 2**32 - 1)")
    concurrency: int | None = Field(None, gt=0)
    pruning: bool = True
    rewrites: bool = Field(True, description="reflex: the operators that ask the reasoning model (off: the no-LLM "
                           "operators only, and no diagnosis)")
    diagnose_sample: int = Field(12, ge=1)
    noise_sample: int = Field(10, ge=0, description="val cases re-judged to measure judge noise")
    storage: str | None = None
    output: str | None = None
    strategy: str = Field("reflex", description="search strategy: reflex (default), mipro, gepa or simba")
    pipeline: PipelineSpec | None = None
    align: AlignSpec | None = None
    track: TrackSpec = TrackSpec()
    objective: Literal["score", "cost"] = Field("score", description="score: the best val score; cost: the "
                                                "cheapest prompt not worse than it on val")
    max_prompt_tokens: int | None = Field(None, gt=0, description="no returned prompt uses more prompt tokens "
                                                                  "per request (measured on val)")
    cost_margin: float = Field(0.05, ge=0, le=1, description="--objective cost: a cheaper prompt must be shown "
                               "(one-sided paired test on val) to lose less than this against the best")

    def reasoner(self) -> tuple[ModelSpec, str]:
        """The model that diagnoses and rewrites, and why it is that one: `--reasoning-model`; else the judge when
        one is named (the model trusted to grade, rather than the cheap task model being tuned); else the task
        model. It writes whole prompts, so it never inherits the task's completion cap."""
        if self.reasoning is not None:
            return self.reasoning, "--reasoning-model"
        if self.scorer.judge is not None:
            return self.scorer.judge.model_copy(update={"max_tokens": None}), "the judge"
        if self.align is not None:  # the task model is the judge being aligned
            return self.model.model_copy(update={"max_tokens": None}), "the judge"
        return self.model.model_copy(update={"max_tokens": None}), "the task model"

    def public(self) -> dict[str, Any]:
        """The config as stored in the run directory (no secrets: keys never enter the config)."""
        data: dict[str, Any] = public(self.model_dump(mode="json"))
        if data.get("storage"):  # no password at all: a resume reads it from PGPASSWORD / ~/.pgpass or --storage
            data["storage"] = data["storage"].replace(":***@", "@")
        return data


def public(data: object) -> Any:
    """A dumped config with every secret taken out: URL passwords (storage, api_base) and the values of
    configured secret variables, wherever they appear."""
    from .models.base import redact

    if isinstance(data, dict):
        return {k: public(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [public(v) for v in data]
    if isinstance(data, str):
        return redact(data)
    return data


class CompareConfig(_Frozen):
    data: DataSpec
    prompt_path: str
    models: tuple[ModelSpec, ...]
    reasoning: ModelSpec | None = None
    scorer: ScorerSpec = ScorerSpec()
    budget: Budget = Budget()  # per model
    tune: bool = True
    transfer: bool = False
    target: float | None = Field(None, ge=0, le=1)
    split: tuple[float, float, float] | None = None
    balanced: bool = Field(False, description="label tasks: val and test hold as many cases of each label (the "
                           "rest go to train), so their mean score weighs every label alike")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="split and search seed (numpy takes 0 to 2**32 - 1)")
    concurrency: int | None = Field(None, gt=0)
    parallel: int = Field(2, ge=1, description="models tuned at the same time")
    strategy: str = Field("reflex", description="search strategy of every model's tuning run")
    pipeline: PipelineSpec | None = None
    track: TrackSpec = TrackSpec()
    margin: float = Field(0.05, ge=0, le=1, description="a model within this of the best, shown by a TOST "
                                                         "equivalence test, counts as as good")
    max_p95_s: float | None = Field(None, gt=0, description="a recommended model's latency p95 on test at most this")
    max_cost_per_1k: float | None = Field(None, ge=0, description="a recommended model costs at most this (USD per "
                                                                  "1,000 requests)")
    min_score: float | None = Field(None, ge=0, le=1, description="a recommended model's tuned score at least this")
    load: tuple[int, ...] = Field((), description="after tuning, send the test inputs at these concurrencies "
                                                  "(no cache) and measure latency, throughput, errors and 429s")
    load_calls: int = Field(64, ge=1, description="calls per model and concurrency level of the load test")

    @model_validator(mode="after")
    def _pipeline_is_tuned(self) -> CompareConfig:
        if self.pipeline is not None and self.load:
            raise ValueError("--load sends the tuned prompt straight to each model; a pipeline's load is its own "
                             "program's (drop --load, or compare a prompt file)")
        if self.pipeline is not None and (not self.tune or self.transfer):
            raise ValueError("compare --pipeline tunes each model's prompts; --no-tune and --transfer score a single "
                             "prompt file (drop them, or compare a prompt file)")
        return self

    @field_validator("models")
    @classmethod
    def _distinct(cls, v: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
        labels = [m.label for m in v]
        if len(set(labels)) != len(labels):
            raise ValueError("the same model is listed twice (give each -m a different id or settings)")
        return v


@overload
def model_spec(text: str, *, api_base: str | None = ..., max_tokens: int | None = ...,
               cache_tag: str | None = ...) -> ModelSpec: ...
@overload
def model_spec(text: None, *, api_base: str | None = ..., max_tokens: int | None = ...,
               cache_tag: str | None = ...) -> None: ...
def model_spec(text: str | None, *, api_base: str | None = None, max_tokens: int | None = None,
               cache_tag: str | None = None) -> ModelSpec | None:
    """`ID` or `ID@temperature=0.7,max_tokens=64` (None stays None); a bad setting is a ConfigError with a fix."""
    if text is None:
        return None
    try:
        return ModelSpec.parse(text, api_base=api_base, max_tokens=max_tokens, cache_tag=cache_tag)
    except ValidationError as e:
        raise ConfigError(f"invalid model options for {text!r}: {e.errors()[0]['msg']}",
                          fix="correct the value") from None
    except ValueError as e:
        raise ConfigError(str(e), fix="write -m ID or -m ID@temperature=0.7,max_tokens=64") from None


PRICE_KEYS = ("price_in", "price_out", "gpu_hour")
_C = TypeVar("_C", "EvalConfig", "OptimizeConfig", "CompareConfig")


def load_prices(path: str | Path) -> dict[str, dict[str, float]]:
    """A prices file (YAML or JSON): model id -> `price_in` / `price_out` (USD per million tokens) or `gpu_hour`
    (USD per hour of the machine serving it). Errors name the file, the line and the fix."""
    import yaml

    from .yamlfile import load_yaml

    p = Path(path)
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"--prices {p}: {e.strerror or e}",
                          fix="give the path of a YAML or JSON prices file") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise ConfigError(f"{p}:{'' if line is None else line + 1}: not valid YAML or JSON",
                          fix="write one `MODEL_ID: {price_in: 0.2, price_out: 0.6}` or `MODEL_ID: {gpu_hour: 1.5}` "
                              "per line") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a prices file maps model ids to prices", fix="write `openai/qwen: {gpu_hour: 1.5}`")
    out: dict[str, dict[str, float]] = {}
    for model, entry in data.items():
        bad = (not isinstance(entry, dict) or not entry or any(k not in PRICE_KEYS for k in entry)
               or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in entry.values()))
        if bad:
            raise ConfigError(f"{p}: the entry for {model!r} is {entry!r}",
                              fix="give price_in and price_out (USD per million tokens) or gpu_hour (USD per hour), "
                                  "as numbers of at least 0")
        out[str(model)] = {k: float(v) for k, v in entry.items()}
    return out


def priced(spec: ModelSpec | None, prices: dict[str, dict[str, float]], source: str) -> ModelSpec | None:
    """The spec with its price from a prices file, unless it has a price setting of its own (`-m ID@price_in=`)."""
    if spec is None or spec.id not in prices or any(getattr(spec, k) is not None for k in PRICE_KEYS):
        return spec
    return spec.model_copy(update={**prices[spec.id], "price_from": source})


def with_prices(cfg: _C, path: str | Path | None) -> _C:
    """A config (eval, optimize, compare) with every model role priced from a prices file."""
    if path is None:
        return cfg
    table = load_prices(path)
    source = f"prices file {Path(path).name}"
    update: dict[str, Any] = {}
    for role in ("model", "reasoning"):
        if getattr(cfg, role, None) is not None:
            update[role] = priced(getattr(cfg, role), table, source)
    if isinstance(cfg, CompareConfig):
        update["models"] = tuple(priced(m, table, source) for m in cfg.models)
    if cfg.scorer.judge is not None:
        update["scorer"] = cfg.scorer.model_copy(update={"judge": priced(cfg.scorer.judge, table, source)})
    return cfg.model_copy(update=update)


MetricArg = str | Callable[..., Any] | None  # a metric spec, or (Python API) a function (output, case) -> score


def scorer_spec(*, metric: MetricArg = None, judge: str | None = None, rubric: str | None = None,
                api_base: str | None = None) -> ScorerSpec:
    if metric is not None and not isinstance(metric, str):
        from .custom_metric import python_metric

        metric = python_metric(metric)
    return ScorerSpec(metric=metric, judge=model_spec(judge, api_base=api_base), rubric=rubric)


def parse_duration(text: str | None) -> float | None:
    """`90s`, `30m`, `1h30m` → seconds."""
    import re

    if text is None:
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not m or not any(m.groups()):
        raise ConfigError(f"--max-time {text!r} is not a duration", fix="write e.g. 90s, 30m, 1h30m")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + se


def parse_seconds(text: str | None, option: str = "--max-p95") -> float | None:
    """`2s`, `1.5`, `1500ms` → seconds (a latency)."""
    import re

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"{option} {text!r} is not a latency", fix=f"write e.g. {option} 2s or {option} 1500ms")
    return float(m[1]) / (1000 if m[2] == "ms" else 1)


def parse_levels(text: str | None) -> tuple[int, ...]:
    """`--load 1,8,32` → (1, 8, 32)."""
    if not text:
        return ()
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise ConfigError(f"--load {text!r} is not a list of concurrencies", fix="write e.g. --load 1,8,32")
    return levels


def parse_split(text: str | None) -> tuple[float, float, float] | None:
    """`30/30/40` or `0.3/0.3/0.4` → the train/val/test proportions."""
    if text is None:
        return None
    try:
        parts = tuple(float(x) for x in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise ConfigError(f"--split {text!r} is not TRAIN/VAL/TEST", fix="write e.g. 30/30/40 or 0.3/0.3/0.4")
    return parts[0], parts[1], parts[2]


def optimize_config(dataset: str | Path, prompt: str | Path, *, model: str | None = None,
                    api_base: str | None = None, max_tokens: int | None = None, cache_tag: str | None = None,
                    reasoning_model: str | None = None, judge: str | None = None, rubric: str | None = None,
                    metric: MetricArg = None, input_field: str | None = None, ideal_field: str | None = None,
                    output: str | Path | None = None, prices: str | Path | None = None,
                    **settings: Any) -> OptimizeConfig:
    """The one way an OptimizeConfig is built from user-level values (CLI options, a jobs-file entry, the
    Python API). Every model role takes `ID@settings`; the judge and reasoning models share `api_base`; `prices`
    (a file) prices every model role that has no price setting of its own."""
    return with_prices(OptimizeConfig(
        data=DataSpec(path=str(dataset), input_field=input_field, ideal_field=ideal_field),
        prompt_path=str(prompt),
        model=model_spec(model or LOCAL_MODEL, api_base=api_base, max_tokens=max_tokens, cache_tag=cache_tag),
        reasoning=model_spec(reasoning_model, api_base=api_base),
        scorer=scorer_spec(metric=metric, judge=judge, rubric=rubric, api_base=api_base),
        output=str(output) if output else None, **settings), prices)


def align_config(dataset: str | Path, *, judge: str | None, rubric: str, responses: str, human: str,
                 reasoning_model: str | None = None, api_base: str | None = None, input_field: str | None = None,
                 ideal_field: str | None = None, output: str | Path | None = None, prices: str | Path | None = None,
                 **settings: Any) -> OptimizeConfig:
    """The OptimizeConfig of `reflexopt align` (align.py): the judge model is the task, the rubric the prompt,
    and agreement with the people's verdicts (`contains` on "pass"/"fail") the score."""
    if not judge:
        raise ConfigError("align tunes a judge, and no --judge is given", fix="add --judge MODEL")
    return with_prices(OptimizeConfig(
        data=DataSpec(path=str(dataset), input_field=input_field, ideal_field=ideal_field), prompt_path=rubric,
        model=model_spec(judge, api_base=api_base), reasoning=model_spec(reasoning_model, api_base=api_base),
        scorer=ScorerSpec(metric="contains"), align=AlignSpec(rubric=rubric, responses=responses, human=human),
        output=str(output) if output else None, **settings), prices)


def track_spec(trackers: list[str] | tuple[str, ...] | None = None, *, experiment: str | None = None,
               register: str | None = None) -> TrackSpec:
    """`--track NAME ... [--track-experiment E] [--register-prompt NAME]`."""
    if (experiment or register) and not trackers:
        raise ConfigError("--track-experiment and --register-prompt need a tracker", fix="add --track mlflow")
    return TrackSpec(trackers=tuple(trackers or ()), experiment=experiment, prompt_name=register)


def pipeline_spec(target: str | None, prompts: list[str] | tuple[str, ...] = (), *,
                  timeout_s: float | None = None) -> PipelineSpec | None:
    """`--pipeline app.py:run --prompt NAME=FILE ...` (None without --pipeline); bad values are ConfigErrors."""
    if target is None:
        if prompts:
            raise ConfigError("--prompt NAME=FILE is for pipelines", fix="add --pipeline app.py:FUNCTION, or give the "
                              "prompt file as the second argument")
        return None
    if ":" not in target or not target.rsplit(":", 1)[1].isidentifier():
        raise ConfigError(f"--pipeline {target!r} is not FILE.py:FUNCTION", fix="write e.g. --pipeline app.py:run")
    pairs = []
    for item in prompts:
        name, eq, path = item.partition("=")
        if not eq or not name.strip().isidentifier() or not path.strip():
            raise ConfigError(f"--prompt {item!r} is not NAME=FILE", fix="write e.g. --prompt answer=prompts/answer.md")
        pairs.append((name.strip(), str(Path(path.strip()).resolve())))
    file, func = target.rsplit(":", 1)
    try:
        return PipelineSpec(target=f"{Path(file).resolve()}:{func}", prompts=tuple(pairs),
                            **({"timeout_s": timeout_s} if timeout_s else {}))
    except ValidationError as e:
        raise ConfigError(f"--pipeline: {e.errors()[0]['msg']}",
                          fix="give each prompt once: --prompt NAME=FILE") from None


def eval_config(dataset: str | Path, prompt: str | Path | None, *, model: str | None = None,
                api_base: str | None = None, max_tokens: int | None = None, judge: str | None = None,
                rubric: str | None = None, metric: MetricArg = None, input_field: str | None = None,
                ideal_field: str | None = None, concurrency: int | None = None, responses: str | None = None,
                human: str | None = None, self_agreement: int = 10, prices: str | Path | None = None,
                against: str | Path | Sequence[str] | None = None, fail_under: float | None = None,
                track: TrackSpec | None = None, pipeline: PipelineSpec | None = None,
                variants: Sequence[str | Path] = ()) -> EvalConfig:
    """The one way an EvalConfig is built from user-level values (the CLI and the Python API). `against`: the
    prompt file this one replaces, or for a pipeline, `NAME=FILE` items for the prompts whose old version differs.
    `variants`: more prompt files, each compared with `prompt` on the same cases."""
    if prompt is None and responses is None and pipeline is None:
        raise ConfigError("no prompt to evaluate", fix="pass a PROMPT file, --pipeline FILE.py:FUNCTION --prompt "
                          "NAME=FILE, or --responses FIELD to grade the responses recorded in the dataset")
    if pipeline is not None and (prompt is not None or responses is not None):
        raise ConfigError("with --pipeline the prompts are given as --prompt NAME=FILE",
                          fix="drop the PROMPT argument and --responses")
    if against and prompt is None and pipeline is None:
        raise ConfigError("--against compares two prompts on the same cases, and --responses grades answers "
                          "already recorded", fix="pass PROMPT and --against OLD_PROMPT, or drop --against")
    if variants and (prompt is None or pipeline is not None or responses is not None or against):
        raise ConfigError("several prompts are compared as prompt files on the same cases",
                          fix="give the PROMPT files alone: drop --pipeline, --responses and --against (the "
                              "first PROMPT is what the others are compared with)")
    if fail_under is not None and not 0 <= fail_under <= 1:
        raise ConfigError(f"--fail-under {fail_under:g} is off the score scale", fix="give a score in 0..1")
    if human and judge is None:
        raise ConfigError("--human checks a judge against people, and no --judge is given",
                          fix="add --judge MODEL (and --judge-criteria RUBRIC)")
    return with_prices(EvalConfig(
        data=DataSpec(path=str(dataset), input_field=input_field, ideal_field=ideal_field),
        prompt_path=None if prompt is None else str(prompt),
        model=model_spec(model or LOCAL_MODEL, api_base=api_base, max_tokens=max_tokens),
        scorer=scorer_spec(metric=metric, judge=judge, rubric=rubric, api_base=api_base),
        concurrency=concurrency, responses=responses, human=human, self_agreement=self_agreement,
        pipeline=pipeline, against=_against(against, pipeline), fail_under=fail_under, track=track or TrackSpec(),
        variants=tuple(str(v) for v in variants)),
        prices)


def check_models(configs: Sequence[EvalConfig]) -> None:
    """Evals of the same prompt files on several models (`eval ... -m A -m B`, eval_run.eval_models): the
    settings that judge one prompt against a bar or another version, recorded responses and pipelines are one
    model's questions; each model once."""
    first = configs[0]
    if first.against or first.fail_under is not None or first.responses or first.pipeline or first.human:
        raise ConfigError("several models (-m A -m B) score prompt files side by side",
                          fix="drop --against, --fail-under, --responses, --human and --pipeline, or run one model")
    ids = [c.model.label for c in configs]
    if len(set(ids)) < len(ids):
        raise ConfigError(f"a model is given twice: {', '.join(ids)}", fix="give each -m once")


def _against(against: str | Path | Sequence[str] | None, pipeline: PipelineSpec | None) -> tuple[tuple[str, str], ...]:
    """`--against` as (prompt name, file) pairs: a prompt file's one prompt is `prompt`; a pipeline's are named."""
    items = [] if not against else [against] if isinstance(against, (str, Path)) else list(against)
    if pipeline is None:
        if len(items) > 1:
            raise ConfigError("--against is given more than once", fix="give the one prompt file PROMPT replaces")
        return tuple(("prompt", str(x)) for x in items)
    names = [n for n, _ in pipeline.prompts]
    pairs: dict[str, str] = {}
    for item in map(str, items):
        name, eq, path = item.partition("=")
        if not eq or name.strip() not in names or not path.strip():
            raise ConfigError(f"--against {item!r} is not NAME=FILE for a prompt the pipeline is given",
                              fix=f"write --against NAME=OLD_FILE with NAME one of {', '.join(names)}")
        if name.strip() in pairs:
            raise ConfigError(f"--against names prompt {name.strip()!r} twice", fix="give each old prompt once")
        pairs[name.strip()] = str(Path(path.strip()).resolve())
    return tuple(pairs.items())


def compare_config(dataset: str | Path, prompt: str | Path, models: list[str] | tuple[str, ...], *,
                   api_base: str | None = None, max_tokens: int | None = None, reasoning_model: str | None = None,
                   judge: str | None = None, rubric: str | None = None, metric: MetricArg = None,
                   prices: str | Path | None = None, **settings: Any) -> CompareConfig:
    """The one way a CompareConfig is built from user-level values (`prices`: a prices file)."""
    labels = [m.label for m in (model_spec(x, api_base=api_base, max_tokens=max_tokens) for x in models)]
    if len(set(labels)) != len(labels):
        raise ConfigError("the same model is listed twice", fix="give each -m a different id or settings")
    try:
        return with_prices(CompareConfig(
            data=DataSpec(path=str(dataset)), prompt_path=str(prompt),
            models=tuple(model_spec(m, api_base=api_base, max_tokens=max_tokens) for m in models),
            reasoning=model_spec(reasoning_model, api_base=api_base),
            scorer=scorer_spec(metric=metric, judge=judge, rubric=rubric, api_base=api_base), **settings), prices)
    except ValidationError as e:
        what, _, fix = str(e.errors()[0]["msg"]).removeprefix("Value error, ").partition(" (")
        raise ConfigError(what, fix=fix.rstrip(")") or "correct the value") from None


def run_config(compare: CompareConfig, model: ModelSpec) -> OptimizeConfig:
    """The optimize run that tunes one of a comparison's models."""
    return OptimizeConfig(data=compare.data, prompt_path=compare.prompt_path, model=model,
                          reasoning=compare.reasoning, scorer=compare.scorer, budget=compare.budget,
                          split=compare.split, balanced=compare.balanced, seed=compare.seed,
                          concurrency=compare.concurrency,
                          strategy=compare.strategy, pipeline=compare.pipeline)
