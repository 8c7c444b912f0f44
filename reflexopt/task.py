"""The Task seam: what turns (candidate, case) into an output plus its cost.

The evaluator scores whatever a Task produces; strategies never call the task model themselves for a case.
The default task renders the candidate's prompt file and calls the task model. Pipeline mode (the user's own
program filling several named prompts) is a second Task: it changes this module and the config, nothing in
the strategies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .config import EvalConfig, ModelSpec, OptimizeConfig
from .data import Case
from .models import ChatResult, ModelClient
from .promptset import PromptSet


class Task(Protocol):
    """Produces one case's output.

    Contract:
    - `names` are the prompt names a candidate must fill (the starting candidate has exactly these).
    - `run(prompts, case)` returns a ChatResult: the output text, and what producing it cost (tokens, USD,
      latency, whether the cache answered, `budget_exhausted` when the run's budget refused a call). It never
      raises for a failed call or a bad output: `ok=False` with `error` set.
    - Every model call goes through the run's clients (`clients`), so the cache, the budget and accounting hold.
    - The same prompts and case give the same output (the clients cache at temperature 0).
    """

    names: tuple[str, ...]

    @property
    def clients(self) -> Sequence[ModelClient]: ...

    @property
    def concurrency(self) -> int: ...

    async def run(self, prompts: PromptSet, case: Case) -> ChatResult: ...


class OneModelTask:
    """A task whose calls all go to one model client (the default task's, alignment's judge)."""

    client: ModelClient

    @property
    def clients(self) -> Sequence[ModelClient]:
        return (self.client,)

    @property
    def concurrency(self) -> int:
        return self.client.concurrency


class PromptTask(OneModelTask):
    """The default task: render the one prompt for the case and call the task model once."""

    renders = True  # reflexopt builds the messages: structure operators (roles, demo turns) apply

    def __init__(self, client: ModelClient, names: tuple[str, ...] = ("prompt",)) -> None:
        self.client = client
        self.names = names

    async def run(self, prompts: PromptSet, case: Case) -> ChatResult:
        return await self.client.complete(prompts.primary.render(case))

    def check(self) -> None:
        """Nothing to check before a call (the model specs are checked elsewhere)."""


class RecordedTask:
    """Responses already given, read from a dataset column (`eval --responses FIELD`): grade what a system said,
    for instance to check a judge against people who graded the same responses. No model is called."""

    names: tuple[str, ...] = ("prompt",)
    clients: Sequence[ModelClient] = ()
    concurrency = 16

    def __init__(self, field: str) -> None:
        self.field = field

    async def run(self, prompts: PromptSet, case: Case) -> ChatResult:
        text = case.extra.get(self.field)
        if text is None or (isinstance(text, str) and not text.strip()):
            return ChatResult("", "recorded", ok=False, cached=True, paid_calls=0,
                              error=f"{case.source}:{case.line}: no {self.field!r} response in this row")
        return ChatResult(text if isinstance(text, str) else str(text), "recorded", cached=True, paid_calls=0)


@dataclass(frozen=True)
class StartingPoint:
    """Where a run starts, as its task sees it: the starting prompts (read when asked: a resumed run has them
    stored), the dataset columns kept beside each row (`aside`), the rows as this task's cases (`transform`),
    and whether the task is the default one. Only the default task's prompts have their placeholders checked
    against the rows (a pipeline's program fills its own; a rubric has none)."""

    prompts: Callable[[], PromptSet]
    aside: tuple[str, ...] = ()
    transform: Callable[[list[Case]], list[Case]] | None = None
    default_task: bool = False  # the prompt file sent to the task model (PromptTask): its output cap comes from
    # the references, and a strategy that drives the model itself (DSPy's) can run it

    @property
    def check_fields(self) -> bool:
        return self.default_task


def starting_point(config: OptimizeConfig) -> StartingPoint:
    if config.pipeline is not None:
        pipe = config.pipeline
        return StartingPoint(lambda: PromptSet.load_named(pipe.prompts))
    if config.align is not None:
        from .align import starting_point as align_start

        return align_start(config.align, config.prompt_path)
    return StartingPoint(lambda: PromptSet.load(config.prompt_path), default_task=True)


def make_task(config: OptimizeConfig | EvalConfig, client: ModelClient | None) -> Any:
    """The run's Task: the user's pipeline when the config names one, else the prompt file rendered and sent.
    With `client` None, an unstarted task for preflight checks (`check()`)."""
    if config.pipeline is not None:
        from .pipeline import PipelineTask

        return PipelineTask(config.pipeline, client, concurrency=config.concurrency)
    if isinstance(config, OptimizeConfig) and config.align is not None and client is not None:
        from .align import JudgeTask
        from .judge import load_rubric

        return JudgeTask(client, load_rubric(config.align.rubric))
    if client is None:
        raise ValueError("the default task needs the task model's client")
    return PromptTask(client)


def task_spec(spec: ModelSpec, cases: Sequence[Case], concurrency: int | None, *,
              cap: bool = True) -> tuple[ModelSpec, str | None]:
    """The task model's spec for a run: `--concurrency` reaches the client (not only the case loop), and with
    no `--max-tokens` the completion cap comes from the references (and the run says so). `cap` False: no cap
    from the references (a pipeline's intermediate steps write more than its final answer)."""
    from .data import default_max_tokens

    update: dict[str, Any] = {}
    if concurrency and spec.concurrency is None:
        update["concurrency"] = concurrency
    note = None
    if spec.max_tokens is None and cap:
        cap_n = default_max_tokens(cases)
        if cap_n is not None:
            update["max_tokens"] = cap_n
            note = f"task outputs capped at {cap_n} tokens (fits the references; --max-tokens N overrides)"
    return spec.model_copy(update=update), note
