"""reflexopt: evaluate and optimize LLM prompts on your own data, with your own judge.

    import reflexopt
    result = reflexopt.optimize(reflexopt.OptimizeConfig(data=reflexopt.DataSpec(path="data.jsonl"),
                                                         prompt_path="prompt.md"))

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
    "eval_prompt": "reflexopt.evaluate",
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reflexopt' has no attribute {name!r}")
