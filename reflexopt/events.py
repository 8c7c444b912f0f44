"""Progress events: the library never prints; it calls `on_event(kind, data)` and the CLI renders.

Kinds and their payloads (keys are stable; new keys may be added):

- optimize: `start` (run_id, run_dir, resumed, study, calls_estimate, ...), `note` (message), `phase` (phase,
  strategy | stop_reason), `baseline` (val, noise, min_gain), `trial_start` (n, candidate, operator, parent),
  `case` (split, candidate, score, case_id, output), `trial` (n, candidate, operator, state, val, n_val,
  accepted, best_val, usage), `done` (the OptimizeResult as JSON)
- compare: `start`, `model_start` (model), `model_done` (model, row), `phase`, `done`
- batch: `round`, `skip`, `unit_start`, `unit_done`
- worker: `study`, `trial`
"""

from __future__ import annotations

from typing import Any, Protocol


class Callback(Protocol):
    def __call__(self, kind: str, data: dict[str, Any], /) -> None: ...


Event = Callback


def ignore(kind: str, data: dict[str, Any]) -> None:
    """The default callback: drop every event."""
