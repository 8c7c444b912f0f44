"""The run's one budget owner: calls and cost (a hard gate every model client asks before a call), time, trials,
patience and the target. It answers "may I?" (`allow`, `charge_cached`, `remaining`) and "why did we stop?"
(`limit_reason`, `search_reason`). Running out is a typed signal: a refused call comes back with
`budget_exhausted=True` on its result (never as text to match), and `exhausted()` says so afterwards."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from .models import Meter


@dataclass(frozen=True)
class Limits:
    """The limits of one run besides calls and cost (config.Budget's, resolved)."""

    max_time_s: float | None = None
    trial_limit: int = 24
    patience: int = 10
    target: float | None = None


class RunBudget:
    """Calls are counted when granted, and each call in flight is charged the most expensive call seen so far, so
    concurrency cannot overshoot. During the search a reserve (calls, and their cost at the average price so far)
    is kept back for the final test evaluation. In a distributed run each process enforces its own limits.
    """

    def __init__(self, max_calls: int | None, max_cost: float | None, *, prior_calls: int = 0,
                 prior_cost: float = 0.0, limits: Limits | None = None, started: float | None = None) -> None:
        self.max_calls, self.max_cost = max_calls, max_cost
        self.limits = limits or Limits()
        self.started = time.monotonic() if started is None else started
        self.granted = prior_calls
        self.prior_cost = prior_cost
        self.limit_calls = max_calls
        self.reserve_calls = 0
        self.inflight = 0
        self.meters: list[Meter] = []
        self._exhausted = False  # a call was refused (the typed signal arrived)
        # cache answers counted as calls made (charge_cached): their number, the price they were paid at when
        # cached, and the dearest of them; they count against the limits, never as paid
        self.cached_n, self.cached_cost, self.cached_max = 0, 0.0, 0.0
        self._asked: set[str] = set()  # the cache keys of the requests this run has made
        self._lock = threading.Lock()

    # ------------------------------------------------------------ calls and cost: "may I?"
    def set_reserve(self, calls: int) -> None:
        with self._lock:
            self.reserve_calls = calls
            self.limit_calls = None if self.max_calls is None else max(0, self.max_calls - calls)

    def spent_cost(self) -> float:
        """Cost counted against --max-cost: paid, and the cache answers this run counts as calls made."""
        return self.prior_cost + sum(m.cost_usd for m in self.meters) + self.cached_cost

    def _cost_ok(self, price: float | None = None) -> bool:
        """Can one more call be made within --max-cost? `price`: its known price (a cache answer); otherwise
        it is charged the dearest call seen, as is every call in flight."""
        if self.max_cost is None:
            return True
        paid = [m for m in self.meters if m.calls]
        worst = max([m.max_call_cost for m in self.meters] + [self.cached_max])
        if not paid and not self.cached_n and self.inflight:
            return False  # the price of a call is unknown until the first one returns
        n = sum(m.calls for m in paid) + self.cached_n
        avg = (sum(m.cost_usd for m in paid) + self.cached_cost) / max(1, n)
        this = worst if price is None else price
        return self.spent_cost() + worst * self.inflight + this + avg * self.reserve_calls <= self.max_cost

    def _fits(self, price: float | None = None) -> bool:
        """Can one more call be granted within both limits? `price` as for `_cost_ok`."""
        if self.limit_calls is not None and self.granted >= self.limit_calls:
            return False
        return self._cost_ok(price)

    def allow(self, meter: Meter) -> bool:
        with self._lock:
            if not self._fits():
                return False
            self.granted += 1
            self.inflight += 1
            return True

    def first_ask(self, key: str) -> bool:
        """Note a request (by its cache key); True the first time this run makes it."""
        with self._lock:
            if key in self._asked:
                return False
            self._asked.add(key)
            return True

    def charge_cached(self, meter: Meter, cost: float = 0.0) -> bool:
        """Count a cache answer to a request this run had not made before as a call made (not paid): on an empty
        cache the run would have paid for it, so the search takes the same course whatever the cache holds, and
        a re-run of a run that ended on its budget pays nothing instead of searching further. `cost`: what the
        answer was paid when it was cached, counted against --max-cost the same way. False when a limit refuses
        it, as it would have refused the paid call."""
        with self._lock:
            if not self._fits(cost):
                return False
            self.granted += 1
            self.cached_n += 1
            self.cached_cost += cost
            self.cached_max = max(self.cached_max, cost)
            return True

    def release(self) -> None:
        with self._lock:
            self.inflight = max(0, self.inflight - 1)

    def remaining(self) -> float:
        return math.inf if self.limit_calls is None else self.limit_calls - self.granted

    def mark_exhausted(self) -> None:
        """A call was refused for the budget (a result arrived with `budget_exhausted`)."""
        self._exhausted = True

    def exhausted(self) -> bool:
        return self._exhausted

    def unspent(self) -> int | None:
        """Calls of --max-calls not used (None without a call limit)."""
        return None if self.max_calls is None else max(0, self.max_calls - self.granted)

    # ------------------------------------------------------------ "why did we stop?"
    def timed_out(self) -> bool:
        t = self.limits.max_time_s
        return t is not None and time.monotonic() - self.started >= t

    def limit_reason(self, best_val: float, *, min_calls: int) -> str:
        """The limits every strategy obeys: target, time and budget ('' when none is reached). `min_calls`: below
        this many calls left the search cannot do anything useful."""
        target = self.limits.target
        if target is not None and best_val >= target:
            return "target reached"
        if self.timed_out():
            return "max time"
        if self._exhausted or self.remaining() < min_calls:
            return "budget"
        return ""

    def patience_spent(self, since_gain: int) -> bool:
        """No accepted gain in `patience` trials (the strategy may answer it by drawing more before it stops)."""
        return since_gain >= self.limits.patience

    def sized(self) -> bool:
        """The run has a call, cost or time budget: it, not the trial count, decides how long the search goes."""
        return self.max_calls is not None or self.max_cost is not None or self.limits.max_time_s is not None

    def trials_spent(self, trials: int) -> bool:
        return trials >= self.limits.trial_limit

