"""Plugin seams through package entry points: another installed package can add model backends, search
strategies, scorers (metrics) and event subscribers. reflexopt's own built-ins register the same way, in its
pyproject.toml, so there is one path for both.

    [project.entry-points."reflexopt.strategies"]
    mysearch = "mypkg.search:MyStrategy"          # a class (or factory) taking no arguments

Groups and what an entry point names:

- `reflexopt.strategies`: a zero-argument callable returning a `strategies.base.Strategy`;
- `reflexopt.backends`: a callable `(spec: ModelSpec) -> (Backend, cache identity, default concurrency)`,
  chosen by the model id's prefix (the entry point's name: `myprov` serves `myprov/...`);
- `reflexopt.scorers`: a callable `(spec, cases) -> scoring.Scorer` (`kind`, `name`, `describe()`, async
  `score(case, output) -> Score`); `--metric NAME[:ARG]` (spec is the whole option value);
- `reflexopt.subscribers`: a zero-argument callable returning an `events.Subscriber`, attached to every
  optimize run (trackers that configure themselves from the environment);
- `reflexopt.trackers`: a callable `(*, experiment) -> trackers.Backend`, chosen by `--track NAME`.

A plugin that fails to load is named with its package and the fix, never a traceback from deep inside.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import ConfigError

GROUPS = ("reflexopt.strategies", "reflexopt.backends", "reflexopt.scorers", "reflexopt.subscribers",
          "reflexopt.trackers")


def available(group: str) -> dict[str, EntryPoint]:
    """The entry points of one group by name (read afresh: a test may install a plugin at run time). When two
    packages register one name, reflexopt's own wins; among others, the first found."""
    if group not in GROUPS:
        raise ValueError(group)
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        own = ep.value.startswith("reflexopt.")
        if ep.name not in found or (own and not found[ep.name].value.startswith("reflexopt.")):
            found[ep.name] = ep
    return found


def load(group: str, name: str, *, what: str, fix: str) -> Callable[..., Any]:
    """The object entry point `name` of `group` names. A missing name raises ConfigError with `fix`."""
    eps = available(group)
    ep = eps.get(name)
    if ep is None:
        raise ConfigError(f"unknown {what} {name!r}", fix=fix.format(names=", ".join(sorted(eps)) or "none"))
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is the user's package, not reflexopt's
        raise ConfigError(f"the {what} {name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}",
                          fix="fix or reinstall the package that provides it, or choose another") from None
    if not callable(obj):
        raise ConfigError(f"the {what} {name!r} ({ep.value}) is not callable",
                          fix="an entry point must name a class or a factory function")
    return obj  # type: ignore[no-any-return]


def names(group: str) -> list[str]:
    return sorted(available(group))
