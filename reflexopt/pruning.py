"""The pruning rules, on the cases scored so far (case index -> score), decided in process:

- collapse, once, at the first check, on a label task: the candidate answers one label to (nearly) every case
  while the references do not (metrics.collapsed_label); on a small model a demo set or a cue can make it do
  that, and it would score the label's share of val and stall the search;
- the gate, once, at the first check: on the same cases, the candidate's total is below its parent's, or equal
  to it without a single case where the candidate does better (an edit that shows no gain on a minibatch is not
  worth a full evaluation, as GEPA accepts its candidates; a tie that fixes some cases and breaks others goes on,
  since on a small minibatch it is as likely to be a gain as a loss). With a noisy judge, "below" means by more
  than one SD of what judging alone moves the difference of the two totals (noise × √(2n) on n cases): an
  edit as good as its parent would otherwise be stopped about half the time by the judge's noise alone;
- from then on, after every case: significantly worse than the best candidate known when the trial was asked
  (a one-sided Wilcoxon test; stats.worse_than_best).

search.Trial holds the state (its steps, the parent's and the best's scores) and asks these."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .metrics import collapsed_label


def gate_says_stop(mine: Mapping[int, float], parent: Mapping[int, float], noise: float = 0.0) -> bool:
    """No gain over the parent on the cases both have; `noise`: the SD of one judge verdict (0: exact scores)."""
    shared = [i for i in mine if i in parent]
    total, theirs = sum(mine[i] for i in shared), sum(parent[i] for i in shared)
    better_somewhere = any(mine[i] > parent[i] for i in shared)
    slack = noise * math.sqrt(2 * len(shared))
    return bool(shared) and (total < theirs - slack or (total == theirs and not better_somewhere))


def collapse(outputs: Mapping[int, str], ideals: Mapping[int, str | None],
             labels: Sequence[str]) -> dict[str, Any] | None:
    """The label the candidate answers whatever the case, on the cases scored so far (None: it varies)."""
    steps = list(outputs)
    hit = collapsed_label([outputs[i] for i in steps], [ideals.get(i) for i in steps], labels)
    return None if hit is None else {"label": hit[0], "answers": hit[1], "of": len(steps)}


def worse_than_best(mine: dict[int, float], best: dict[int, float], *, p_threshold: float,
                    min_cases: int) -> bool:
    """Significantly worse than the best (False when there is no best yet)."""
    if not best:
        return False
    from .stats import worse_than_best as test

    return test(mine, best, p_threshold=p_threshold, min_cases=min_cases)


class AgainstBest:
    """The test against the best: a candidate is stopped once significantly worse than `best` (case index ->
    score) on the cases scored so far. A search trial asks it after its gate; `--objective cost`'s cheaper
    variants, scored outside a trial, use it alone as their pruning hook."""

    def __init__(self, best: Mapping[int, float], *, p_threshold: float = 0.1, first_check: int = 15) -> None:
        self.best, self.steps = dict(best), {}  # type: dict[int, float], dict[int, float]
        self._p, self._first = p_threshold, first_check

    def report(self, value: float, step: int, output: str | None = None) -> None:
        self.steps[int(step)] = float(value)

    def should_prune(self) -> bool:
        return len(self.steps) >= self._first and worse_than_best(self.steps, self.best, p_threshold=self._p,
                                                                  min_cases=self._first)
