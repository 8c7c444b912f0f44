"""Search strategies behind one protocol (base.Strategy). A new strategy is one module plus one line here.

`dspy` is imported only by dspy_opt.py, and only when a DSPy strategy is chosen."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import SearchContext, Strategy


def _reflex() -> Strategy:
    from .reflex import ReflexStrategy

    return ReflexStrategy()


def _mipro() -> Strategy:
    from .dspy_opt import DspyStrategy

    return DspyStrategy("mipro")


def _gepa() -> Strategy:
    from .dspy_opt import DspyStrategy

    return DspyStrategy("gepa")


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "reflex": _reflex,  # reflexopt's own search (operators, Pareto parents, TPE, pruning)
    "mipro": _mipro,  # DSPy MIPROv2 (instruction + demo candidates, Bayesian search)
    "gepa": _gepa,  # DSPy GEPA (reflective prompt evolution, Pareto selection)
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}", fix=f"use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


__all__ = ["STRATEGIES", "SearchContext", "Strategy", "get_strategy"]
