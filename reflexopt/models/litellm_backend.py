"""The only module that imports litellm (lazily, with the local cost map so import never hits the network)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import RETRY_STATUS, Message, RawReply, content_text, parse_retry_after

_ready = False


def _litellm() -> Any:
    global _ready
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    if not _ready:
        # litellm's typed dicts make pydantic warn once per process on the first call; not the user's concern
        warnings.filterwarnings("ignore", message=".*using the `ReadOnly` qualifier", category=UserWarning)
        litellm.suppress_debug_info = True
        litellm.telemetry = False
        _drop_success_logging()
        _ready = True
    return litellm


def _drop_success_logging() -> None:
    """reflexopt registers no litellm callbacks, but every async call still queues a success-logging coroutine
    on one process-wide worker bound to one event loop. compare and batch run an event loop per thread, and the
    worker then printed "cannot reuse already awaited coroutine" tracebacks (and cost CPU on every call).
    With no callbacks there is nothing to log: the coroutine is closed unrun."""
    try:
        from litellm.litellm_core_utils import logging_worker
    except ImportError:  # pragma: no cover - other litellm layouts
        return
    worker = getattr(logging_worker, "GLOBAL_LOGGING_WORKER", None)
    if worker is None or not hasattr(worker, "ensure_initialized_and_enqueue"):
        return

    def enqueue(async_coroutine: Any) -> None:
        import litellm

        if litellm.callbacks or litellm.success_callback or litellm._async_success_callback:
            original(async_coroutine)  # someone configured litellm logging: keep it
        else:
            async_coroutine.close()

    original = worker.ensure_initialized_and_enqueue
    worker.ensure_initialized_and_enqueue = enqueue


def check_model_id(model: str, api_base: str | None) -> None:
    """Raise ModelError when litellm cannot route this id, or when the provider's API key is not set (checked
    offline, before any call; with --api-base the server may need no key)."""
    litellm = _litellm()
    try:
        litellm.get_llm_provider(model=model, api_base=api_base)
    except Exception:  # noqa: BLE001 - litellm raises several types here
        raise ModelError(
            f"unknown model {model!r}",
            fix="use a litellm id such as openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest, ollama/llama3, "
            "or local/smollm2 for the embedded model; add --api-base for OpenAI-compatible servers",
        ) from None
    if api_base:
        return
    missing = [k for k in key_variables(model) if not os.environ.get(k)]
    if missing:
        raise ModelError(f"{model}: {missing[0]} is not set",
                         fix=f"export {missing[0]}=... (or give --api-base for a server that needs no key)")


def key_variables(model: str) -> list[str]:
    """The environment variables that hold this provider's credentials (e.g. OPENAI_API_KEY)."""
    try:
        env = _litellm().validate_environment(model=model)
    except Exception:  # noqa: BLE001
        return []
    names = list(env.get("missing_keys") or [])
    if not names and env.get("keys_in_environment"):
        names = [v for v in (f"{model.split('/', 1)[0].upper()}_API_KEY",) if v in os.environ]
    return [k for k in names if any(w in k for w in ("KEY", "TOKEN", "SECRET"))]


def fatal_error(exc: BaseException, model: str) -> str | None:
    """A one-line reason when an error means no call to this model can succeed (bad key, no access, unknown
    model at the provider); None for errors worth retrying or local to one request."""
    litellm = _litellm()
    status = getattr(exc, "status_code", None)
    auth = isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)) or status in (401, 403)
    if auth:
        keys = key_variables(model) or [f"{model.split('/', 1)[0].upper()}_API_KEY"]
        return f"{model}: the provider refused the credentials ({status or 401}); check {keys[0]}"
    if isinstance(exc, litellm.NotFoundError) or status == 404:
        return f"{model}: the provider does not know this model or endpoint (404)"
    return None


def _header(exc: BaseException, name: str) -> str | None:
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None) or getattr(holder, "litellm_response_headers", None)
        if headers is not None:
            try:
                value = headers.get(name)
            except Exception:  # noqa: BLE001
                value = None
            if value:
                return str(value)
    return None


class LiteLLMBackend:
    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 free: bool = False) -> None:
        self.name = model
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.free = free

    async def call(self, messages: list[Message], params: dict[str, Any], timeout_s: float) -> RawReply:
        litellm = _litellm()
        kwargs: dict[str, Any] = dict(params)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        resp = await litellm.acompletion(
            model=self.model, messages=messages, timeout=timeout_s, num_retries=0, max_retries=0, **kwargs
        )
        choice = resp.choices[0]
        text = content_text(choice.message.content)
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = 0.0
        if not self.free:
            try:
                cost = float(litellm.completion_cost(completion_response=resp) or 0.0)
            except Exception:  # noqa: BLE001 - unknown price: count tokens, cost 0
                cost = 0.0
        return RawReply(text=text, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost)

    def retry_after(self, exc: BaseException) -> tuple[bool, float | None]:
        return classify_error(exc)

    def fatal(self, exc: BaseException) -> str | None:
        return fatal_error(exc, self.model)

    def supports_json_schema(self) -> bool:
        """Whether the provider constrains replies to a JSON schema (`response_format`), per litellm's map."""
        if self.api_base:
            return False  # an arbitrary OpenAI-compatible server: do not assume
        try:
            return bool(_litellm().supports_response_schema(model=self.model))
        except Exception:  # noqa: BLE001 - unknown model
            return False


def classify_error(exc: BaseException) -> tuple[bool, float | None]:
    """(retryable, Retry-After seconds) for an exception raised by a litellm call."""
    litellm = _litellm()
    status = getattr(exc, "status_code", None)
    retryable = isinstance(
        exc,
        (litellm.Timeout, litellm.APIConnectionError, litellm.RateLimitError, litellm.InternalServerError,
         litellm.ServiceUnavailableError, TimeoutError, ConnectionError),
    ) or (isinstance(status, int) and status in RETRY_STATUS)
    if isinstance(status, int) and 400 <= status < 500 and status not in RETRY_STATUS:
        retryable = False
    return retryable, parse_retry_after(_header(exc, "retry-after"))


def price_per_token(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from litellm's price map; (0, 0) for local and fake models."""
    if model.startswith(("local/", "fake/")):
        return (0.0, 0.0)
    prices = _price_map()
    info = prices.get(model) or prices.get(model.split("/", 1)[-1])
    if not info:
        return None
    return float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0)


_prices: dict[str, Any] | None = None


def _price_map() -> dict[str, Any]:
    """litellm's price map. Once litellm is imported (a named provider is in use), its own map; before that, the
    same map read from the JSON file that litellm ships (the one LITELLM_LOCAL_MODEL_COST_MAP selects), without
    importing litellm: its import costs about 5 s of CPU, in every process that prices one call of an
    `openai/NAME --api-base` endpoint."""
    global _prices
    if "litellm" in sys.modules:
        cost: dict[str, Any] = _litellm().model_cost
        return cost
    if _prices is None:
        spec = importlib.util.find_spec("litellm")  # finds the package without running it
        where = list(spec.submodule_search_locations or []) if spec else []
        try:
            loaded = json.loads((Path(where[0]) / "model_prices_and_context_window_backup.json").read_text("utf-8"))
            _prices = loaded if isinstance(loaded, dict) else {}
        except (IndexError, OSError, ValueError):  # another litellm layout: ask litellm itself
            _prices = dict(_litellm().model_cost)
    return _prices
