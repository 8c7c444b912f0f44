"""Fake models for tests: scripted replies or a Python function, registered like any other model id.

    register_fake("fake/positive", FakeModel(["positive"]))
    register_fake("fake/echo", FunctionModel(lambda messages: messages[-1]["content"]))
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .base import Message, RawReply, TransientError

Reply = str | BaseException


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


class FunctionModel:
    """Replies with `fn(messages)` (or `fn(messages, params)` when it takes two arguments)."""

    def __init__(self, fn: Callable[..., Reply], *, cost_per_token: float = 0.0, delay_s: float = 0.0,
                 name: str = "function") -> None:
        self.fn = fn
        self.name = name
        self.cost_per_token = cost_per_token
        self.delay_s = delay_s
        self.calls: list[list[Message]] = []
        self._lock = threading.Lock()

    def _reply(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        try:
            return self.fn(messages, params)
        except TypeError:
            return self.fn(messages)

    async def call(self, messages: list[Message], params: dict[str, Any], timeout_s: float) -> RawReply:
        with self._lock:
            self.calls.append(messages)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        reply = self._reply(messages, params)
        if isinstance(reply, BaseException):
            raise reply
        pt = sum(_tokens(m["content"]) for m in messages)
        ct = _tokens(reply)
        return RawReply(reply, pt, ct, (pt + ct) * self.cost_per_token)

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        if isinstance(exc, TransientError):
            return True, exc.retry_after
        return False, None


class FakeModel(FunctionModel):
    """Replies from a script, in order (cycling when `cycle=True`); an exception in the script is raised."""

    def __init__(self, replies: Iterable[Reply], *, cycle: bool = True, **kw: Any) -> None:
        items = list(replies)
        it = itertools.cycle(items) if cycle else iter(items)
        lock = threading.Lock()

        def next_reply(messages: list[Message]) -> Reply:
            with lock:
                return next(it, RuntimeError("fake model script exhausted"))

        super().__init__(next_reply, name="fake", **kw)
