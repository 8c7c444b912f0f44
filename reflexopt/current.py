"""The candidate being evaluated, for code deep inside a pipeline that does not get `prompts` passed down:

    import reflexopt
    system = reflexopt.current_prompt("answer")     # the text of the prompt named `answer` for this case

Set by the pipeline's worker process around each call of the user's function (a context variable, so threads
and tasks the function starts see it too, and nothing leaks between cases). Kept free of imports: the worker
loads it before the user's module."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_PROMPTS: ContextVar[Any] = ContextVar("reflexopt_prompts", default=None)


def current_prompt(name: str) -> Any:
    """The current candidate's prompt `name` (a str with `.messages(text)`), inside a pipeline run."""
    prompts = _PROMPTS.get()
    if prompts is None:
        raise LookupError("reflexopt.current_prompt() is only available while reflexopt runs your pipeline "
                          "(reflexopt optimize --pipeline ...)")
    return prompts[name]


def set_prompts(prompts: Any) -> Any:
    """Make `prompts` current; returns the token to reset with."""
    return _PROMPTS.set(prompts)


def reset(token: Any) -> None:
    _PROMPTS.reset(token)
