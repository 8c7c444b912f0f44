"""reflexopt: evaluate and optimize LLM prompts on your own data, with your own judge.

    import reflexopt as ro
    result = ro.optimize("data.jsonl", "prompt.md", model="openai/gpt-4o-mini", max_calls=1500)
    print(result.best_test, result.significant, result.best_prompt)

Names are imported lazily so that `reflexopt --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "optimize": "reflexopt.optimizer",
    "Optimizer": "reflexopt.optimizer",
    "OptimizeResult": "reflexopt.optimizer",
    "eval_prompt": "reflexopt.eval_run",
    "eval_models": "reflexopt.eval_run",
    "evaluate": "reflexopt.evaluate",
    "OptimizeConfig": "reflexopt.config",
    "EvalConfig": "reflexopt.config",
    "DataSpec": "reflexopt.config",
    "ModelSpec": "reflexopt.config",
    "ScorerSpec": "reflexopt.config",
    "Budget": "reflexopt.config",
    "load_dataset": "reflexopt.data",
    "load_prompt": "reflexopt.prompt",
    "Prompt": "reflexopt.prompt",
    "ReflexoptError": "reflexopt.errors",
    "strategy_names": "reflexopt.strategies",
    "PromptSet": "reflexopt.promptset",
    "Task": "reflexopt.task",
    "EventBus": "reflexopt.events",
    "current_prompt": "reflexopt.current",
    "Score": "reflexopt.metrics",
}

__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reflexopt' has no attribute {name!r}")
