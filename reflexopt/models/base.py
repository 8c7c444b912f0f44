"""Model-layer records: what a call returns, and the meter that counts calls, tokens, cost and latency."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

Message = dict[str, str]
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


@dataclass(frozen=True, kw_only=True)
class CallCost:
    """What a call (or a case's calls) cost: tokens, USD, latency, whether the cache answered, and whether
    the budget refused it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    budget_exhausted: bool = False

    def cost_fields(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd, "latency_s": self.latency_s, "cached": self.cached}


@dataclass(frozen=True)
class ChatResult(CallCost):
    """One model call as recorded: never raised, a failure is a result with `error` set."""

    text: str
    model: str
    ok: bool = True
    error: str | None = None
    attempts: int = 1
    paid_calls: int | None = None  # a task that made several calls (a pipeline): how many were paid
    trace: Any = None  # a pipeline's own record of its steps, when it returns one


@dataclass(frozen=True)
class RawReply:
    """What a backend returns for one successful HTTP call."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float | None = None  # from the cache: how long the call took when it was paid for (None: unknown)


def content_text(content: Any) -> str:
    """A reply's `content` as text: a string as is; a list of parts (`[{"type": "text", "text": ...}]`, as some
    providers send) joined from its text parts; nothing else is an answer ("")."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text") or "") if isinstance(p, dict) else ""
                       for p in content)
    return ""


_THINK = re.compile(r"\A\s*<(think|thinking|reasoning)>.*?</\1>\s*", re.S | re.I)
MAX_REPLY_CHARS = 200_000  # a stored answer is never longer; with a completion cap, 64 characters per token


def tidy_reply(reply: RawReply, max_tokens: int | None) -> RawReply:
    """What is scored and stored of a reply: a leading `<think>...</think>` block (reasoning models open with
    one) is taken off; token counts below 0 count as 0; a reply far longer than the completion cap allows is
    cut, and says so at its end."""
    text = _THINK.sub("", reply.text, count=1)
    limit = min(MAX_REPLY_CHARS, 64 * max_tokens) if max_tokens else MAX_REPLY_CHARS
    if len(text) > limit:
        text = text[:limit] + f"\n[reply cut by reflexopt: {len(text):,} characters, more than {limit:,} are kept]"
    pt, ct = max(0, reply.prompt_tokens), max(0, reply.completion_tokens)
    cost = max(0.0, reply.cost_usd)
    if (text, pt, ct, cost) == (reply.text, reply.prompt_tokens, reply.completion_tokens, reply.cost_usd):
        return reply
    return RawReply(text=text, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost)


class Backend(Protocol):
    """A transport: one request in, one reply out, exceptions for failures.

    Contract: `call` returns the reply or raises; it never retries (the client does). `retry_after` says whether
    an exception is worth retrying. A backend may also define `fatal(exc) -> str | ModelError | None`: a one-line
    reason (or the error itself, with its own fix) when an error means no call can succeed (bad credentials,
    unknown model, a local server that crashes under every request); the client then stops the command instead
    of recording the same failure for every case."""

    name: str

    async def call(self, messages: list[Message], params: dict[str, Any], timeout_s: float) -> RawReply: ...

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        """(retryable, seconds the server asked us to wait)."""
        ...


class TransientError(Exception):
    """Raised by fakes (and usable by custom backends) to ask for a retry."""

    def __init__(self, message: str = "transient error", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetGate(Protocol):
    """Decides, before each paid call, whether it may be made.

    Contract: `allow(meter)` is called under the client's concurrency slot, right before a call that the
    cache could not serve; True grants one call (and counts it at once, so calls in flight can never overshoot
    a hard limit), False refuses it and the client returns a `budget_exhausted` result without calling. It is
    thread-safe. A gate may also define `release()`, called when the granted call finishes; `first_ask(key)`,
    called with each request's cache key, True the first time; and `charge_cached(meter, cost)`, called when the cache
    answers a request for the first time (`cost`: the price it was paid when cached), False to refuse it as the
    limit would have refused the paid call."""

    def allow(self, meter: Meter) -> bool: ...


@dataclass
class Meter:
    """Running totals for one model client (thread-safe)."""

    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    rate_limited: int = 0  # attempts answered 429 (each one retried, or the call's last)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    max_call_cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, r: ChatResult) -> None:
        with self._lock:
            if r.cached:
                self.cached_calls += 1
                return
            if r.budget_exhausted:
                return
            self.calls += 1
            self.retries += max(0, r.attempts - 1)
            if not r.ok:
                self.failed_calls += 1
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            self.cost_usd += r.cost_usd
            self.max_call_cost = max(self.max_call_cost, r.cost_usd)
            self.latencies.append(r.latency_s)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "model_calls": self.calls,
                "cached_calls": self.cached_calls,
                "failed_calls": self.failed_calls,
                "retries": self.retries,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6),
            }


_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9_\-.]{8,}|AIza[0-9A-Za-z_\-]{20,})")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# `api_key=...`, `token: ...` in a setting, a URL query or a message: the value goes, the name stays
_KEYVAL = re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd)"
                     r"[\"']?\s*[=:]\s*[\"']?)([^\s,&;'\"]+)")
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|^PGPASSWORD$", re.I)


def secret_values() -> list[str]:
    """Values of the environment's secret-looking variables (`*_API_KEY`, `*_TOKEN`, `*_SECRET`, ...): every
    configured key is redacted, whatever its format (a provider may echo it in an error)."""
    import os

    vals = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8}
    return sorted(vals, key=len, reverse=True)


def mask_url(url: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host` (the user is kept, so a stored URL still says
    who connects; the password comes from the environment or the command line again)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact(text: str) -> str:
    """Strip API keys, URL passwords and the values of configured secret variables from a message before it
    is stored or shown."""
    for v in secret_values():
        text = text.replace(v, "[redacted]")
    return _KEYVAL.sub(lambda m: m[1] + "[redacted]" if m[2] != "[redacted]" else m[0],
                       _SECRET.sub("[redacted]", mask_url(text)))


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime as dt

        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None
