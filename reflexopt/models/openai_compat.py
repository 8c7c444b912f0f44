"""A direct OpenAI chat-completions transport (httpx) for endpoints whose price is known to be zero: the
embedded llama.cpp server. litellm costs about 12 ms of CPU per call and 5 s to import; an embedded-model run
needs neither (its calls are free and the protocol is plain OpenAI)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .base import RETRY_STATUS, Message, RawReply, parse_retry_after


class ProviderError(Exception):
    """An HTTP error reply from the endpoint."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status_code = status
        self.retry_after = retry_after


class OpenAICompatBackend:
    def __init__(self, model: str, *, api_base: str, api_key: str | None = None, max_connections: int = 256) -> None:
        self.name = model
        self.model = model.split("/", 1)[1] if model.startswith("openai/") else model
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        """One connection pool per event loop (compare and batch run a loop per thread)."""
        key = id(asyncio.get_running_loop())
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(limits=self.limits, headers=self.headers)
        return client

    async def call(self, messages: list[Message], params: dict[str, Any], timeout_s: float) -> RawReply:
        body = {"model": self.model, "messages": messages, **params}
        r = await self._client().post(self.url, json=body, timeout=timeout_s)
        if r.status_code >= 400:
            try:
                err = r.json().get("error", {})
                message = str(err.get("message", err) if isinstance(err, dict) else err)
            except ValueError:
                message = r.text[:300]
            raise ProviderError(r.status_code, message[:500], parse_retry_after(r.headers.get("retry-after")))
        data = r.json()
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        usage = data.get("usage") or {}
        return RawReply(text=str(text), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0), cost_usd=0.0)

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        if isinstance(exc, ProviderError):
            return exc.status_code in RETRY_STATUS, exc.retry_after
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            return True, None
        return False, None

    def fatal(self, exc: BaseException) -> str | None:
        if isinstance(exc, ProviderError) and exc.status_code in (401, 403):
            return f"{self.name}: the endpoint refused the credentials ({exc.status_code})"
        if isinstance(exc, ProviderError) and exc.status_code == 404:
            return f"{self.name}: the endpoint does not know this model or path (404)"
        return None
