"""Running several optimize runs at once (compare, batch) in threads that an interrupt does not wait for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_threads(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """`[fn(x) for x in items]` on `workers` threads, in order. On Ctrl-C or SIGTERM in the calling thread the
    pool is abandoned at once (queued items never start) instead of being joined, so the command can stop
    within seconds; work already done is on disk, because every run writes as it goes."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(fn, x) for x in items]
        results = [f.result() for f in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
