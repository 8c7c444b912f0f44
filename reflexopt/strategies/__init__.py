"""Search strategies behind one protocol (base.Strategy), found through the entry-point group
`reflexopt.strategies` (plugins.py). reflexopt's own strategies register there too (pyproject.toml), so a new
strategy is one module plus one entry-point line, in this package or in another installed one.

`dspy` is imported only by dspy_opt.py, and only when a DSPy strategy is chosen."""

from __future__ import annotations

from ..plugins import load, names
from .base import SearchContext, Strategy

GROUP = "reflexopt.strategies"


def strategy_names() -> list[str]:
    return names(GROUP)


def get_strategy(name: str) -> Strategy:
    """A new instance of the strategy registered as `name` (each run gets its own: strategies keep state)."""
    factory = load(GROUP, name, what="strategy", fix="use one of {names}")
    strategy: Strategy = factory()
    return strategy


def mipro() -> Strategy:
    from .dspy_opt import DspyStrategy

    return DspyStrategy("mipro")


def gepa() -> Strategy:
    from .dspy_opt import DspyStrategy

    return DspyStrategy("gepa")


def simba() -> Strategy:
    from .dspy_opt import DspyStrategy

    return DspyStrategy("simba")


__all__ = ["SearchContext", "Strategy", "get_strategy", "strategy_names"]
