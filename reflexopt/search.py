"""The Optuna study: the only module that imports optuna.

Each candidate prompt is one trial (ask/tell). Val cases are reported per case (step = case index) so
`WilcoxonPruner` can stop a candidate as soon as it is significantly worse than the best one. The TPE sampler
learns which operators and structural settings pay off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

SPACE_CHOICES: dict[str, tuple[str, ...]] = {
    "operator": ("fix", "restructure", "format", "constraints", "demos", "compress", "merge"),
    "instruction_role": ("system", "user"),
    "answer_cue": ("none", "answer"),
    "demo_style": ("turns", "inline"),
}
MAX_DEMOS = 8


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]


class Trial:
    """One asked trial: its parameters, per-case reports and the pruning question."""

    def __init__(self, trial: Any) -> None:
        self._t = trial
        self.number: int = trial.number
        self.params: dict[str, Any] = {}

    def suggest(self, n_train: int) -> dict[str, Any]:
        t = self._t
        p: dict[str, Any] = {name: t.suggest_categorical(name, list(ch)) for name, ch in SPACE_CHOICES.items()}
        p["n_demos"] = t.suggest_int("n_demos", 0, max(0, min(MAX_DEMOS, n_train)))
        p["demo_seed"] = t.suggest_int("demo_seed", 0, 9)
        self.params = p
        return p

    def report(self, value: float, step: int) -> None:
        self._t.report(float(value), int(step))

    def should_prune(self) -> bool:
        return bool(self._t.should_prune())

    def set_attr(self, key: str, value: Any) -> None:
        self._t.set_user_attr(key, value)


class Search:
    def __init__(self, storage: str, study_name: str, *, seed: int = 0, p_threshold: float = 0.1,
                 n_startup_steps: int = 15, pruning: bool = True) -> None:
        # n_startup_steps 15: below that, scipy's Wilcoxon test on tied 0/1 scores switches to an exact
        # permutation method that takes up to a second per check; from 15 cases on it is ~1 ms.
        import warnings

        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self._optuna = optuna
        pruner: Any = (optuna.pruners.WilcoxonPruner(p_threshold=p_threshold, n_startup_steps=n_startup_steps)
                       if pruning else optuna.pruners.NopPruner())
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)
        self.study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                         sampler=sampler, pruner=pruner, load_if_exists=True)

    def fail_stale(self) -> int:
        """Trials left RUNNING by a killed process are marked FAIL so the study can go on."""
        from optuna.trial import TrialState

        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        return n

    def enqueue(self, params: dict[str, Any]) -> None:
        self.study.enqueue_trial(params, skip_if_exists=True)

    def ask(self) -> Trial:
        return Trial(self.study.ask())

    def tell(self, trial: Trial, value: float | None, *, pruned: bool = False, failed: bool = False) -> None:
        from optuna.trial import TrialState

        if failed or value is None:
            self.study.tell(trial._t, state=TrialState.FAIL)
        elif pruned:
            self.study.tell(trial._t, state=TrialState.PRUNED)
        else:
            self.study.tell(trial._t, value)

    def add_complete(self, params: dict[str, Any], value: float, steps: dict[int, float],
                     attrs: dict[str, Any]) -> None:
        """Record an already-evaluated candidate (the baseline, or a duplicate) with its per-case values."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        dists: dict[str, Any] = {k: CategoricalDistribution(list(v)) for k, v in SPACE_CHOICES.items()}
        dists["n_demos"] = IntDistribution(0, MAX_DEMOS)
        dists["demo_seed"] = IntDistribution(0, 9)
        trial = self._optuna.trial.create_trial(
            params={k: v for k, v in params.items() if k in dists},
            distributions={k: d for k, d in dists.items() if k in params}, value=value,
            intermediate_values=steps, user_attrs=attrs)
        self.study.add_trial(trial)

    def trials(self) -> list[TrialRecord]:
        return [TrialRecord(t.number, t.state.name, t.value, dict(t.params), dict(t.user_attrs))
                for t in self.study.get_trials(deepcopy=False)]
