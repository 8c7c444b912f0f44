"""A direct OpenAI chat-completions transport (aiohttp) for OpenAI-compatible servers: the embedded llama.cpp
server, and `openai/NAME` with `--api-base` (vLLM, llama.cpp, Ollama's /v1, LM Studio, a gateway). The protocol
is plain OpenAI there, and litellm costs about 12 ms of CPU per call and 5 s to import: at 64 slots that capped
one process at a fraction of the endpoint's throughput. Named providers (OpenAI itself, Anthropic, ...) still
go through litellm.

The price of a call is litellm's price for NAME, if it has one (a gateway in front of a priced model), else 0;
it is looked up once per backend, on the first paid call, from the price file that litellm ships (litellm itself
is not imported for it)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .base import RETRY_STATUS, Message, RawReply, content_text, parse_retry_after

# Transport errors worth another attempt: the connection dropped, was refused, or the reply was cut.
TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, TimeoutError)


class ProviderError(Exception):
    """An HTTP error reply from the endpoint."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status_code = status
        self.retry_after = retry_after


async def _close_at_loop_shutdown(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Started once per session: asyncio.run() closes every live async generator before it closes the loop,
    so the session (and its sockets) closes with its loop instead of warning at garbage collection."""
    try:
        yield
    finally:
        await session.close()


class OpenAICompatBackend:
    def __init__(self, model: str, *, api_base: str, api_key: str | None = None, max_connections: int = 256,
                 priced: bool = False) -> None:
        self.name = model
        self._price: tuple[float, float] | None = None if priced else (0.0, 0.0)
        self._price_lock = threading.Lock()
        self.model = model.split("/", 1)[1] if model.startswith("openai/") else model
        base = URL(api_base.rstrip("/"))
        self.basic_auth = base.user is not None
        if base.user is not None:  # `http://user:pw@host/v1`: Basic credentials in a header, not in the URL
            # (aiohttp refuses a URL with credentials beside an Authorization header; a key is not sent then)
            self.headers = {"authorization": aiohttp.BasicAuth(base.user, base.password or "").encode()}
            base = base.with_user(None)
        else:
            self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = str(base) + "/chat/completions"
        self.max_connections = max_connections
        # the proxy settings (HTTPS_PROXY, NO_PROXY, ...) are read once here: with trust_env, aiohttp re-read them
        # and ~/.netrc in a worker thread on every request (two thread hops per call)
        # (a loopback server, such as the embedded model, is never reached through a proxy)
        url = URL(self.url)
        try:
            self._proxy: tuple[Any, Any] = (None, None) if _loopback(url.host) else get_env_proxy_for_url(url)
        except LookupError:
            self._proxy = (None, None)
        # one connection pool per event loop (compare and batch run a loop per thread); aiohttp costs about
        # 0.5 ms of CPU per call here, httpx 7 ms (its pool scans every connection on every request)
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, Any]] = (
            weakref.WeakKeyDictionary())

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        held = self._sessions.get(loop)
        if held is None or held[0].closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections), headers=self.headers)
            closer = _close_at_loop_shutdown(session)
            await closer.__anext__()
            self._sessions[loop] = held = (session, closer)  # the generator is kept alive with its session
        return held[0]

    async def aclose(self) -> None:
        """Close this event loop's connection pool now (rather than at the loop's shutdown)."""
        held = self._sessions.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[0].close()

    async def call(self, messages: list[Message], params: dict[str, Any], timeout_s: float) -> RawReply:
        body = {"model": self.model, "messages": messages, **params}
        session = await self._session()
        async with session.post(self.url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                proxy=self._proxy[0], proxy_auth=self._proxy[1]) as r:
            if r.status >= 400:
                raw = await r.text(errors="replace")
                try:
                    err = json.loads(raw).get("error", {})
                    message = str(err.get("message", err) if isinstance(err, dict) else err)
                except (ValueError, AttributeError):
                    message = raw[:300]
                raise ProviderError(r.status, message[:500], parse_retry_after(r.headers.get("retry-after")))
            data = await r.json(content_type=None)
        if self._price is None:
            self._price = await asyncio.to_thread(self._look_up_price)
        choice = (data.get("choices") or [{}])[0]
        text = content_text((choice.get("message") or {}).get("content"))
        usage = data.get("usage") or {}
        pt, ct = max(0, int(usage.get("prompt_tokens") or 0)), max(0, int(usage.get("completion_tokens") or 0))
        return RawReply(text=text, prompt_tokens=pt, completion_tokens=ct,
                        cost_usd=pt * self._price[0] + ct * self._price[1])

    def _look_up_price(self) -> tuple[float, float]:
        """Once per backend, whichever thread and loop asks first (the other requests in flight wait for it)."""
        with self._price_lock:
            if self._price is None:
                from . import price_per_token

                self._price = price_per_token(self.name) or (0.0, 0.0)
            return self._price

    def response_formats(self, standard: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
        """An OpenAI-compatible server: OpenAI's `json_schema` form (vLLM, llama.cpp's llama-server, LM Studio,
        Ollama's /v1), else the `json_object` form with a `schema` that llama-cpp-python's server reads."""
        return [standard, {"type": "json_object", "schema": schema}]

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        if isinstance(exc, ProviderError):
            return exc.status_code in RETRY_STATUS, exc.retry_after
        if isinstance(exc, TRANSIENT):
            return True, None
        return False, None

    def fatal(self, exc: BaseException) -> str | None:
        if isinstance(exc, ProviderError) and exc.status_code in (401, 403):
            key = ("; check the user and password in --api-base" if self.basic_auth else
                   "; check OPENAI_API_KEY" if self.headers else "; set OPENAI_API_KEY if it needs a key")
            return f"{self.name}: the endpoint refused the credentials ({exc.status_code}){key}"
        if isinstance(exc, ProviderError) and exc.status_code == 404:
            return f"{self.name}: the endpoint does not know this model or path (404)"
        return None


def _loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
