"""Progress events: the library never prints. It emits `(kind, data)` on an :class:`EventBus`, which fans each
event out to every subscriber: the CLI's live view, the run store's log, trackers, plugins. Each kind has one
payload shape (the keys below are required; new keys may be added); an event whose payload lacks one of its
kind's keys is a bug in the emitter and raises at once, so every subscriber can rely on the shape.

A subscriber is any callable `(kind, data) -> None`. A plug-in subscriber that raises is detached after its first
error (reported once as a `note`), so a broken tracker never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import TrackSpec


class Callback(Protocol):
    def __call__(self, kind: str, data: dict[str, Any], /) -> None: ...


Event = Callback
Subscriber = Callback

# kind -> keys every payload of that kind carries
SHAPES: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    # optimize (and every worker: the same kinds, with `study` added)
    "start": "run_id run_dir resumed study calls_estimate",
    "note": "message",
    "phase": "phase",
    "baseline": "val noise min_gain",
    "trial_start": "n candidate operator parent",
    "case": "split candidate score case_id output",
    "trial": "n candidate operator state val n_val accepted best best_val usage",
    "candidate": "record markdown",
    "stop": "reason",
    "done": "",
    "judge_noise": "n sd",
    "judge_known": "n references_passed foils_failed warning text",
    "stale_trials_failed": "n",
    "diagnosis": "candidate source calls categories",
    "proposal": "trial operator used fallback calls",
    "reasoner_given_up": "reason",
    "draws_stopped": "best reason",
    # compare (its runs' events are forwarded with `model` added)
    "model_start": "model",
    "model_done": "model row",
    # batch (its runs' events are forwarded with `unit` added)
    "round": "round",
    "skip": "unit",
    "unit_start": "unit round",
    "unit_done": "unit",
    "batch_done": "round complete failed regressions",
    # worker
    "study": "study",
    # eval (to its trackers)
    "eval_done": "name config summary cases prompts",
}.items()}


def ignore(kind: str, data: dict[str, Any]) -> None:
    """A callback that drops every event."""


class EventBus:
    """Fans events out to subscribers, checking each payload against its kind's shape.

    A subscriber's exception reaches the emitter (the run store failing on a full disk must stop the run), except
    for subscribers added with `isolated=True` (plug-in trackers): one of those that raises is detached after its
    first error, reported once as a `note`, and the run goes on."""

    def __init__(self, subscribers: Iterable[Callback | None] = (), *, checked: bool = True) -> None:
        """`checked=False` for the buses of compare and batch, whose own events (a comparison's `start`, ...)
        are not a run's: their runs' events were checked on the runs' own buses."""
        self._subs: list[Callback] = [s for s in subscribers if s is not None]
        self._isolated: set[int] = set()
        self._shapes = SHAPES if checked else {}

    def subscribe(self, sub: Callback, *, isolated: bool = False) -> Callback:
        self._subs.append(sub)
        if isolated:
            self._isolated.add(id(sub))
        return sub

    def unsubscribe(self, sub: Callback) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        self._isolated.discard(id(sub))

    @property
    def subscribers(self) -> tuple[Callback, ...]:
        return tuple(self._subs)

    def __call__(self, kind: str, data: dict[str, Any], /) -> None:
        self.emit(kind, data)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        missing = self._shapes.get(kind, frozenset()) - data.keys()
        if missing:
            raise ValueError(f"event {kind!r} lacks {sorted(missing)}")
        failed: list[str] = []
        for sub in list(self._subs):
            if id(sub) not in self._isolated:
                sub(kind, data)
                continue
            try:
                sub(kind, data)
            except Exception as e:  # noqa: BLE001 - a plug-in subscriber's failure is not the run's
                self.unsubscribe(sub)  # before the note: one that fails on notes too is gone already
                failed.append(f"an event subscriber ({getattr(sub, '__qualname__', sub)}) failed and was detached: "
                              f"{type(e).__name__}: {e}")
        for message in failed:  # after every subscriber had this event, so each sees events in order
            self.emit("note", {"message": message})


class TrackedBus(EventBus):
    """The bus of a command that owns experiment trackers (`--track`): they are made (and checked, before any
    model call) with the bus and attached isolated; `finish(ok)` ends their runs when the command stops."""

    def __init__(self, subscribers: Iterable[Callback | None], spec: TrackSpec, *, checked: bool = True) -> None:
        from .trackers import make_trackers

        super().__init__(subscribers, checked=checked)
        self.trackers = make_trackers(spec)
        attach(self, self.trackers)

    def tagged(self, **tag: Any) -> Callback:
        """A subscriber that passes a sub-run's events on with `tag` (model=..., unit=...) added."""
        return forward(self, **tag)

    def finish(self, ok: bool) -> None:
        from .trackers import finish_all

        finish_all(self.trackers, ok)


def forward(to: Callback, **tag: Any) -> Callback:
    """A subscriber that passes every event on to `to` with `tag` added (compare and batch forward their runs'
    events this way)."""

    def fwd(kind: str, data: dict[str, Any]) -> None:
        to(kind, {**data, **tag})

    return fwd


def attach(bus: EventBus, subscribers: Iterable[Callback]) -> None:
    """Subscribe plug-in subscribers and trackers, isolated: one that raises is detached with a note."""
    for sub in subscribers:
        bus.subscribe(sub, isolated=True)


def plugin_subscribers() -> list[Callback]:
    """Event subscribers that installed packages register (entry-point group `reflexopt.subscribers`): each
    entry names a zero-argument factory; optimize attaches one of each to every run."""
    from .plugins import available, load

    return [load("reflexopt.subscribers", n, what="event subscriber", fix="reinstall it or uninstall it")()
            for n in available("reflexopt.subscribers")]
