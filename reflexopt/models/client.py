"""ModelClient: one model in one role, with concurrency limit, retries, timeout, cache and accounting.

Everything above this layer calls `await client.complete(messages)` and gets a :class:`ChatResult`;
nothing is raised for a failed call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ..config import ModelSpec
from ..errors import ModelError
from .base import Backend, BudgetGate, ChatResult, Message, Meter, RawReply, TransientError, redact, tidy_reply
from .cache import ResponseCache

MAX_BACKOFF_S = 60.0


class EmptyReply(Exception):
    """A successful HTTP reply with no text."""


class ModelClient:
    def __init__(self, spec: ModelSpec, backend: Backend, *, cache: ResponseCache | None, model_key: str,
                 concurrency: int, role: str = "task", base_delay_s: float = 1.0) -> None:
        self.spec = spec
        self.backend = backend
        self.cache = cache
        self.model_key = model_key
        self.concurrency = concurrency
        self.role = role
        self.meter = Meter()
        self.gate: BudgetGate | None = None
        self.base_delay_s = base_delay_s
        self._sems: dict[int, asyncio.Semaphore] = {}

    def response_formats(self, name: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """The `response_format` values that ask this model for a reply constrained to `schema`, most standard
        first (the caller moves to the next when a server refuses one); [] where structured output is unknown.
        A backend says what it speaks (`response_formats`), or only whether litellm's map lists schema support
        (`supports_json_schema`)."""
        standard = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        own = getattr(self.backend, "response_formats", None)
        if own is not None:
            return list(own(standard, schema))
        check = getattr(self.backend, "supports_json_schema", None)
        return [standard] if check is not None and check() else []

    def cap(self, default: int) -> int:
        """A completion cap for calls whose output size we know (a verdict, a rewritten prompt): the spec's own
        `max_tokens` when set, else `default`. An uncapped reply from a slow model can run for many minutes."""
        return self.spec.max_tokens or default

    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        key = id(loop)
        if key not in self._sems:
            self._sems = {key: asyncio.Semaphore(self.concurrency)}
        return self._sems[key]

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = None
        if isinstance(exc, TransientError):
            after = exc.retry_after
        elif exc is not None:
            after = self.backend.retry_after(exc)[1]
        if after is not None:
            return float(min(max(after, 0.0), MAX_BACKOFF_S))
        exp: float = self.base_delay_s * (2 ** (state.attempt_number - 1))
        return min(exp, MAX_BACKOFF_S) * (0.5 + random.random() / 2)

    def _retryable(self, exc: BaseException) -> bool:
        if getattr(exc, "status_code", None) == 429:
            with self.meter._lock:
                self.meter.rate_limited += 1
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, TransientError)):
            return True
        return self.backend.retry_after(exc)[0]

    async def aclose(self) -> None:
        """Release what the backend holds for this event loop (its connection pool), if it holds anything."""
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    async def complete(self, messages: list[Message], *, sample: int = 0, **overrides: Any) -> ChatResult:
        """Call the model once (or serve from cache). `sample` separates repeated samples of one request."""
        params = {**self.spec.params(), **{k: v for k, v in overrides.items() if v is not None}}
        key = None
        if self.cache is not None:
            from .cache import cache_key

            key = cache_key(self.model_key, messages, params, sample)
            first_ask = getattr(self.gate, "first_ask", None)
            first = first_ask(key) if first_ask is not None else False
            hit = self.cache.get(key)
            if hit is not None:
                charge = getattr(self.gate, "charge_cached", None)
                if first and charge is not None and not charge(self.meter, hit.cost_usd):
                    result = ChatResult("", self.spec.id, ok=False, error="budget exhausted", budget_exhausted=True,
                                        attempts=0)
                else:
                    result = ChatResult(hit.text, self.spec.id, prompt_tokens=hit.prompt_tokens,
                                        completion_tokens=hit.completion_tokens, cost_usd=0.0, cached=True,
                                        latency_s=hit.latency_s or 0.0)  # as measured when it was paid for
                self.meter.record(result)
                return result
        async with self._sem():
            if self.gate is not None and not self.gate.allow(self.meter):
                result = ChatResult("", self.spec.id, ok=False, error="budget exhausted", budget_exhausted=True,
                                    attempts=0)
                self.meter.record(result)
                return result
            try:
                return await self._call(messages, params, key)
            except asyncio.CancelledError:
                # the request may already be served (and billed): count it, so reported calls match the provider
                self.meter.record(ChatResult("", self.spec.id, ok=False, error="cancelled"))
                raise
            finally:
                release = getattr(self.gate, "release", None)
                if release is not None:
                    release()

    async def _call(self, messages: list[Message], params: dict[str, Any], key: str | None) -> ChatResult:
        """One logical call with retries and a timeout per attempt; failures come back as results."""
        start = time.perf_counter()
        attempts = 0
        try:
            reply: RawReply | None = None
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.spec.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception(self._retryable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    reply = await asyncio.wait_for(
                        self.backend.call(messages, params, self.spec.timeout_s), self.spec.timeout_s + 1
                    )
            assert reply is not None
            reply = tidy_reply(reply, params.get("max_tokens") or self.spec.max_tokens)
            if self.spec.price_in is not None or self.spec.price_out is not None:  # the user's price wins
                cost = (reply.prompt_tokens * (self.spec.price_in or 0.0)
                        + reply.completion_tokens * (self.spec.price_out or 0.0)) / 1e6
                reply = RawReply(reply.text, reply.prompt_tokens, reply.completion_tokens, cost)
            if not (reply.text or "").strip():
                # a 200 with no text is not an answer: never scored, never cached
                raise EmptyReply("the model returned an empty reply")
        except Exception as exc:  # noqa: BLE001 - a failed call is a result, not a crash
            fatal = getattr(self.backend, "fatal", None)
            why = fatal(exc) if fatal is not None else None
            if isinstance(why, ModelError):  # nothing will succeed, and the backend knows the fix
                self.meter.record(ChatResult("", self.spec.id, ok=False, error=str(why), attempts=attempts))
                raise why from None
            if why is not None:  # nothing will succeed: stop the command at the first call, with the fix
                self.meter.record(ChatResult("", self.spec.id, ok=False, error=why, attempts=attempts))
                raise ModelError(redact(why), fix="fix the key, the model id or --api-base, then run the command "
                                 "again (calls already made are cached)") from None
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            result = ChatResult("", self.spec.id, ok=False, error=redact(reason)[:500],
                                latency_s=time.perf_counter() - start, attempts=attempts)
            self.meter.record(result)
            return result
        result = ChatResult(reply.text, self.spec.id, prompt_tokens=reply.prompt_tokens,
                            completion_tokens=reply.completion_tokens, cost_usd=reply.cost_usd,
                            latency_s=time.perf_counter() - start, attempts=attempts)
        if self.cache is not None and key is not None:
            self.cache.put(key, self.spec.id, dataclasses.replace(reply, latency_s=result.latency_s))
        self.meter.record(result)
        return result
