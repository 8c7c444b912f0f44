"""The reflex search space: each operator's settings, sampled by Optuna's TPE through the trial it is given
(duck-typed: `suggest_int`, `suggest_categorical`), so optuna is still imported only by search.py."""

from __future__ import annotations

from typing import Any

from .operators import CUES, DEMO_ORDERS, DEMO_PICKS, N_PHRASINGS

MAX_DEMOS = 12
DEMO_KNOBS = ("n_demos", "demo_pick", "demo_order", "demo_style")  # a demo set's shape (the seed picks it)


def suggest(t: Any, number: int, operator: str, *, n_train: int, n_labels: int, first: bool = False,
            around: dict[str, Any] | None = None, prior: bool = False) -> dict[str, Any]:
    """The settings of one operator, sampled by TPE (conditional: each operator has its own knobs).
        The operator itself is chosen by the policy in operators.py and recorded as a user attribute.

        Two demos trials carry no TPE parameters (TPE learns only from settings it chose):
        - the first demos trial of a run takes a known-good setting (LM-BFF: every label shown, twice, as chat
          turns in a balanced cycle), so the strongest no-LLM operator is not judged on an unlucky draw;
        - `around` (the demo settings that built the parent's demos): the same settings with another seed, i.e.
          another set of examples in the same shape. Which examples are shown matters as much as how many and
          in what form; MIPROv2 spends its search on exactly this;
        - `prior`: the first demos trial's setting with as many demos as the space allows and each label shown
          as often as its share of train gives it (propose.prior_quota), asked once while the best is below a
          constant answer on val."""
    p: dict[str, Any] = {"operator": operator}
    if operator == "demos":
        top = max(1, min(MAX_DEMOS, n_train, max(8, 2 * n_labels)))
        low = max(1, min(n_labels, top))  # every label at least once when the task has labels
        if first or prior:  # the prior's shares need the most demos the space allows to show
            p.update(n_demos=top if prior else min(top, max(4, 2 * n_labels)),
                     demo_pick="prior" if prior else "balanced", demo_order="cycle", demo_style="turns", demo_seed=0)
            return p
        if around:
            p.update({k: around[k] for k in DEMO_KNOBS}, demo_seed=100 + number, around=True)
            return p
        p["n_demos"] = t.suggest_int("n_demos", low, top)
        p["demo_pick"] = t.suggest_categorical("demo_pick", list(DEMO_PICKS))
        p["demo_order"] = t.suggest_categorical("demo_order", list(DEMO_ORDERS))
        p["demo_style"] = t.suggest_categorical("demo_style", ["turns", "inline"])
        p["demo_seed"] = t.suggest_int("demo_seed", 0, 9)
    elif operator == "instruct":
        p["phrasing"] = t.suggest_int("phrasing", 0, N_PHRASINGS - 1)
        p["keep_parent"] = t.suggest_categorical("keep_parent", [False, True])
    elif operator == "cue":
        p["cue"] = t.suggest_categorical("cue", list(CUES))
    elif operator == "structure":
        p["instruction_role"] = t.suggest_categorical("instruction_role", ["system", "user"])
        p["demo_style"] = t.suggest_categorical("structure_demo_style", ["turns", "inline"])
    return p
