"""The reflex strategy (the default): one Optuna trial per candidate, operators chosen by the policy in
operators.py, Pareto parents, per-case pruning; other processes (`reflexopt worker`) can join the study."""

from __future__ import annotations

from ..pool import from_study, select
from .base import SearchContext


class ReflexStrategy:
    name = "reflex"

    async def search(self, ctx: SearchContext) -> str:
        r, search = ctx.runner, ctx.search
        records = search.records()
        pool = from_study(records, r.val)
        sel = select(pool, len(r.val), ctx.min_gain)
        while True:
            if ctx.config.storage is not None and search.fail_stale():  # a dead worker's trial holds no slot
                records = search.records()
            stop = r.stop_reason(records, sel, pool, timed_out=ctx.timed_out())
            if stop:
                return stop
            cand = await r.step(pool)
            if cand is None:
                return "max trials"
            records = search.records()  # one read per trial (step reads again at ask, for the trial limit)
            pool = from_study(records, r.val)
            sel = ctx.after_trial(cand, sel, records=records)
